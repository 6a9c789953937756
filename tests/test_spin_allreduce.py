"""The split step's spinning all-reduce (`jaxcnn.spin_allreduce`): the same sums as XLA's psum, bit for
bit, a guard that refuses to add vectors of two executions, and psum wherever the C++ cannot be built."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**{k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCNN_ALLREDUCE")}, "JAX_PLATFORMS": "cpu"}


def _python(code: str, timeout=600, **env):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env={**ENV, **env},
                          capture_output=True, text=True, timeout=timeout)
    return done


# 12 steps of 48 images on 2 devices, spin against psum, in one process: the same bits.
SAME = """
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, spin_allreduce, train
    from jaxcnn.layers import Conv, Input, Pool
    from jaxcnn.optimizers import init_state, spec_for

    MODERN = (Input(), Conv(6, 5, "relu"), Pool(2, "max"), Conv(12, 5, "relu"), Pool(2, "max"))
    rng = np.random.default_rng(0)
    n = 576
    out = {"status": spin_allreduce.status()}
    fits = spin_allreduce.fits
    for dtype in (jnp.float32, jnp.float64):
        x = jnp.asarray(rng.random((n, 28, 28, 1)), dtype)
        y = jnp.asarray(np.eye(10)[rng.integers(0, 10, n)], dtype)
        batches = jnp.asarray(rng.permutation(n).reshape(-1, 48).astype(np.int32))
        for name, layers, output, optimizer in (("toolbox", EXAMPLE_LAYERS, "sigmoid", "sgd"),
                                                ("modern", MODERN, "softmax", "momentum")):
            net = init_net(jax.random.key(1), layers, (28, 28), 10, dtype, output=output)
            spec = spec_for(optimizer)
            opt = init_state(spec, net, 0.5, 0.9 if optimizer == "momentum" else 0.0)
            rl = jnp.asarray(np.nan, dtype)
            mesh = parallel.batch_mesh(48)
            xs, ys = parallel.replicated((x, y), mesh)
            runs = {}
            for how in ("spin", "psum"):
                spin_allreduce.fits = fits if how == "spin" else (lambda flat, devices: False)
                compiled = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh).lower(
                    net, opt, rl, xs, ys, batches).compile()
                text = compiled.as_text()
                new_net, _, losses, rls = compiled(net, opt, rl, xs, ys, batches)
                runs[how] = {"leaves": [np.asarray(a) for a in jax.tree.leaves(new_net.params)] + [np.asarray(losses), np.asarray(rls)],
                             "custom_calls": re.findall(r'custom_call_target="(jaxcnn_spin_allreduce_\\w+)"', text),
                             "all_reduces": len(re.findall(r"= \\S+ all-reduce(?:-start)?\\(", text))}
            spin_allreduce.fits = fits
            key = f"{name} {np.dtype(dtype).name}"
            out[key] = {"identical": all(np.array_equal(a, b) for a, b in zip(runs["spin"]["leaves"], runs["psum"]["leaves"])),
                        "moved": max(float(np.max(np.abs(a - np.asarray(b)))) for a, b in zip(runs["spin"]["leaves"], jax.tree.leaves(net.params))),
                        "spin": [runs["spin"]["custom_calls"], runs["spin"]["all_reduces"]],
                        "psum": [runs["psum"]["custom_calls"], runs["psum"]["all_reduces"]]}
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def same_run():
    done = _python(SAME)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", ["toolbox float32", "modern float32", "toolbox float64", "modern float64"])
def test_the_spinning_sum_trains_the_same_bits_as_psum(same_run, case):
    """12 steps of 48 images split over 2 devices (the toolbox net with SGD, and ReLU / max pooling / softmax with
    momentum): the weights, losses and rL after the epoch are the same bits whichever all-reduce summed the
    slices. Each program holds what it says: the spin program one custom call and no all-reduce, the other one
    all-reduce and no custom call."""
    assert same_run["status"].startswith("spin (")
    r = same_run[case]
    dtype = case.split()[1]
    assert r["moved"] > 1e-3
    assert r["spin"] == [[f"jaxcnn_spin_allreduce_{'f32' if dtype == 'float32' else 'f64'}"], 0]
    assert r["psum"] == [[], 1]
    assert r["identical"]


