"""`jaxcnn bench`: how fast an epoch is, measured against other formulations interleaved in the same run.

The host's speed drifts (by up to 2x within minutes on a shared VM), so absolute seconds mean little and
only ratios taken side by side do. Each contender is compiled first (timed), then the contenders take
turns, epoch by epoch, on the same permutation: one warm-up round, then `rounds` timed rounds
(A B C A B C ...). The record holds every epoch's seconds, the median per contender and the ratios of
the medians to jaxcnn's, plus images/s, the time to evaluate the test set, peak memory (the process's
maximum resident set), dtype, device, processor, versions, XLA flags and the compiler options jaxcnn sets.

Contenders: `jaxcnn` (the fast epoch); `baseline`, the straightforward program (autodiff through
`lax.conv_general_dilated` in NCHW inside the same `lax.scan` epoch, each step gathering its batch,
XLA's default options); and a peer from `jaxcnn.peers` when asked (`torch`: PyTorch eager).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import jax
import jaxlib
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import config as config_mod, data as data_mod, fast, model, peers
from .layers import Conv, Pool, describe, options
from .numerics import HIGHEST, activate, output_and_loss, use_dtype
from .run import epoch_order, initial_state, prepare_arrays
from .train import batch_matrix, evaluate, make_epoch_fn

DEFAULT_CONFIG = "fashion_mnist"                 # a packaged config (jaxcnn configs)
REFERENCE = "jaxcnn"                      # the denominator of every ratio


def baseline_loss(net, x, y):
    """The net the straightforward way: NCHW `lax.conv`, differentiated by `jax.grad`."""
    a = x.transpose(0, 3, 1, 2)                                           # NHWC -> NCHW
    conv = iter(net.params["conv"])
    for layer in net.layers[1:]:
        if isinstance(layer, Conv):
            p = next(conv)
            z = lax.conv_general_dilated(a, p["k"].transpose(3, 2, 0, 1), (1, 1), "VALID",
                                         precision=HIGHEST)                # OIHW kernels
            a = activate(layer.activation, z + p["b"][None, :, None, None])
        elif isinstance(layer, Pool) and layer.pool == "max":
            a = model.max_pool(a.transpose(0, 2, 3, 1), layer.scale).transpose(0, 3, 1, 2)
        elif isinstance(layer, Pool):
            n, c, h, w = a.shape
            s = layer.scale
            a = a.reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))
    fv = a.reshape(a.shape[0], -1)                                        # NCHW flatten = the toolbox's fv order
    z = jnp.dot(fv, net.params["ffW"].T, precision=HIGHEST) + net.params["ffb"]
    return output_and_loss(net.output, z, y)[1]


_baseline_grad = jax.value_and_grad(baseline_loss)


def jax_contender(epoch_fn, net, opt_state, x, y, steps: int, batchsize: int):
    """(compile seconds, epoch): `epoch_fn` compiled for (steps, batchsize) batches; `epoch(batches)` runs one
    epoch, carrying the net and optimizer state on to the next call, and waits for it to finish."""
    rl = jnp.asarray(np.nan, net.dtype)
    batches = jax.ShapeDtypeStruct((steps, batchsize), jnp.int32)
    t0 = time.perf_counter()
    compiled = epoch_fn.lower(net, opt_state, rl, x, y, batches).compile()
    compile_seconds = time.perf_counter() - t0
    state = [net, opt_state]

    def epoch(batches):
        state[0], state[1], losses, _ = compiled(state[0], state[1], rl, x, y, jnp.asarray(batches))
        return np.asarray(losses)

    return compile_seconds, epoch


def interleave(epochs: dict[str, Callable], batches_of: Callable[[int], np.ndarray], rounds: int,
               clock=time.perf_counter) -> dict[str, list[float]]:
    """Time `rounds` rounds; in round r every contender runs one epoch on `batches_of(r)`, in turn
    (A B C A B C ...), so that all of them see the host's drift alike. Returns {name: [seconds per round]}."""
    seconds = {name: [] for name in epochs}
    for r in range(rounds):
        batches = batches_of(r)
        for name, epoch in epochs.items():
            t0 = clock()
            epoch(batches)
            seconds[name].append(clock() - t0)
    return seconds


