"""GFLOP/s of the toolbox net's matrix products on XLA:CPU's Eigen kernels, on YNNPACK and in numpy, per dtype.

    .venv/bin/python scripts/dot_rates.py [--rounds 7]

The five products of one device's training step (a batch of 25, as `jaxcnn train` splits 50 over two cores:
conv2's forward product and delta back, conv1's forward product and kernel gradient, conv2's kernel gradient),
each compiled alone inside a 100-step `lax.scan` with YNNPACK off (`xla_cpu_experimental_ynn_fusion_type=""`,
XLA's Eigen dot) and with one YNNPACK fusion per dot (`LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT`), and the same
product in numpy (OpenBLAS); the three are timed in turn for ROUNDS rounds and the shortest time of each is
printed as GFLOP/s, the figures behind `jaxcnn.xla_options` in docs/performance.md.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = [((48, 216), (216, 400)), ((216, 48), (48, 400)), ((24, 36), (36, 3600)), ((36, 3600), (3600, 24)),
          ((216, 400), (400, 48))]
OPTIONS = {"eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
           "ynnpack": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}}
STEPS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    print(f"{'dtype':8s} {'product':24s} " + " ".join(f"{name:>9s}" for name in (*OPTIONS, "numpy")) + "  GFLOP/s")
    for dtype in (np.float32, np.float64):
        for a_shape, b_shape in SHAPES:
            a, b = rng.random(a_shape).astype(dtype), rng.random(b_shape).astype(dtype)
            flop = 2 * a_shape[0] * a_shape[1] * b_shape[1]
            # `a` is the loop's carry and each product updates one of its elements in place, so XLA can neither
            # hoist the product out of the loop nor drop it, and copies nothing
            steps = lambda a, b: jax.lax.scan(lambda a, _: (a.at[0, 0].add(jnp.dot(a, b)[0, 0] * 0), None),  # noqa: E731
                                              a, None, length=STEPS)[0]
            runs = {name: (jax.jit(steps, compiler_options=o).lower(a, b).compile(), STEPS) for name, o in OPTIONS.items()}
            runs["numpy"] = (lambda a, b: a @ b, 1)
            best = {name: float("inf") for name in runs}
            for r in range(args.rounds + 1):                          # round 0 warms up
                for name, (fn, n) in (runs.items() if r % 2 else reversed(runs.items())):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(a, b))
                    if r:
                        best[name] = min(best[name], (time.perf_counter() - t0) / n)
            print(f"{np.dtype(dtype).name:8s} {str(a_shape) + ' @ ' + str(b_shape):24s} "
                  + " ".join(f"{flop / best[name] / 1e9:9.0f}" for name in runs))


if __name__ == "__main__":
    main()
