"""One net's batch split over CPU devices (`jaxcnn.parallel`): the same training and testing as one device."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import config, netfile, parallel, run

REPO = Path(__file__).resolve().parent.parent
ENV = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu"}


def test_a_batch_is_split_into_equal_slices_of_at_least_16():
    assert parallel.devices_for_batch(50, 2) == 2
    assert parallel.devices_for_batch(50, 1) == 1
    assert parallel.devices_for_batch(50, 16) == 2      # 5 or 10 devices would get 10 or 5 images each
    assert parallel.devices_for_batch(100, 4) == 4
    assert parallel.devices_for_batch(100, 3) == 2      # 3 does not divide 100
    assert parallel.devices_for_batch(30, 2) == 1       # 15 each is below the smallest slice
    assert parallel.devices_for_batch(25, 2) == 1
    assert parallel.devices_for_batch(1, 8) == 1


def test_one_device_means_no_mesh():
    """The test process has JAX's one CPU device: training and testing run unsplit, as before."""
    assert parallel.batch_mesh(50) is None and parallel.chunk_mesh(20) is None
    assert parallel.mesh_size(None) == 1
    tree = {"a": np.ones(3)}
    assert parallel.replicated(tree, None) is tree


def test_placing_a_tree_views_only_its_cpu_arrays():
    """`replicated` views CPU jax arrays (no copy); key arrays and Python scalars are placed as they are
    (np.asarray refuses keys, and would make a weakly typed scalar strongly typed)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()[:1]), (parallel.AXIS,))
    x = jnp.arange(6.0)
    placed = parallel.replicated({"key": jax.random.key(3), "scale": 2.0, "x": x}, mesh)
    assert jax.dtypes.issubdtype(placed["key"].dtype, jax.dtypes.prng_key)
    assert placed["scale"].weak_type and float(placed["scale"]) == 2.0
    assert placed["x"].addressable_shards[0].data.unsafe_buffer_pointer() == x.unsafe_buffer_pointer()


# Run in a child process: the number of CPU devices is fixed when JAX starts.
SPLIT = textwrap.dedent("""
    import json, re, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_num_cpu_devices", 3)
    jax.config.update("jax_enable_x64", True)
    from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, train
    from jaxcnn.layers import Conv, Input, Pool
    from jaxcnn.optimizers import init_state, spec_for

    MODERN = (Input(), Conv(6, 5, "relu"), Pool(2, "max"), Conv(12, 5, "relu"), Pool(2, "max"))
    rng = np.random.default_rng(0)
    n = 480
    x = jnp.asarray(rng.random((n, 28, 28, 1)))
    labels = rng.integers(0, 10, n)
    y = jnp.asarray(np.eye(10)[labels])
    out = {}
    for name, layers, output, optimizer in (("toolbox", EXAMPLE_LAYERS, "sigmoid", "sgd"),
                                            ("modern", MODERN, "softmax", "momentum")):
        net = init_net(jax.random.key(1), layers, (28, 28), 10, jnp.float64, output=output)
        spec = spec_for(optimizer)
        opt = init_state(spec, net, 0.5, 0.9 if optimizer == "momentum" else 0.0)
        batches = jnp.asarray(rng.permutation(n).reshape(-1, 48).astype(np.int32))   # 10 steps of 48
        rl = jnp.asarray(np.nan)

        def epoch(devices):
            mesh = parallel.batch_mesh(48, jax.devices()[:devices])
            slices = []

            def recording(net, x, y):                          # what one device's gradient sees, at trace time
                slices.append(x.shape[0])
                return train.delta_rule_grad(net, x, y)
            fn = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh, grad_fn=recording)
            xs, ys = parallel.replicated((x, y), mesh)
            compiled = fn.lower(net, opt, rl, xs, ys, batches).compile()
            new_net, _, losses, rls = compiled(net, opt, rl, xs, ys, batches)
            leaves = [np.asarray(a) for a in jax.tree.leaves(new_net.params)] + [np.asarray(losses), np.asarray(rls)]
            assert len(set(slices)) == 1, slices
            return (parallel.mesh_size(mesh), slices[0]), leaves, re.findall(r"= (\\S+) (?:all-reduce(?:-start)?\\(|custom-call\\(.*custom_call_target=\\"(jaxcnn_spin_allreduce_f64)\\")", compiled.as_text())

        d1, one, reduces1 = epoch(1)
        d3, three, reduces3 = epoch(3)
        _, three_again, _ = epoch(3)
        d2, two, _ = epoch(2)
        out[name] = {"devices": [d1, d2, d3], "all_reduces": [reduces1, reduces3],
                     "max_diff_3": max(float(np.max(np.abs(a - b))) for a, b in zip(one, three)),
                     "max_diff_2": max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)),
                     "rerun_identical": all(np.array_equal(a, b) for a, b in zip(three, three_again)),
                     "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(one, [np.asarray(l) for l in jax.tree.leaves(net.params)]))}
    net = init_net(jax.random.key(2), EXAMPLE_LAYERS, (28, 28), 10, jnp.float64)
    spec = spec_for("sgd")
    mesh = parallel.batch_mesh(48, jax.devices()[:2])                   # trained on 2 devices, tested on 3
    net_on_two, *_ = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh)(
        net, init_state(spec, net, 1.0), jnp.asarray(np.nan), *parallel.replicated((x, y), mesh),
        jnp.asarray(np.arange(96).reshape(2, 48).astype(np.int32)))
    used = []                                                   # the meshes `evaluate` chose
    chunk_mesh = parallel.chunk_mesh
    parallel.chunk_mesh = lambda chunks, devices=None: used.append(chunk_mesh(chunks, devices)) or used[-1]
    evals = {}
    for size, net in ((1, net), (99, net), (501, net), (1234, net), (2600, net_on_two)):
        images = jnp.asarray(rng.random((size, 28, 28, 1)))
        split = train.evaluate(net, images, rng.integers(0, 10, size)).predictions
        whole = jnp.argmax(train.predict(net, images), axis=-1)                  # one program, one device
        evals[size] = {"split": split.tolist(), "predict": np.asarray(whole).tolist(),
                       "devices": parallel.mesh_size(used[-1])}
    out["chunk_mesh"] = {c: parallel.mesh_size(chunk_mesh(c)) for c in (1, 2, 3, 4, 5, 7)}
    mesh = parallel.batch_mesh(48)
    whole, = jax.tree.leaves(parallel.replicated({"x": x}, mesh))
    apart = parallel.spread(x, mesh)
    at = x.unsafe_buffer_pointer()
    out["memory"] = {"replicated": [s.data.unsafe_buffer_pointer() - at for s in whole.addressable_shards],
                     "spread": sorted(s.data.unsafe_buffer_pointer() - at for s in apart.addressable_shards),
                     "equal": bool(np.array_equal(np.asarray(whole), np.asarray(x)) and np.array_equal(np.asarray(apart), np.asarray(x)))}
    json.dump({"train": out, "evals": evals}, sys.stdout)