def ratios(medians: dict[str, float], reference: str = REFERENCE) -> dict[str, float]:
    """{"other/reference": median(other) / median(reference)} for every other contender."""
    return {f"{name}/{reference}": m / medians[reference] for name, m in medians.items() if name != reference}


def _load(cfg):
    """The config's data cut to data.n_train / data.n_test; synthetic pixels of the same shape if it cannot
    be had (timings do not depend on them)."""
    try:
        dataset = data_mod.load_dataset(cfg.data.dataset, cfg.data.dir or None)
    except data_mod.DataError:
        rng = np.random.default_rng(0)
        n, m = cfg.data.n_train or 60000, cfg.data.n_test or 10000
        synthetic = data_mod.Dataset("synthetic", rng.integers(0, 256, (n, 28, 28), np.uint8), rng.integers(0, 10, n),
                                     rng.integers(0, 256, (m, 28, 28), np.uint8), rng.integers(0, 10, m))
        return synthetic, "synthetic (the configured data could not be loaded)"
    return dataset.subset(cfg.data.n_train or None, cfg.data.n_test or None), dataset.source


def _check_peer(peer, cfg):
    """Fail before any work if the peer is unknown, not installed, or cannot run the config's optimizer."""
    if peer is None:
        return None
    if peer not in peers.PEERS:
        raise ValueError(f"--peer {peer!r}: unknown peer (choose from {', '.join(peers.PEERS)})")
    torch = peers.import_torch()
    t = cfg.train
    if t.optimizer != "sgd" or t.momentum or t.schedule != "constant":
        raise ValueError(f"--peer torch runs plain SGD with a constant alpha; the config asks for "
                         f"optimizer={t.optimizer!r}, momentum={t.momentum}, schedule={t.schedule!r}")
    if cfg.model.output != "sigmoid" or any(options(layer) for layer in cfg.model.layers):
        raise ValueError("--peer torch builds the toolbox's net (sigmoid convolutions, mean pooling, sigmoid "
                         "output); this config has other layer options")
    return torch


def run(config_path=None, rounds: int = 3, baseline: bool = True, peer: str | None = None,
        float64: bool = False) -> dict:
    """Benchmark as described in the module docstring; returns the record (a JSON-able dict)."""
    cfg = config_mod.load(config_path or DEFAULT_CONFIG)
    if rounds < 1:
        raise ValueError(f"--epochs {rounds}: the number of timed rounds must be at least 1")
    torch = _check_peer(peer, cfg)
    dtype = use_dtype("float64" if float64 else cfg.train.dtype)
    dataset, source = _load(cfg)
    x, y, x_test = prepare_arrays(dataset, dtype)
    n, batchsize = x.shape[0], cfg.train.batchsize
    if batchsize > n:
        raise ValueError(f"train.batchsize = {batchsize} is larger than the {n} training samples")
    steps = n // batchsize
    net, optimizer, opt_state, order_key = initial_state(cfg, x.shape[1:], dataset.n_classes, steps, dtype)

    compile_seconds, epochs = {}, {}
    compile_seconds["jaxcnn"], epochs["jaxcnn"] = jax_contender(
        make_epoch_fn(optimizer, donate=False), net, opt_state, x, y, steps, batchsize)
    if baseline:
        compile_seconds["baseline"], epochs["baseline"] = jax_contender(
            make_epoch_fn(optimizer, donate=False, grad_fn=_baseline_grad, gather_per_step=True, compiler_options=None),
            net, opt_state, x, y, steps, batchsize)
    if torch is not None:
        _, epochs[peer] = peers.torch_trainer(net, x, y, cfg.train.alpha, threads=os.cpu_count())
        compile_seconds[peer] = None                                      # eager: nothing to compile

    seconds = interleave(epochs, lambda r: batch_matrix(epoch_order(order_key, r, n), batchsize), 1 + rounds)
    warmup = {name: s[0] for name, s in seconds.items()}
    seconds = {name: s[1:] for name, s in seconds.items()}
    medians = {name: statistics.median(s) for name, s in seconds.items()}

    evaluate(net, x_test, dataset.test_labels)                            # compile the evaluation
    eval_seconds = []
    for _ in range(5):
        t0 = time.perf_counter()
        evaluate(net, x_test, dataset.test_labels)
        eval_seconds.append(time.perf_counter() - t0)
    return {
        "net": describe(net.layers), "dataset": dataset.name, "data_source": source, "n_train": n,
        "n_test": int(x_test.shape[0]), "batchsize": batchsize, "steps_per_epoch": steps,
        "dtype": np.dtype(dtype).name, "rounds": rounds, "contenders": list(epochs),
        "compile_seconds": compile_seconds, "warmup_seconds": warmup, "epoch_seconds": seconds,
        "seconds_per_epoch": medians, "ratios": ratios(medians),
        "images_per_second": {name: steps * batchsize / m for name, m in medians.items()},
        "eval_seconds": statistics.median(eval_seconds),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": _processor(),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "compiler_options": fast.XLA_CPU_OPTIONS,
        **({"torch": torch.__version__, "torch_threads": torch.get_num_threads()} if torch is not None else {}),
    }


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


