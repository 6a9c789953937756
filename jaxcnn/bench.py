"""`jaxcnn bench`: how fast an epoch is, measured against the straightforward formulation in the same run.

Reports compile seconds, the steady-state seconds per epoch (median of several full epochs after
a warm-up), images per second, the time to evaluate the test set, peak memory (the process's
maximum resident set), dtype, device, versions, XLA flags and the compiler options jaxcnn sets;
then the same for the baseline, the straightforward program: autodiff through
`lax.conv_general_dilated` in NCHW inside the same `lax.scan` epoch, each step gathering its batch,
XLA's default options. The ratio of the two is the figure to quote, since both share the machine's
load at the time.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import jaxlib
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import config as config_mod, data as data_mod, fast
from .layers import Conv, Pool, describe
from .numerics import HIGHEST, mse_loss, sigm, use_dtype
from .run import epoch_order, initial_state, prepare_arrays
from .train import batch_matrix, evaluate, make_epoch_fn

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fashion_mnist.toml"


def baseline_loss(net, x, y):
    """The toolbox net the straightforward way: NCHW `lax.conv`, differentiated by `jax.grad`."""
    a = x.transpose(0, 3, 1, 2)                                           # NHWC -> NCHW
    conv = iter(net.params["conv"])
    for layer in net.layers[1:]:
        if isinstance(layer, Conv):
            p = next(conv)
            z = lax.conv_general_dilated(a, p["k"].transpose(3, 2, 0, 1), (1, 1), "VALID",
                                         precision=HIGHEST)          # OIHW kernels
            a = sigm(z + p["b"][None, :, None, None])
        elif isinstance(layer, Pool):
            n, c, h, w = a.shape
            s = layer.scale
            a = a.reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))
    fv = a.reshape(a.shape[0], -1)                                        # NCHW flatten = the toolbox's fv order
    o = sigm(jnp.dot(fv, net.params["ffW"].T, precision=HIGHEST) + net.params["ffb"])
    return mse_loss(o, y)


_baseline_grad = jax.value_and_grad(baseline_loss)


def _time_epochs(epoch_fn, net, opt_state, x, y, order_key, n, batchsize, epochs, dtype):
    """Compile once (timed), run a warm-up epoch, then time `epochs` full epochs."""
    batches = jnp.asarray(batch_matrix(np.arange(n), batchsize))
    rl = jnp.asarray(np.nan, dtype)
    t0 = time.perf_counter()
    compiled = epoch_fn.lower(net, opt_state, rl, x, y, batches).compile()
    compile_seconds = time.perf_counter() - t0
    seconds = []
    for epoch in range(epochs + 1):
        batches = jnp.asarray(batch_matrix(epoch_order(order_key, epoch, n), batchsize))
        t0 = time.perf_counter()
        net, opt_state, losses, _ = compiled(net, opt_state, rl, x, y, batches)
        losses.block_until_ready()
        if epoch:                                                         # epoch 0 is the warm-up
            seconds.append(time.perf_counter() - t0)
    return net, compile_seconds, seconds


def _load(cfg):
    """The config's data; synthetic pixels of the same shape if it cannot be had (timings do not depend on them)."""
    try:
        dataset = data_mod.load_dataset(cfg.data.dataset, cfg.data.dir or None)
        return dataset.subset(cfg.data.n_train or None, cfg.data.n_test or None), dataset.source
    except data_mod.DataError:
        rng = np.random.default_rng(0)
        n, m = cfg.data.n_train or 60000, cfg.data.n_test or 10000
        synthetic = data_mod.Dataset("synthetic", rng.integers(0, 256, (n, 28, 28), np.uint8), rng.integers(0, 10, n),
                                     rng.integers(0, 256, (m, 28, 28), np.uint8), rng.integers(0, 10, m))
        return synthetic, "synthetic (the configured data could not be loaded)"


