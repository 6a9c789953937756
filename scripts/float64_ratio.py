"""float64 against float32 for jaxcnn's training epoch, both compiled in one process and timed in turn.

    .venv/bin/python scripts/float64_ratio.py [ROUNDS] [--devices N]

200 steps of the toolbox net (batch 50) through `train.make_epoch_fn` in each dtype, on the same data, with
each batch split over N CPU devices as `jaxcnn train` does (default: one per core, `jaxcnn.parallel`; 1: unsplit),
timed float32 float64 float64 float32 ... for ROUNDS rounds (default 7); prints ms per step and the per-round
ratio float64 / float32, the figure docs/performance.md quotes for issue 18's "float64 within 2.5×".
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

STEPS, BATCH = 200, 50


def compiled_epoch(dtype, x, y, batches, mesh):
    from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, train
    from jaxcnn.optimizers import init_state, spec_for

    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    spec = spec_for("sgd")
    opt, rl = init_state(spec, net, 1.0), jnp.asarray(np.nan, dtype)
    x, y = parallel.replicated((jnp.asarray(x, dtype), jnp.asarray(y, dtype)), mesh)
    c = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh).lower(net, opt, rl, x, y, batches).compile()
    jax.block_until_ready(c(net, opt, rl, x, y, batches))
    return lambda: jax.block_until_ready(c(net, opt, rl, x, y, batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=7)
    parser.add_argument("--devices", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", args.devices)
    jax.config.update("jax_enable_x64", True)
    from jaxcnn import parallel

    mesh = parallel.batch_mesh(BATCH)
    rng = np.random.default_rng(0)
    n = STEPS * BATCH
    x, y = rng.random((n, 28, 28, 1)), np.eye(10)[rng.integers(0, 10, n)]
    batches = jnp.asarray(rng.permutation(n).reshape(STEPS, BATCH).astype(np.int32))
    runs = {name: compiled_epoch(dtype, x, y, batches, mesh) for name, dtype in (("float32", jnp.float32),
                                                                                 ("float64", jnp.float64))}
    print(f"each batch over {parallel.mesh_size(mesh)} device(s); load before", Path("/proc/loadavg").read_text().split()[:3])
    ms = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            runs[name]()
            ms[name].append((time.perf_counter() - t0) / STEPS * 1e3)
    for name, v in ms.items():
        print(f"{name} ms/step median {statistics.median(v):.3f} min {min(v):.3f}")
    ratios = [b / a for a, b in zip(ms["float32"], ms["float64"])]
    print(f"float64/float32 per round median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    print("load after", Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