DESCRIPTIONS = {"jaxcnn": "im2col + delta rule, jaxcnn's compiler options",
                "baseline": "autodiff through NCHW lax.conv, per-step gather, default XLA options",
                "torch": "PyTorch eager, nn.Conv2d/AvgPool2d/Linear, torch.optim.SGD"}


def format_table(r: dict) -> str:
    """The record as aligned `name  value` rows, one row per contender."""
    versions = f"jax {r['jax']}, jaxlib {r['jaxlib']}" + (f", torch {r['torch']} ({r['torch_threads']} threads)"
                                                         if "torch" in r else "")
    rows = [("net", f"{r['net']}  ({r['dataset']}, {r['n_train']} images, batch {r['batchsize']}, {r['dtype']})"),
            ("device", f"{r['platform']} {r['device']}, {r['cpu_count']} cores, {r['processor']}"),
            ("versions", f"{versions}, XLA_FLAGS={r['xla_flags'] or '(none)'}"),
            ("compiler options", ", ".join(f"{k}={v!r}" for k, v in r["compiler_options"].items()) or "(none)"),
            ("rounds", f"{r['rounds']} timed after 1 warm-up; each round runs " + " ".join(r["contenders"]))]
    for name in r["contenders"]:
        compile_s = r["compile_seconds"][name]
        epochs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"][name])
        rows.append((name, f"{r['seconds_per_epoch'][name]:.2f} s/epoch (median of {epochs}; warm-up "
                           f"{r['warmup_seconds'][name]:.2f}); {r['images_per_second'][name]:,.0f} images/s; "
                           f"{'no compile (eager)' if compile_s is None else f'compile {compile_s:.2f} s'}  [{DESCRIPTIONS[name]}]"))
    rows += [(ratio, f"{value:.2f}  (ratio of the medians)") for ratio, value in r["ratios"].items()]
    rows += [(f"eval {r['n_test']} images", f"{r['eval_seconds']:.3f} s"),
             ("peak memory", f"{r['peak_memory_mb']:.0f} MB (max RSS)")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(config_path=None, epochs: int = 3, as_json: bool = False, baseline: bool = True, peer: str | None = None,
         float64: bool = False) -> int:
    """Run the benchmark and print its record: a table, or one JSON object with `as_json`."""
    result = run(config_path, rounds=epochs, baseline=baseline, peer=peer, float64=float64)
    print(json.dumps(result) if as_json else format_table(result))
    return 0
