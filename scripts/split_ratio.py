"""jaxcnn's epoch on one CPU device against the same epoch with each batch split over the cores, in one process.

    .venv/bin/python scripts/split_ratio.py [IMAGES] [--float64] [--rounds 5] [--without-all-reduce] [--with-psum]

Makes one CPU device per core, compiles `train.make_epoch_fn` for the toolbox net (batch 50, plain SGD) with and
without `parallel.batch_mesh`, on IMAGES random images (default 60,000, a full epoch), prints the largest
difference of the two epochs' weights and losses, then times them in turn (one split split one ...) and prints
seconds per epoch and the per-round ratio one / split, the figures docs/performance.md quotes.
`--without-all-reduce` adds a third program, for timing only: the same split epoch in which each device steps
on its own slice's gradient, with no all-reduce (its numbers are not the batch's); split / it is what the one
all-reduce a step costs. `--with-psum` adds the split epoch with XLA's psum in place of the spinning all-reduce
(`jaxcnn.spin_allreduce`); psum / split is what the spin gains.
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=int, default=60_000)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without-all-reduce", action="store_true")
    parser.add_argument("--with-psum", action="store_true")
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
    jax.config.update("jax_enable_x64", args.float64)
    from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, train, xla_options
    from jaxcnn.optimizers import init_state, spec_for

    dtype = jnp.float64 if args.float64 else jnp.float32
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    rng = np.random.default_rng(0)
    n = args.images - args.images % 50
    x = jnp.asarray(rng.random((n, 28, 28, 1)), dtype)
    y = jnp.asarray(np.eye(10)[rng.integers(0, 10, n)], dtype)
    spec = spec_for("sgd")
    opt, rl = init_state(spec, net, 1.0), jnp.asarray(np.nan, dtype)
    batches = jnp.asarray(rng.permutation(n).reshape(-1, 50).astype(np.int32))
    mesh = parallel.batch_mesh(50)
    if mesh is None:
        raise SystemExit("one core here: nothing to split over")
    runs, results = {}, {}
    for name, m in (("one", None), ("split", mesh)):
        xs, ys = parallel.replicated((x, y), m)
        compiled = train.make_epoch_fn(spec.transformation(), donate=False, mesh=m).lower(net, opt, rl, xs, ys, batches).compile()
        runs[name] = lambda c=compiled, xs=xs, ys=ys: jax.block_until_ready(c(net, opt, rl, xs, ys, batches))
        results[name] = runs[name]()
    if args.with_psum:
        xs, ys = parallel.replicated((x, y), mesh)
        compiled = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh, all_reduce="xla").lower(
            net, opt, rl, xs, ys, batches).compile()
        runs["psum"] = lambda c=compiled, xs=xs, ys=ys: jax.block_until_ready(c(net, opt, rl, xs, ys, batches))
        results["psum"] = runs["psum"]()
    if args.without_all_reduce:
        xs, ys = parallel.replicated((x, y), mesh)
        own = lambda *a: train.epoch_scan(*a, optimizer=spec.transformation())  # noqa: E731
        compiled = jax.jit(parallel.split_batches(own, mesh), compiler_options=xla_options.for_dtype(dtype)).lower(
            net, opt, rl, xs, ys, batches).compile()
        runs["alone"] = lambda c=compiled, xs=xs, ys=ys: jax.block_until_ready(c(net, opt, rl, xs, ys, batches))
        runs["alone"]()
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(results["one"][:3]),
                                                                  jax.tree.leaves(results["split"][:3])))
    print(f"{n} images, {np.dtype(dtype).name}, split over {parallel.mesh_size(mesh)} devices; largest difference of "
          f"weights and losses after the epoch {diff:.2e}; load before", Path("/proc/loadavg").read_text().split()[:3])
    seconds = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - t0)
    for name, v in seconds.items():
        print(f"{name:5s} s/epoch {' '.join(f'{t:.3f}' for t in v)}  median {statistics.median(v):.3f}")
    ratios = [a / b for a, b in zip(seconds["one"], seconds["split"])]
    print(f"one/split per round median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    if args.without_all_reduce:
        ratios = [a / b for a, b in zip(seconds["split"], seconds["alone"])]
        print(f"split/alone (the all-reduce's cost) per round median {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    if args.with_psum:
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(results["psum"][:3]), jax.tree.leaves(results["split"][:3])))
        ratios = [a / b for a, b in zip(seconds["psum"], seconds["split"])]
        print(f"psum/split (what the spin gains; split's all-reduce: {parallel.gradient_all_reduce(net, mesh)}; the same bits: {same}) per round median "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    print("load after", Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