""")


@pytest.fixture(scope="module")
def split_run():
    done = subprocess.run([sys.executable, "-c", SPLIT], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("net", ["toolbox", "modern"])
def test_a_split_epoch_trains_what_one_device_trains(split_run, net):
    """10 steps of 48 images over 1, 2 (24 each) and 3 (16 each) devices, float64: the same weights, losses and
    rL to rounding, the same bits on a rerun, and one all-reduce of one vector a step (an all-reduce of the
    parameter arrays as a tuple, which XLA makes of one psum each, was slower than one device)."""
    r = split_run["train"][net]
    assert r["devices"] == [[1, 48], [2, 24], [3, 16]]     # (devices, images each device's gradient sees)
    assert r["moved"] > 1e-3                                # the epoch did train
    assert r["max_diff_2"] < 1e-13 and r["max_diff_3"] < 1e-13
    assert r["rerun_identical"]
    # the 3,898 parameters' gradients and the loss, as one vector, summed by the spinning custom call (built here)
    assert r["all_reduces"] == [[], [["f64[3899]{0}", "jaxcnn_spin_allreduce_f64"]]]


@pytest.mark.slow
def test_the_devices_share_one_copy_of_the_data_in_memory(split_run):
    """`replicated` and `spread` place a CPU array on the 3 devices without copying it: each device's array is
    the original's memory (480 float64 images of 784 pixels; a slice of 160 each when spread)."""
    m = split_run["train"]["memory"]
    assert m["replicated"] == [0, 0, 0]
    assert m["spread"] == [0, 160 * 784 * 8, 320 * 784 * 8]
    assert m["equal"]


@pytest.mark.slow
def test_split_testing_predicts_what_one_device_predicts(split_run):
    """Evaluation shares its chunks of 500 images out over the 3 devices (as many as there are chunks), padding
    the last share, also for a net that was trained on 2 of them (2,600 images); its predictions are those of
    `predict`, one program without a mesh."""
    # as few devices as take ⌈chunks/3⌉ each: 4 chunks go 2 + 2, not 2 + 1 + 1 padded to 2 + 2 + 2
    assert split_run["train"]["chunk_mesh"] == {"1": 1, "2": 2, "3": 3, "4": 2, "5": 3, "7": 3}
    evals = split_run["evals"]
    assert {size: e["devices"] for size, e in evals.items()} == {"1": 1, "99": 1, "501": 2, "1234": 3, "2600": 3}
    for size, e in evals.items():
        assert len(e["split"]) == int(size) and e["split"] == e["predict"], size


@pytest.mark.slow
def test_the_train_command_splits_each_batch_over_the_cores(tmp_path):
    """`jaxcnn train` makes one CPU device per core and splits each batch of 32 over them where it divides
    (2 x 16 on CI's 2 cores); the net it writes is the one a one-device run trains, in float64."""
    (tmp_path / "c.toml").write_text(textwrap.dedent("""
        [train]
        batchsize = 32
        numepochs = 2
        dtype = "float64"
        [data]
        dataset = "fashion_mnist"
        n_train = 320
        n_test = 100
    """))
    done = subprocess.run([sys.executable, "-m", "jaxcnn", "train", str(tmp_path / "c.toml"), "--out", str(tmp_path / "cli"),
                           "--no-progress"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    devices = parallel.devices_for_batch(32, len(os.sched_getaffinity(0)))
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["batch_devices"] == devices
    assert ("each batch split over 2 devices" in done.stdout.splitlines()[0]) == (devices == 2)
    here = run.train(config.load(tmp_path / "c.toml"), tmp_path / "here", progress=False, log=lambda *_: None)
    assert here["batch_devices"] == 1
    cli_net, here_net = (netfile.net_arrays(netfile.load(tmp_path / d / "net.npz")) for d in ("cli", "here"))
    for name in here_net:
        np.testing.assert_allclose(cli_net[name], here_net[name], rtol=0, atol=1e-12, err_msg=name)
    assert summary["test_error"] == here["test_error"]
