"""jaxcnn/fast.py at a git revision ("old") against the working tree's ("new"), interleaved in one process.

    .venv/bin/python scripts/interleave_step.py REVISION ROUNDS [--split | --eval] [--modern] [--float64]

Compiles a 200-step `lax.scan` of each (the toolbox net, batch 50, float32, jaxcnn's compiler options for the dtype) and
times them in turn, old new new old old new ..., printing ms per step per round, the per-round ratio old/new
and the load average. `--eval` times the forward pass of evaluation instead (100 chunks of 100 images,
ms per chunk). `--split` adds the batch as two independent halves of 25 (two chains for two cores).
`--modern` times configs/fashion_mnist_modern.toml's net (ReLU, max pooling, softmax) instead of the toolbox
net; `--float64` runs in float64.
On a shared host only these side-by-side ratios mean anything (docs/performance.md).
"""
import importlib.util, subprocess, sys, tempfile, time, statistics
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np
if "--float64" in sys.argv:
    jax.config.update("jax_enable_x64", True)
from jaxcnn import EXAMPLE_LAYERS, fast, init_net, xla_options
from jaxcnn.layers import Conv, Input, Pool

source = subprocess.run(["git", "show", f"{sys.argv[1]}:jaxcnn/fast.py"], capture_output=True, text=True, check=True).stdout
old_file = Path(tempfile.mkdtemp()) / "fast_old.py"
old_file.write_text(source.replace("from .layers ", "from jaxcnn.layers ").replace("from .numerics ", "from jaxcnn.numerics "))
spec = importlib.util.spec_from_file_location("fast_old", old_file)
fast_old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fast_old)

evaluation = "--eval" in sys.argv
UNIT = "chunk of 100" if evaluation else "step"
steps_n, batch, rounds = (100, 100, int(sys.argv[2])) if evaluation else (200, 50, int(sys.argv[2]))
MODERN = (Input(), Conv(6, 5, "relu"), Pool(2, "max"), Conv(12, 5, "relu"), Pool(2, "max"))
dtype = jnp.float64 if "--float64" in sys.argv else jnp.float32
if "--modern" in sys.argv:
    net = init_net(jax.random.key(0), MODERN, (28, 28), 10, dtype, output="softmax")
else:
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
rng = np.random.default_rng(0)
xs = jnp.asarray(rng.random((steps_n, batch, 28, 28, 1)), dtype)
ys = jnp.asarray(np.eye(10)[rng.integers(0, 10, (steps_n, batch))], dtype)

def make(mod):
    def steps(params, xs, ys):
        if evaluation:
            return jax.lax.map(lambda x: jnp.argmax(mod.forward(params, net.layers, x, net.output), axis=1), xs)

        def step(p, xy):
            loss, grads = mod.loss_and_grad(p, net.layers, *xy, net.output)
            return jax.tree.map(lambda w, g: w - g, p, grads), loss
        return jax.lax.scan(step, params, (xs, ys))
    c = jax.jit(steps, compiler_options=xla_options.for_dtype(dtype)).lower(net.params, xs, ys).compile()
    jax.block_until_ready(c(net.params, xs, ys))
    return c
class Split:
    """The batch as two independent halves of 25 (two chains for two cores), gradients averaged."""
    @staticmethod
    def loss_and_grad(p, layers, x, y, output="sigmoid"):
        (l1, g1), (l2, g2) = (fast.loss_and_grad(p, layers, x[i:i + 25], y[i:i + 25], output) for i in (0, 25))
        return (l1 + l2) / 2, jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
old, new = make(fast_old), make(fast)
split = make(Split) if "--split" in sys.argv and not evaluation else None
t = {"old": [], "new": [], "split": []}
print("load before", Path("/proc/loadavg").read_text().split()[:3])
for r in range(rounds):
    order = [("old", old), ("new", new)] + ([("split", split)] if split else [])
    for name, c in (order if r % 2 == 0 else order[::-1]):
        t0 = time.perf_counter(); jax.block_until_ready(c(net.params, xs, ys)); t[name].append((time.perf_counter() - t0) / steps_n * 1e3)
ratios = [o / n for o, n in zip(t["old"], t["new"])]
print(f"old ms/{UNIT}", " ".join(f"{v:.3f}" for v in t["old"]))
print(f"new ms/{UNIT}", " ".join(f"{v:.3f}" for v in t["new"]))
print(f"median old {statistics.median(t['old']):.3f} new {statistics.median(t['new']):.3f}; min old {min(t['old']):.3f} new {min(t['new']):.3f}; "
      f"old/new per round median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); min/min {min(t['old'])/min(t['new']):.3f}")
if split:
    print(f"split ms/{UNIT}", " ".join(f"{v:.3f}" for v in t["split"]))
    sr = [s_ / n for s_, n in zip(t["split"], t["new"])]
    print(f"split/new per round median {statistics.median(sr):.3f} (range {min(sr):.3f}-{max(sr):.3f}); min/min {min(t['split'])/min(t['new']):.3f}")
print("load after", Path("/proc/loadavg").read_text().split()[:3])