def run(config_path=None, epochs: int = 3, baseline: bool = True, baseline_epochs: int = 2,
        float64: bool = False) -> dict:
    cfg = config_mod.load(config_path or DEFAULT_CONFIG)
    dtype = use_dtype("float64" if float64 else cfg.train.dtype)
    dataset, source = _load(cfg)
    x, y, x_test = prepare_arrays(dataset, dtype)
    n, batchsize = x.shape[0], cfg.train.batchsize
    net, optimizer, opt_state, order_key = initial_state(cfg, x.shape[1:], dataset.n_classes, n // batchsize, dtype)

    trained, compile_seconds, seconds = _time_epochs(
        make_epoch_fn(optimizer, donate=False), net, opt_state, x, y, order_key, n, batchsize, epochs, dtype)
    evaluate(trained, x_test, dataset.test_labels)                         # compile the evaluation
    eval_seconds = []
    for _ in range(5):
        t0 = time.perf_counter()
        evaluate(trained, x_test, dataset.test_labels)
        eval_seconds.append(time.perf_counter() - t0)
    result = {
        "net": describe(net.layers), "dataset": dataset.name, "data_source": source, "n_train": n,
        "n_test": int(x_test.shape[0]), "batchsize": batchsize, "steps_per_epoch": n // batchsize,
        "dtype": np.dtype(dtype).name, "epochs_timed": epochs,
        "seconds_per_epoch": statistics.median(seconds), "epoch_seconds": [round(s, 3) for s in seconds],
        "compile_seconds": compile_seconds, "images_per_second": (n // batchsize) * batchsize / statistics.median(seconds),
        "eval_seconds": statistics.median(eval_seconds),
    }
    if baseline:
        _, base_compile, base_seconds = _time_epochs(
            make_epoch_fn(optimizer, donate=False, grad_fn=_baseline_grad, gather_per_step=True, compiler_options=None),
            net, opt_state,
            x, y, order_key, n, batchsize, baseline_epochs, dtype)
        result.update(baseline_seconds_per_epoch=statistics.median(base_seconds),
                      baseline_compile_seconds=base_compile,
                      speedup_vs_baseline=statistics.median(base_seconds) / result["seconds_per_epoch"])
    result.update(
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        device=str(jax.devices()[0].device_kind), platform=jax.devices()[0].platform,
        cpu_count=os.cpu_count(), machine=platform.machine(), processor=_processor(),
        jax=jax.__version__, jaxlib=jaxlib.__version__,
        xla_flags=os.environ.get("XLA_FLAGS", ""), compiler_options=fast.XLA_CPU_OPTIONS,
        python=platform.python_version())
    return result


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(r: dict) -> str:
    rows = [("net", f"{r['net']}  ({r['dataset']}, {r['n_train']} images, batch {r['batchsize']}, {r['dtype']})"),
            ("device", f"{r['platform']} {r['device']}, {r['cpu_count']} cores, {r['processor']}"),
            ("versions", f"jax {r['jax']}, jaxlib {r['jaxlib']}, XLA_FLAGS={r['xla_flags'] or '(none)'}"),
            ("compiler options", ", ".join(f"{k}={v!r}" for k, v in r["compiler_options"].items()) or "(none)"),
            ("compile", f"{r['compile_seconds']:.2f} s"),
            ("epoch (median)", f"{r['seconds_per_epoch']:.2f} s   epochs: {r['epoch_seconds']}"),
            ("images / s", f"{r['images_per_second']:,.0f}"),
            (f"eval {r['n_test']} images", f"{r['eval_seconds']:.3f} s"),
            ("peak memory", f"{r['peak_memory_mb']:.0f} MB (max RSS)")]
    if "baseline_seconds_per_epoch" in r:
        rows += [("baseline epoch", f"{r['baseline_seconds_per_epoch']:.2f} s  (autodiff through NCHW lax.conv, per-step gather, "
                                    f"default XLA options; "
                                    f"compile {r['baseline_compile_seconds']:.2f} s)"),
                 ("speedup", f"{r['speedup_vs_baseline']:.2f}x over the baseline")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(config_path=None, epochs: int = 3, as_json: bool = False, baseline: bool = True,
         float64: bool = False) -> int:
    result = run(config_path, epochs=epochs, baseline=baseline, float64=float64)
    print(json.dumps(result) if as_json else format_table(result))
    return 0
