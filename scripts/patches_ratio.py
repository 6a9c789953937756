"""The polyphase patch matrices by jaxcnn's C++ copy loop against XLA's concatenations, in one process.

    .venv/bin/python scripts/patches_ratio.py [IMAGES] [--float64] [--rounds 7] [--test-images 10000]

Makes one CPU device per core, as `jaxcnn train` and the bench do, and compiles for the toolbox net (batch 50,
plain SGD, the batch split over the devices) the training epoch on IMAGES random images (default 60,000) and
`evaluate`'s program on `--test-images` random images, each twice: with the patch matrices built by
`jaxcnn/phase_patches.cc` (`jaxcnn.native_patches`) and by XLA. It checks that the two give the same bits
(weights, losses, predicted labels), then times them in turn (native xla xla native ...) and prints seconds
per epoch, per evaluation of the test images (the mean of `--eval-reps` in a round), and the per-round ratio xla / native, as docs/performance.md quotes.
"""
import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=int, default=60_000)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--eval-reps", type=int, default=5, help="evaluations of the test images a round, timed together")
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
    jax.config.update("jax_enable_x64", args.float64)
    from jaxcnn import EXAMPLE_LAYERS, init_net, native_patches, parallel, train, xla_options
    from jaxcnn.optimizers import init_state, spec_for

    dtype = jnp.float64 if args.float64 else jnp.float32
    if not native_patches.available(dtype):
        raise SystemExit(f"nothing to compare: {native_patches.status()}")
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    rng = np.random.default_rng(0)
    n = args.images - args.images % 50
    x = jnp.asarray(rng.random((n, 28, 28, 1)), dtype)
    y = jnp.asarray(np.eye(10)[rng.integers(0, 10, n)], dtype)
    x_test = jnp.asarray(rng.random((args.test_images, 28, 28)), dtype)
    labels = rng.integers(0, 10, args.test_images)
    spec = spec_for("sgd")
    opt, rl = init_state(spec, net, 1.0), jnp.asarray(np.nan, dtype)
    batches = jnp.asarray(rng.permutation(n).reshape(-1, 50).astype(np.int32))
    mesh = parallel.batch_mesh(50)
    xs, ys = parallel.replicated((x, y), mesh)
    runs, results = {}, {}
    built_natively = native_patches.available
    for name in ("native", "xla"):
        native_patches.available = built_natively if name == "native" else (lambda dtype: False)
        compiled = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh).lower(
            net, opt, rl, xs, ys, batches).compile()
        runs[f"epoch {name}"] = functools.partial(lambda c: jax.block_until_ready(c(net, opt, rl, xs, ys, batches)), compiled)
        results[f"epoch {name}"] = runs[f"epoch {name}"]()
        evaluate = _fresh_evaluate(train)
        runs[f"evaluate {name}"] = functools.partial(
            lambda e: [e(net, x_test, labels) for _ in range(args.eval_reps)][-1].predictions, evaluate)
        results[f"evaluate {name}"] = runs[f"evaluate {name}"]()
        assert ("jaxcnn_phase_patches" in compiled.as_text()) == (name == "native"), name
    native_patches.available = built_natively
    same_epoch = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(results["epoch native"][:3]),
                                                          jax.tree.leaves(results["epoch xla"][:3])))
    same_labels = np.array_equal(results["evaluate native"], results["evaluate xla"])
    print(f"{n} training and {args.test_images} test images, {np.dtype(dtype).name}, {parallel.mesh_size(mesh)} "
          f"device(s); the same bits: epoch {same_epoch}, labels {same_labels}; load before",
          Path("/proc/loadavg").read_text().split()[:3])
    seconds = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - t0)
    seconds.update({name: [t / args.eval_reps for t in v] for name, v in seconds.items() if name.startswith("evaluate")})
    for name, v in seconds.items():
        print(f"{name:16s} s {' '.join(f'{t:.3f}' for t in v)}  median {statistics.median(v):.3f}")
    for what in ("epoch", "evaluate"):
        ratios = [a / b for a, b in zip(seconds[f"{what} xla"], seconds[f"{what} native"])]
        print(f"{what}: xla / native per round median {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    print("load after", Path("/proc/loadavg").read_text().split()[:3])


def _fresh_evaluate(train):
    """`train.evaluate` with its own compiled program, so that the two variants do not share jit's cache."""
    spec = importlib.util.spec_from_file_location(f"jaxcnn._train_copy_{id(object())}", train.__file__)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.evaluate


if __name__ == "__main__":
    main()
