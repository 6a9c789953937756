"""`jaxcnn bench`: how fast an epoch is, measured against other formulations interleaved in the same run.

The host's speed drifts (by up to 2x within minutes on a shared VM), so absolute seconds mean little and
only ratios taken side by side do. Each contender is compiled first (timed), then the contenders take
turns, epoch by epoch, on the same permutation: one warm-up round, then `rounds` timed rounds
(A B C A B C ...), each epoch started `SETTLE_SECONDS` after the one before, when the thread pools of the
one before have stopped spinning. The record holds every epoch's seconds, the median per contender, the
ratios of the medians to jaxcnn's and the ratios round by round (each epoch over jaxcnn's of the same
round), images/s, the time to evaluate the test set (each round evaluates it `EVAL_REPS` times, in turn
with the epochs: the median over the rounds of their mean), peak memory (the process's maximum resident
set), dtype, device, processor and its vector extensions, versions, XLA flags and the compiler options
jaxcnn sets. For every timed epoch it also records what share of the machine's CPU time the hypervisor
stole and other processes took (`host_shares`, from /proc/stat), so that a slow epoch can be told from a
busy host.

The floor: each round also times numpy's float32 1024×1024 matrix product (`SGEMM_REPS` of them, in turn with
the contenders, so it sees the same drift), and the record sets the epoch's FLOPs (`flops_per_image`, counted
from the layer stack) against that rate: `floor_seconds` = FLOPs / median sgemm rate, and each contender's
`fraction` of it = floor_seconds / its median epoch. The same for evaluating the test set (forward FLOPs only).
Which BLAS kernel numpy ran is recorded (threadpoolctl, where installed), with the OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE variables that some hosts set to force an older kernel: a forced kernel lowers the floor.

Contenders: `jaxcnn` (the fast epoch, each batch split over the CPU devices that `jaxcnn bench` makes, one
per core, where it divides: `jaxcnn.parallel`); `baseline`, the straightforward program (autodiff through
`lax.conv_general_dilated` in NCHW inside the same `lax.scan` epoch, each step gathering its batch,
XLA's default options); and the peers from `jaxcnn.peers` that are asked for (`torch`: PyTorch eager,
`torch-compile`: its training step through `torch.compile`).
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

from . import config as config_mod, data as data_mod, model, native_patches, parallel, peers, spin_allreduce, xla_options
from .layers import Conv, Pool, describe, layer_shapes, options
from .numerics import HIGHEST, activate, output_and_loss, use_dtype
from .run import epoch_order, initial_state, prepare_arrays
from .train import batch_matrix, evaluate, make_epoch_fn

DEFAULT_CONFIG = "fashion_mnist"                 # a packaged config (jaxcnn configs)
REFERENCE = "jaxcnn"                      # the denominator of every ratio
SGEMM_N, SGEMM_REPS = 1024, 32            # the floor: 32 float32 1024² products a round (≈ 69 GFLOP)
EVAL_REPS = 10                            # evaluations of the test set a round (≈ 1 s for 10,000 images)
SETTLE_SECONDS = 0.5                      # the pause before each timed epoch: the last one's thread pools go idle
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
FLOPS_RULE = ("2 FLOPs per multiply-add of the convolutions and the output layer: forward, the kernel and weight "
              "gradients, and the deltas sent back to every layer that has a learning layer before it; "
              "activations, pooling, biases, the loss and the update are not counted")
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw",
                     "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg",
                     "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
                     "amx_int8", "asimd", "sve", "sve2", "sme")


def flops_per_image(layers, input_shape, n_classes: int) -> dict[str, int]:
    """{"forward", "backward"}: the FLOPs of one image's training step by FLOPS_RULE, from the layer stack.

    A 'c' layer of kernel k from C_in maps to C_out maps of h×w costs h·w·C_out·k²·C_in multiply-adds forward,
    as many for its kernel gradient, and as many again for the 'full' convolution that sends its delta back
    when a 'c' layer lies before it (the first one sends none: nothing before it learns). The output layer
    (classes × fvnum) costs classes·fvnum forward, as many for its weight gradient, and as many for the
    feature vector's delta when any 'c' layer lies before it."""
    shapes = layer_shapes(layers, input_shape)
    forward = backward = 0
    learning_before = False
    for layer, (_, _, c_in), (h, w, c_out) in zip(layers[1:], shapes, shapes[1:]):
        if isinstance(layer, Conv):
            macs = h * w * c_out * layer.kernelsize ** 2 * c_in
            forward += macs
            backward += macs * (2 if learning_before else 1)
            learning_before = True
    h, w, c = shapes[-1]
    output = n_classes * h * w * c
    forward += output
    backward += output * (2 if learning_before else 1)
    return {"forward": 2 * forward, "backward": 2 * backward}


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


