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


# 12 steps of 48 images over 2 devices (and 3: 16 each), spin against psum, in one process: the same bits.
SAME = """
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_num_cpu_devices", 3)
    jax.config.update("jax_enable_x64", True)
    from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, train
    from jaxcnn.layers import Conv, Input, Pool
    from jaxcnn.optimizers import init_state, spec_for

    MODERN = (Input(), Conv(6, 5, "relu"), Pool(2, "max"), Conv(12, 5, "relu"), Pool(2, "max"))
    rng = np.random.default_rng(0)
    n = 576
    out = {}
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
            for devices in (2, 3):
                mesh = parallel.batch_mesh(48, jax.devices()[:devices])
                xs, ys = parallel.replicated((x, y), mesh)
                runs = {}
                for how in ("auto", "xla"):
                    compiled = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh, all_reduce=how).lower(
                        net, opt, rl, xs, ys, batches).compile()
                    text = compiled.as_text()
                    new_net, _, losses, rls = compiled(net, opt, rl, xs, ys, batches)
                    runs[how] = {"leaves": [np.asarray(a) for a in jax.tree.leaves(new_net.params)] + [np.asarray(losses), np.asarray(rls)],
                                 "custom_calls": re.findall(r'custom_call_target="(jaxcnn_spin_allreduce_\\w+)"', text),
                                 "all_reduces": len(re.findall(r"= \\S+ all-reduce(?:-start)?\\(", text)),
                                 "plan": parallel.gradient_all_reduce(net, mesh, how)}
                key = f"{name} {np.dtype(dtype).name} {devices}"
                out[key] = {"identical": all(np.array_equal(a, b) for a, b in zip(runs["auto"]["leaves"], runs["xla"]["leaves"])),
                            "moved": max(float(np.max(np.abs(a - np.asarray(b)))) for a, b in zip(runs["auto"]["leaves"], jax.tree.leaves(net.params))),
                            "spin": [runs["auto"]["custom_calls"], runs["auto"]["all_reduces"], runs["auto"]["plan"]],
                            "psum": [runs["xla"]["custom_calls"], runs["xla"]["all_reduces"], runs["xla"]["plan"]]}
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def same_run():
    done = _python(SAME)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", [f"{net} {dtype} {devices}" for net in ("toolbox", "modern")
                                  for dtype in ("float32", "float64") for devices in (2, 3)])
def test_the_spinning_sum_trains_the_same_bits_as_psum(same_run, case):
    """12 steps of 48 images split over 2 and 3 devices (the toolbox net with SGD, and ReLU / max pooling /
    softmax with momentum): the weights, losses and rL after the epoch are the same bits whichever all-reduce
    summed the slices (over 3 devices the order of the additions matters, and both add in device order). Each
    program holds what its plan says: the spin one custom call and no all-reduce, the other the reverse."""
    r = same_run[case]
    dtype = case.split()[1]
    assert r["moved"] > 1e-3
    assert r["spin"] == [[f"jaxcnn_spin_allreduce_{'f32' if dtype == 'float32' else 'f64'}"], 0,
                         "spin (jaxcnn/spin_allreduce.cc)"]
    assert r["psum"] == [[], 1, "xla psum (asked for)"]
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


PEER_FAILS = """
    import json, threading, time
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_num_cpu_devices", 2)
    from jaxcnn import spin_allreduce
    assert spin_allreduce.available(), spin_allreduce.status()
    def call(index, devices):
        return lambda v: jax.ffi.ffi_call("jaxcnn_spin_allreduce_f32", jax.ShapeDtypeStruct(v.shape, v.dtype))(
            v, jnp.int32(index), group=np.int64(2), devices=np.int64(devices))
    results = {}
    def run(device, index, delay):                    # `index`: the device index the call is given
        time.sleep(delay)
        v = jax.device_put(jnp.ones(8, jnp.float32), jax.devices()[device])
        t0 = time.perf_counter()
        try:
            results[device] = np.asarray(jax.jit(call(index, 2))(v)).tolist()
        except Exception as error:
            results[device] = str(error)
        results[f"{device} seconds"] = time.perf_counter() - t0
    # device 0 waits at the barrier; a second later device 1 calls with index 7 of 2 and fails at once
    threads = [threading.Thread(target=run, args=(0, 0, 0.0)), threading.Thread(target=run, args=(1, 7, 1.0))]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    print(json.dumps(results))
