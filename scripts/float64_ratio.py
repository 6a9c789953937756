"""float64 against float32 for jaxcnn's training step, both compiled in one process and timed in turn.

    .venv/bin/python scripts/float64_ratio.py [ROUNDS]

A 200-step `lax.scan` of the toolbox net (batch 50, jaxcnn's compiler options) in each dtype, on the same
data, timed float32 float64 float64 float32 ... for ROUNDS rounds (default 7); prints ms per step and the
per-round ratio float64 / float32, the figure docs/performance.md quotes for issue 18's "float64 within 2.5×".
"""
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
from jaxcnn import EXAMPLE_LAYERS, fast, init_net  # noqa: E402

STEPS = 200


def compiled_scan(dtype, xs, ys):
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    xs, ys = jnp.asarray(xs, dtype), jnp.asarray(ys, dtype)

    def steps(params, xs, ys):
        def step(p, xy):
            loss, grads = fast.loss_and_grad(p, net.layers, *xy)
            return jax.tree.map(lambda w, g: w - g, p, grads), loss
        return jax.lax.scan(step, params, (xs, ys))

    c = jax.jit(steps, compiler_options=fast.XLA_CPU_OPTIONS).lower(net.params, xs, ys).compile()
    jax.block_until_ready(c(net.params, xs, ys))
    return lambda: jax.block_until_ready(c(net.params, xs, ys))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    rng = np.random.default_rng(0)
    xs, ys = rng.random((STEPS, 50, 28, 28, 1)), np.eye(10)[rng.integers(0, 10, (STEPS, 50))]
    runs = {"float32": compiled_scan(jnp.float32, xs, ys), "float64": compiled_scan(jnp.float64, xs, ys)}
    print("load before", Path("/proc/loadavg").read_text().split()[:3])
    ms = {name: [] for name in runs}
    for r in range(rounds):
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