def host_sample(stat: Path = Path("/proc/stat")) -> tuple[float, float, float, float] | None:
    """(stolen, busy, total, this process's) CPU seconds so far: the first three of the whole machine, from
    /proc/stat's `cpu` line (stolen: what the hypervisor gave other guests; busy: neither idle, waiting nor
    stolen), the last from os.times(). None where /proc/stat cannot be read (not Linux)."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[:1] != ["cpu"] or len(fields) < 9:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (float(v) for v in fields[1:9])   # guest is in user
    tick = os.sysconf("SC_CLK_TCK")
    total = user + nice + system + idle + iowait + irq + softirq + steal
    own = os.times()
    return steal / tick, (total - idle - iowait - steal) / tick, total / tick, own.user + own.system


def host_shares(before, after) -> dict[str, float] | None:
    """What the machine's CPU time between two `host_sample`s went to, as fractions of it (all cores): `stolen` by
    the hypervisor and `others`, busy but not this process's own threads (other processes, its children,
    interrupts; /proc/stat counts in clock ticks, so a share is ±1 tick, and a negative one is read as 0). None
    when no tick passed between the two. Either share large beside a slow epoch points at the host."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    total = after[2] - before[2]
    others = (after[1] - before[1]) - (after[3] - before[3])
    return {"stolen": (after[0] - before[0]) / total, "others": max(others, 0.0) / total}