"""


def test_a_device_that_fails_releases_the_ones_waiting_for_it():
    """A device whose call fails (here: a device index out of range) fails its group, and the device already
    waiting at the barrier stops waiting with an error that says so, within a second, not after 10 minutes."""
    done = _python(PEER_FAILS, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert "group, device or length out of range" in results["1"], results
    assert "another device of this batch failed" in results["0"], results
    assert results["0 seconds"] < 3.0, results                      # 1 s until device 1 calls, then at once


def _plan(tmp_path, **env):
    return _python("""
        import json, jax
        jax.config.update("jax_num_cpu_devices", 2)
        import jax.numpy as jnp, numpy as np
        from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, spin_allreduce
        mesh = parallel.batch_mesh(50)
        net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float32)
        print(json.dumps({"status": spin_allreduce.status(), "plan": parallel.gradient_all_reduce(net, mesh),
                          "available": spin_allreduce.available()}))
    """, timeout=300, JAXCNN_CACHE=str(tmp_path / "cache"), **env)


def test_psum_where_the_user_asks_for_it(tmp_path):
    done = _plan(tmp_path, JAXCNN_ALLREDUCE="xla")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"status": "not used: JAXCNN_ALLREDUCE=xla", "available": False,
                                       "plan": "xla psum (JAXCNN_ALLREDUCE=xla)"}
    assert not (tmp_path / "cache").exists()                       # nothing built


def test_a_misspelt_choice_is_an_error_that_names_it(tmp_path):
    done = _plan(tmp_path, JAXCNN_ALLREDUCE="spinn")
    assert done.returncode != 0
    assert "JAXCNN_ALLREDUCE='spinn': expected 'spin' or 'xla'" in done.stderr


def test_a_failed_build_falls_back_to_psum_and_says_why(tmp_path):
    """A compiler that fails (`false`): psum, with the compiler's exit status in the reason, and no library or
    half-written file left in the cache."""
    done = _plan(tmp_path, CXX="false")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert not out["available"]
    assert out["plan"].startswith("xla psum (the build failed: ") and "false failed (exit 1)" in out["plan"]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_no_compiler_falls_back_to_psum(tmp_path):
    done = _plan(tmp_path, PATH=str(tmp_path / "empty"), CXX="")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["plan"] == "xla psum (no C++ compiler ($CXX, c++ or g++) on PATH)"


def test_the_library_is_built_once_then_loaded_and_rebuilt_when_damaged(tmp_path):
    first = _plan(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    libraries = list((tmp_path / "cache").rglob("*.so"))
    assert len(libraries) == 1
    assert json.loads(first.stdout) == {"status": f"built at {libraries[0]}", "available": True,
                                        "plan": "spin (jaxcnn/spin_allreduce.cc)"}
    stamp = (libraries[0].stat().st_ino, libraries[0].stat().st_mtime_ns)
    second = _plan(tmp_path)
    assert second.returncode == 0 and json.loads(second.stdout)["available"], second.stderr[-2000:]
    assert (libraries[0].stat().st_ino, libraries[0].stat().st_mtime_ns) == stamp      # a rebuild replaces the file
    libraries[0].write_bytes(b"not a library")                                        # damaged: built again
    third = _plan(tmp_path)
    assert third.returncode == 0 and json.loads(third.stdout)["available"], third.stderr[-2000:]
    assert libraries[0].stat().st_size > 10_000
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == libraries


def test_what_the_spin_cannot_take_goes_to_psum_with_the_reason():
    """Vectors too long for the slots, a dtype it does not sum, more devices than it has slots for, and more
    meshes than it has groups: each gets psum and a plan that says why; the same devices keep their group."""
    done = _python("""
        import json, jax
        import numpy as np
        from jaxcnn import spin_allreduce
        assert spin_allreduce.available(), spin_allreduce.status()
        plans = {"long": spin_allreduce.plan(65_537, np.float32, (0, 1)),
                 "fits": spin_allreduce.plan(65_536, np.float32, (0, 1)),
                 "long64": spin_allreduce.plan(32_769, np.float64, (0, 1)),
                 "int": spin_allreduce.plan(10, np.int32, (0, 1)),
                 "nine": spin_allreduce.plan(10, np.float32, tuple(range(9))),
                 "again": spin_allreduce.plan(10, np.float32, (0, 1)),
                 "groups": [spin_allreduce.plan(10, np.float32, ids) for ids in ((1, 2), (2, 3), (3, 4), (4, 5))]}
        print(json.dumps(plans))
    """, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    plans = json.loads(done.stdout)
    spin = "spin (jaxcnn/spin_allreduce.cc)"
    assert plans["fits"] == [0, spin] and plans["again"] == [0, spin]
    assert plans["long"] == [None, "xla psum (65,537 values of float32 do not fit its 262,144-byte slots)"]
    assert plans["long64"] == [None, "xla psum (32,769 values of float64 do not fit its 262,144-byte slots)"]
    assert plans["int"] == [None, "xla psum (int32 is not summed by the spin)"]
    assert plans["nine"] == [None, "xla psum (9 devices, the spin takes at most 8)"]
    assert plans["groups"] == [[1, spin], [2, spin], [3, spin], [None, "xla psum (all 4 of the spin's device groups are taken)"]]
