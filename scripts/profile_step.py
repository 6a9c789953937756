"""Op-by-op profile of jaxcnn's training step (or its forward pass) on this CPU, as docs/performance.md quotes it.

    .venv/bin/python scripts/profile_step.py [--steps 100] [--float64] [--eval] [--batch N] [--top 20]

Runs `--steps` steps of the toolbox net (batch 50; 100-image chunks with --eval) inside one jitted `lax.scan`
with jaxcnn's compiler options (`--batch 25`: one device's slice of a split batch of 50), traces one run with `jax.profiler`, and prints for every XLA op (fusion, dot)
its shortest and median time per step and its output shape from the compiled HLO. The shortest time is the
figure to compare on a shared host: other processes only ever make an op slower, never faster.
"""
import argparse
import collections
import gzip
import json
import re
import statistics
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--eval", action="store_true", help="profile the forward pass of evaluation instead")
    parser.add_argument("--batch", type=int, help="images a step (default 50; 100 with --eval)")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    from jaxcnn import EXAMPLE_LAYERS, fast, init_net, xla_options

    dtype = jnp.float64 if args.float64 else jnp.float32
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    rng = np.random.default_rng(0)
    batch = args.batch or (100 if args.eval else 50)
    xs = jnp.asarray(rng.random((args.steps, batch, 28, 28, 1)), dtype)
    ys = jnp.asarray(np.eye(10)[rng.integers(0, 10, (args.steps, batch))], dtype)

    def steps(params, xs, ys):
        if args.eval:
            return jax.lax.map(lambda x: jnp.argmax(fast.forward(params, net.layers, x), axis=1), xs)

        def step(p, xy):
            loss, grads = fast.loss_and_grad(p, net.layers, *xy)
            return jax.tree.map(lambda w, g: w - g, p, grads), loss
        return jax.lax.scan(step, params, (xs, ys))

    compiled = jax.jit(steps, compiler_options=xla_options.for_dtype(dtype)).lower(net.params, xs, ys).compile()
    shapes = dict(re.findall(r"%([\w.-]+) = (\w+\[[\d,]*\])", compiled.as_text()))
    jax.block_until_ready(compiled(net.params, xs, ys))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            jax.block_until_ready(compiled(net.params, xs, ys))
        trace = json.load(gzip.open(next(Path(folder).rglob("*.trace.json.gz"))))
    durations = collections.defaultdict(list)
    for event in trace["traceEvents"]:
        name = event.get("name", "")
        if event.get("ph") == "X" and name in shapes:
            durations[name].append(event["dur"])
    rows = sorted(((min(d) * len(d) / args.steps, statistics.median(d) * len(d) / args.steps, name)
                   for name, d in durations.items()), reverse=True)
    print(f"{f'eval chunk of {batch}' if args.eval else f'training step, batch {batch}'}, {np.dtype(dtype).name}: "
          f"sum of per-op minima {sum(r[0] for r in rows) / 1e3:.3f} ms, of medians {sum(r[1] for r in rows) / 1e3:.3f} ms "
          f"(load average {Path('/proc/loadavg').read_text().split()[0]})")
    for shortest, median, name in rows[:args.top]:
        print(f"  {shortest / 1e3:7.3f}  {median / 1e3:7.3f} ms  {name:36s} {shapes[name]}")


if __name__ == "__main__":
    main()