GUARD = """
    import json, threading
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_num_cpu_devices", 2)
    from jaxcnn import spin_allreduce
    assert spin_allreduce.available(), spin_allreduce.status()
    # the custom call by hand, one execution per device, so the two devices' calls come from two executions
    def call(index):
        return lambda v: jax.ffi.ffi_call("jaxcnn_spin_allreduce_f32", jax.ShapeDtypeStruct(v.shape, v.dtype))(
            v, jnp.int32(index), group=np.int64(3), devices=np.int64(2))
    results = {}
    def run(index, value):
        key = "after" if str(index) in results else str(index)
        device = jax.devices()[index]
        v = jax.device_put(jnp.full(8, value, jnp.float32), device)
        try:
            results[key] = np.asarray(jax.jit(call(index))(v)).tolist()
        except Exception as error:
            results[key] = str(error)
    threads = [threading.Thread(target=run, args=(i, i + 1.0)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    run(0, 5.0)                                       # the group, once failed, refuses at once
    print(json.dumps({"results": results}))
"""


def test_vectors_of_two_executions_are_not_added():
    """Two separate executions (one per device, as when programs interleave on the devices) meet at one
    barrier: both fail with a message that says so and how to run without the spin, and the group refuses
    every later call instead of summing vectors that do not belong together."""
    done = _python(GUARD, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    for index in ("0", "1"):
        assert "two executions met at one step" in results[index], results
        assert "JAXCNN_ALLREDUCE=xla" in results[index]
    assert "this group failed before" in results["after"], results


def _status(tmp_path, **env):
    done = _python("""
        import json, jax
        jax.config.update("jax_num_cpu_devices", 2)
        from jaxcnn import parallel, spin_allreduce
        print(json.dumps({"status": spin_allreduce.status(), "describe": spin_allreduce.describe(),
                          "available": spin_allreduce.available()}))
    """, timeout=300, JAXCNN_CACHE=str(tmp_path / "cache"), **env)
    return done


def test_psum_where_the_user_asks_for_it(tmp_path):
    done = _status(tmp_path, JAXCNN_ALLREDUCE="xla")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out == {"status": "xla psum (JAXCNN_ALLREDUCE=xla)", "available": False,
                   "describe": "summed by XLA's psum (JAXCNN_ALLREDUCE=xla)"}
    assert not (tmp_path / "cache").exists()                       # nothing built


def test_a_misspelt_choice_is_an_error_that_names_it(tmp_path):
    done = _status(tmp_path, JAXCNN_ALLREDUCE="spinn")
    assert done.returncode != 0
    assert "JAXCNN_ALLREDUCE='spinn': expected 'spin' or 'xla'" in done.stderr


def test_a_failed_build_falls_back_to_psum_and_says_why(tmp_path):
    """A compiler that fails (`false`): psum, with the compiler's exit status in the reason, and no library or
    half-written file left in the cache."""
    done = _status(tmp_path, CXX="false")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert not out["available"]
    assert out["status"].startswith("xla psum (the build failed: ") and "false failed (exit 1)" in out["status"]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_no_compiler_falls_back_to_psum(tmp_path):
    done = _status(tmp_path, PATH=str(tmp_path / "empty"), CXX="")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["status"] == "xla psum (no C++ compiler ($CXX, c++ or g++) on PATH)"


def test_the_library_is_built_once_and_then_loaded_from_the_cache(tmp_path):
    first = _status(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    libraries = list((tmp_path / "cache").rglob("*.so"))
    assert len(libraries) == 1 and json.loads(first.stdout)["status"] == f"spin (jaxcnn/spin_allreduce.cc, built at {libraries[0]})"
    stamp = (libraries[0].stat().st_ino, libraries[0].stat().st_mtime_ns)
    second = _status(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout)["available"]
    assert (libraries[0].stat().st_ino, libraries[0].stat().st_mtime_ns) == stamp      # a rebuild replaces the file
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == libraries