def interleave(epochs: dict[str, Callable], batches_of: Callable[[int], np.ndarray], rounds: int,
               clock=time.perf_counter, sample=host_sample, settle: float = SETTLE_SECONDS,
               sleep=time.sleep) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Time `rounds` rounds; in round r every contender runs one epoch on `batches_of(r)`, in turn
    (A B C A B C ...), so that all of them see the host's drift alike. Each epoch starts `settle` seconds
    after the one before ends, untimed, so that it does not share the cores with the threads of the one
    before still spinning (OpenBLAS's burn ≈ 0.12 CPU s after each sgemm round here). Returns
    ({name: [seconds per round]}, {name: [host_shares of each of those epochs]})."""
    seconds = {name: [] for name in epochs}
    host = {name: [] for name in epochs}
    for r in range(rounds):
        batches = batches_of(r)
        for name, epoch in epochs.items():
            sleep(settle)
            before, t0 = sample(), clock()
            epoch(batches)
            seconds[name].append(clock() - t0)
            host[name].append(host_shares(before, sample()))
    return seconds, host


def ratios(medians: dict[str, float], reference: str = REFERENCE) -> dict[str, float]:
    """{"other/reference": median(other) / median(reference)} for every other contender."""
    return {f"{name}/{reference}": m / medians[reference] for name, m in medians.items() if name != reference}


def round_ratios(seconds: dict[str, list[float]], reference: str = REFERENCE) -> dict[str, dict]:
    """{"other/reference": {"per_round": [...], "median", "min", "max"}}: each other contender's epoch over the
    reference's epoch of the same round. The two ran minutes apart at most, so the host's drift between rounds,
    which the ratio of the medians mixes in, cancels round by round."""
    out = {}
    for name, times in seconds.items():
        if name != reference:
            per_round = [t / r for t, r in zip(times, seconds[reference], strict=True)]
            out[f"{name}/{reference}"] = {"per_round": per_round, "median": statistics.median(per_round),
                                          "min": min(per_round), "max": max(per_round)}
    return out


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


def _check_peers(names, cfg):
    """Fail before any work if a peer is unknown or repeated, torch is not installed, or the config asks for
    what the peers cannot run; returns the torch module, or None when no peer is asked for."""
    if not names:
        return None
    for name in names:
        if name not in peers.PEERS:
            raise ValueError(f"--peer {name!r}: unknown peer (choose from {', '.join(peers.PEERS)})")
    if len(set(names)) < len(names):
        raise ValueError(f"--peer: name each peer once, got {', '.join(names)}")
    torch = peers.import_torch()
    t = cfg.train
    if t.optimizer != "sgd" or t.momentum or t.schedule != "constant":
        raise ValueError(f"--peer {names[0]} runs plain SGD with a constant alpha; the config asks for "
                         f"optimizer={t.optimizer!r}, momentum={t.momentum}, schedule={t.schedule!r}")
    if cfg.model.output != "sigmoid" or any(options(layer) for layer in cfg.model.layers):
        raise ValueError(f"--peer {names[0]} builds the toolbox's net (sigmoid convolutions, mean pooling, sigmoid "
                         "output); this config has other layer options")
    return torch


def sgemm(n: int = SGEMM_N, reps: int = SGEMM_REPS) -> Callable:
    """`product(_)`: `reps` float32 n×n matrix products by numpy (2·n³·reps FLOPs), timed like an epoch."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    c = np.empty((n, n), np.float32)

    def product(_batches=None):
        for _ in range(reps):
            np.matmul(a, b, out=c)
        return c

    return product


def blas_info() -> dict:
    """Which BLAS numpy runs (threadpoolctl, where installed) and the variables that steer it."""
    info = {"variables": {name: os.environ.get(name) for name in BLAS_VARIABLES}}
    try:
        import threadpoolctl
    except ImportError:
        return {**info, "libraries": None, "note": "threadpoolctl is not installed: the kernel is not known"}
    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads")
    return {**info, "libraries": [{k: lib.get(k) for k in keys} | {"file": Path(lib["filepath"]).name}
                                  for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]}


def cpu_info(cpuinfo: str | None = None) -> dict:
    """The processor's name, [family, model, stepping], the vector extensions of VECTOR_EXTENSIONS that
    /proc/cpuinfo lists for it, and its cache size, from the first processor's entry."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"processor": fields.get("model name") or platform.processor(),
            "family_model_stepping": [fields.get("cpu family"), fields.get("model"), fields.get("stepping")],
            "vector_extensions": [f for f in VECTOR_EXTENSIONS if f in flags],
            "cache_size": fields.get("cache size")}


def _loadavg():
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run(config_path=None, rounds: int = 3, baseline: bool = True, peer_names=(), float64: bool = False) -> dict:
    """Benchmark as described in the module docstring; returns the record (a JSON-able dict)."""
    cfg = config_mod.load(config_path or DEFAULT_CONFIG)
    if rounds < 1:
        raise ValueError(f"--epochs {rounds}: the number of timed rounds must be at least 1")
    peer_names = list(peer_names)
    torch = _check_peers(peer_names, cfg)
    dtype = use_dtype("float64" if float64 else cfg.train.dtype)
    dataset, source = _load(cfg)
    x, y, x_test = prepare_arrays(dataset, dtype)
    n, batchsize = x.shape[0], cfg.train.batchsize
    if batchsize > n:
        raise ValueError(f"train.batchsize = {batchsize} is larger than the {n} training samples")
    steps = n // batchsize
    net, optimizer, opt_state, order_key = initial_state(cfg, x.shape[1:], dataset.n_classes, steps, dtype)

    compile_seconds, epochs = {}, {}
    mesh = parallel.batch_mesh(batchsize)
    native_patches.available(dtype)       # the first build of jaxcnn's C++ (about 5 s) is not jaxcnn's compile time
    if mesh is not None:
        spin_allreduce.available()
    compile_seconds["jaxcnn"], epochs["jaxcnn"] = jax_contender(
        make_epoch_fn(optimizer, donate=False, mesh=mesh), net, opt_state, *parallel.replicated((x, y), mesh),
        steps, batchsize)
    if baseline:
        compile_seconds["baseline"], epochs["baseline"] = jax_contender(
            make_epoch_fn(optimizer, donate=False, grad_fn=_baseline_grad, gather_per_step=True, options=None),
            net, opt_state, x, y, steps, batchsize)
    for name in peer_names:
        _, epochs[name] = peers.torch_trainer(net, x, y, cfg.train.alpha, threads=os.cpu_count(),
                                              compile=name == "torch-compile")
        compile_seconds[name] = None                 # torch.compile compiles in the warm-up round (warmup_seconds)
    contenders = list(epochs)

    def evaluations(_batches):
        for _ in range(EVAL_REPS):
            evaluate(net, x_test, dataset.test_labels)

    load_before = _loadavg()
    seconds, host = interleave({**epochs, "sgemm": sgemm(), "evaluate": evaluations},   # the warm-up compiles it
                               lambda r: batch_matrix(epoch_order(order_key, r, n), batchsize), 1 + rounds)
    load_after = _loadavg()
    sgemm_gflops = [2 * SGEMM_N ** 3 * SGEMM_REPS / s / 1e9 for s in seconds.pop("sgemm")[1:]]
    eval_per_round = [s / EVAL_REPS for s in seconds.pop("evaluate")[1:]]
    eval_median = statistics.median(eval_per_round)
    warmup = {name: s[0] for name, s in seconds.items()}
    seconds = {name: s[1:] for name, s in seconds.items()}
    host = {name: shares[1:] for name, shares in host.items()}
    medians = {name: statistics.median(s) for name, s in seconds.items()}

    per_image = flops_per_image(net.layers, x.shape[1:], dataset.n_classes)
    rate = statistics.median(sgemm_gflops) * 1e9
    epoch_flops = (per_image["forward"] + per_image["backward"]) * steps * batchsize
    eval_flops = per_image["forward"] * int(x_test.shape[0])
    floor = {"sgemm": f"numpy float32 {SGEMM_N}x{SGEMM_N} @ {SGEMM_N}x{SGEMM_N}, {SGEMM_REPS} products a round",
             "sgemm_gflops_per_round": sgemm_gflops, "sgemm_gflops": rate / 1e9, "blas": blas_info(),
             "flops_rule": FLOPS_RULE, "flops_per_image": per_image, "epoch_gflop": epoch_flops / 1e9,
             "floor_seconds": epoch_flops / rate,
             "fraction": {name: epoch_flops / rate / m for name, m in medians.items()},
             "eval_gflop": eval_flops / 1e9, "eval_floor_seconds": eval_flops / rate,
             "eval_fraction": eval_flops / rate / eval_median}
    cpu = cpu_info()
    return {
        "net": describe(net.layers), "dataset": dataset.name, "data_source": source, "n_train": n,
        "n_test": int(x_test.shape[0]), "batchsize": batchsize, "steps_per_epoch": steps,
        "dtype": np.dtype(dtype).name, "rounds": rounds, "contenders": contenders,
        "batch_devices": parallel.mesh_size(mesh),
        **({"all_reduce": parallel.gradient_all_reduce(net, mesh), "spin_allreduce": spin_allreduce.status()}
           if mesh is not None else {}),
        "phase_patches": native_patches.status(),
        "compile_seconds": compile_seconds, "warmup_seconds": warmup, "epoch_seconds": seconds,
        "seconds_per_epoch": medians, "ratios": ratios(medians), "round_ratios": round_ratios(seconds),
        "images_per_second": {name: steps * batchsize / m for name, m in medians.items()},
        "eval_seconds": eval_median, "eval_seconds_per_round": eval_per_round, "eval_reps": EVAL_REPS, "floor": floor,
        "loadavg": {"before": load_before, "after": load_after}, "host_shares": host, "settle_seconds": SETTLE_SECONDS,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": cpu["processor"], "cpu": cpu,
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "compiler_options": xla_options.for_dtype(dtype),
        **({"torch": torch.__version__, "torch_threads": torch.get_num_threads()} if torch is not None else {}),
    }


DESCRIPTIONS = {"jaxcnn": "polyphase / im2col + delta rule, batch split over the cores, jaxcnn's compiler options",
                "baseline": "autodiff through NCHW lax.conv, per-step gather, default XLA options",
                "torch": "PyTorch eager, nn.Conv2d/AvgPool2d/Linear, torch.optim.SGD",
                "torch-compile": "the torch peer's training step through torch.compile (Inductor, C++)"}


def format_table(r: dict) -> str:
    """The record as aligned `name  value` rows, one row per contender."""
    versions = f"jax {r['jax']}, jaxlib {r['jaxlib']}" + (f", torch {r['torch']} ({r['torch_threads']} threads)"
                                                         if "torch" in r else "")
    rows = [("net", f"{r['net']}  ({r['dataset']}, {r['n_train']} images, batch {r['batchsize']}, {r['dtype']})"),
            ("device", f"{r['platform']} {r['device']}, {r['cpu_count']} cores, {r['processor']}"),
            ("versions", f"{versions}, XLA_FLAGS={r['xla_flags'] or '(none)'}"),
            ("compiler options", ", ".join(f"{k}={v!r}" for k, v in r["compiler_options"].items()) or "(none)"),
            ("rounds", f"{r['rounds']} timed after 1 warm-up; each round runs " + " ".join(r["contenders"])),
            ("jaxcnn's batches", f"split over {r['batch_devices']} CPU devices (jaxcnn.parallel)"
             + (f", all-reduce by {r['all_reduce']}" if "all_reduce" in r else "")   # records before the sixth session lack it
             if r["batch_devices"] > 1 else "on one device")]
    if "phase_patches" in r:                                # records before the seventh session lack it
        rows.append(("patch matrices", r["phase_patches"]))
    vectors = " ".join(r["cpu"]["vector_extensions"]) or "(none listed)"
    rows.insert(2, ("vector extensions", vectors))
    for name in r["contenders"]:
        compile_s = r["compile_seconds"][name]
        compiled = ("compiled in its warm-up" if name == "torch-compile" else "no compile (eager)") \
            if compile_s is None else f"compile {compile_s:.2f} s"
        epochs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"][name])
        rows.append((name, f"{r['seconds_per_epoch'][name]:.2f} s/epoch (median of {epochs}; warm-up "
                           f"{r['warmup_seconds'][name]:.2f}); {r['images_per_second'][name]:,.0f} images/s; "
                           f"{compiled}  [{DESCRIPTIONS[name]}]"))
    rows += [(ratio, f"{value:.2f}  (ratio of the medians); per round {rr['min']:.2f} – {rr['max']:.2f}, "
                     f"median {rr['median']:.2f}")
             for (ratio, value), rr in zip(r["ratios"].items(), r["round_ratios"].values(), strict=True)]
    f = r["floor"]
    blas = f["blas"]["libraries"]
    kernel = ", ".join(f"{lib['internal_api']} {lib['version']} {lib['architecture']} ({lib['num_threads']} threads)"
                       for lib in blas) if blas else f["blas"].get("note", "unknown")
    forced = ", ".join(f"{k}={v}" for k, v in f["blas"]["variables"].items() if v is not None)
    rows += [("sgemm floor", f"{f['sgemm_gflops']:.0f} GFLOP/s (median of "
                             f"{', '.join(f'{g:.0f}' for g in f['sgemm_gflops_per_round'])}; {kernel}"
                             f"{'; ' + forced if forced else ''}), so the epoch's {f['epoch_gflop']:.1f} GFLOP "
                             f"take {f['floor_seconds']:.3f} s"),
             ("fraction of floor", ", ".join(f"{name} {v:.1%}" for name, v in f["fraction"].items())
              + f"; eval {f['eval_fraction']:.1%} ({f['eval_gflop']:.2f} GFLOP)")]
    # records b - d of the fifth session predate "eval_reps" (they ran 10); a and older ones timed evaluation alone
    per_round = ", ".join(f"{v:.3f}" for v in r.get("eval_seconds_per_round", []))
    rows += [(f"eval {r['n_test']} images", f"{r['eval_seconds']:.3f} s" + (f" (median of {per_round}; each the mean of "
                                                                           f"{r.get('eval_reps', 10)} in its round)" if per_round else "")),
             ("peak memory", f"{r['peak_memory_mb']:.0f} MB (max RSS)"),
             ("load average", f"{r['loadavg']['before']} before the rounds, {r['loadavg']['after']} after")]
    if "host_shares" in r:                                          # records before the fifth session lack it
        rows += [("host, timed epochs", _host_line(r["host_shares"]))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _host_line(host: dict[str, list]) -> str:
    """The largest share of the machine's CPU time that was stolen, and that other processes took, during
    any timed epoch of each contender."""
    parts = []
    for name, shares in host.items():
        known = [sh for sh in shares if sh is not None]
        if known:
            parts.append(f"{name} {max(sh['stolen'] for sh in known):.1%} / {max(sh['others'] for sh in known):.1%}")
    return ("at most stolen / taken by other processes: " + ", ".join(parts)) if parts else "not measured (no /proc/stat)"


def main(config_path=None, epochs: int = 3, as_json: bool = False, baseline: bool = True, peer_names=(),
         float64: bool = False) -> int:
    """Run the benchmark and print its record: a table, or one JSON object with `as_json`."""
    result = run(config_path, rounds=epochs, baseline=baseline, peer_names=peer_names, float64=float64)
    print(json.dumps(result) if as_json else format_table(result))
    return 0
