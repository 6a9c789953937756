"""A training run from a config: data, net, compiled epochs, checkpoints and the run's records.

The output folder receives `config.toml` (resolved), `metrics.jsonl` (one object per epoch, with
`delta_rms`: the RMS of each layer's delta-rule δ on a fixed batch), `kernels.npz` (the first two 'c'
layers' kernels at each epoch's end, for `jaxcnn report`), `checkpoints/`, and at the end `summary.json`, `loss.png`, `misclassified.png` and `net.npz`.
Each epoch's permutation comes from `fold_in(order_key, epoch)`, so a resumed run replays
exactly the orders an uninterrupted one would have used.
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import time
import tomllib
from pathlib import Path

import jax
import jaxlib
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from . import checkpoint, config as config_mod, data as data_mod, fileio, native_patches, netfile, parallel, plots, records
from .checkpoint import TrainState
from .fileio import atomic_write_text
from .layers import describe
from .net import count_params, init_net
from .numerics import use_dtype
from .optimizers import OptimizerSpec, init_state, spec_for
from .train import batch_matrix, evaluate, make_epoch_fn

RUN_FILES = ("config.toml", "metrics.jsonl", "summary.json", "net.npz", "loss.png", "misclassified.png", "kernels.npz",
             "report.html")
KERNEL_LAYERS = 2           # kernels.npz keeps the first two 'c' layers' kernels
DELTA_BATCH = 10            # delta_rms is measured on the first DELTA_BATCH training images


class RunError(ValueError):
    """The run cannot start: its output folder or resume request does not fit."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left in place."""


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    existing = [name for name in (*RUN_FILES, "checkpoints") if (out / name).exists()]
    if resume:
        if not checkpoint.list_checkpoints(out):
            raise RunError(f"--resume {out}: no checkpoint there to resume from")
        return
    if existing and not overwrite:
        raise RunError(f"{out} already holds a run ({', '.join(existing)}); "
                       f"use --resume to continue it or --overwrite to replace it")
    for name in existing:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def load_data(cfg):
    """The configured dataset, cut to data.n_train / data.n_test."""
    dataset = data_mod.load_dataset(cfg.data.dataset, cfg.data.dir or None)
    return dataset.subset(cfg.data.n_train or None, cfg.data.n_test or None)


def with_channels(images):
    """(N, H, W) -> (N, H, W, 1); (N, H, W, C) unchanged."""
    return images if images.ndim == 4 else images[..., None]


def prepare_arrays(dataset, dtype):
    """Training images/targets and test images as device arrays: (N, H, W, C) floats in [0, 1], one-hot targets."""
    x = jnp.asarray(data_mod.to_float(with_channels(dataset.train_images), dtype))
    y = jnp.asarray(data_mod.one_hot(dataset.train_labels, dataset.n_classes, dtype))
    x_test = jnp.asarray(data_mod.to_float(with_channels(dataset.test_images), dtype))
    return x, y, x_test


def optimizer_spec(cfg, steps: int) -> OptimizerSpec:
    """The static part of the run's optimizer; a decaying schedule runs over all `numepochs · steps` steps."""
    return spec_for(cfg.train.optimizer, cfg.train.schedule, cfg.train.numepochs * steps)


def initial_state(cfg, image_shape, n_classes, steps, dtype):
    """(net, optimizer, opt_state, order_key) of a run: the seed's key split into the initial weights'
    key and the key whose fold_in(epoch) orders each epoch. alpha and momentum are data in opt_state."""
    init_key, order_key = jax.random.split(jax.random.key(cfg.train.seed))
    net = init_net(init_key, cfg.model.layers, image_shape, n_classes, dtype, output=cfg.model.output,
                   init=cfg.model.init)
    spec = optimizer_spec(cfg, steps)
    return net, spec.transformation(), init_state(spec, net, cfg.train.alpha, cfg.train.momentum), order_key


def epoch_order(order_key, epoch: int, n: int) -> np.ndarray:
    """The permutation of epoch `epoch` (0-based)."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(order_key, epoch), n))


def delta_rms(net, images, targets) -> dict[str, float]:
    """RMS of each layer's δ (the delta rule of `jaxcnn.verification.backprop`, float64) on one batch,
    keyed "layer L" (1-based, the toolbox's numbering), plus "od" (the output delta): how the
    backpropagated signal grows or fades through the net as it trains."""
    from .verification import backprop as bp
    from . import toolbox

    tb = toolbox.to_toolbox(net, with_options=True)
    result = bp.cnnbp(bp.cnnff(tb, toolbox.toolbox_input(images)), np.asarray(targets, np.float64).T)
    rms = {f"layer {l}": float(np.sqrt(np.mean(np.concatenate([np.ravel(d) for d in layer["d"]]) ** 2)))
           for l, layer in enumerate(result["layers"], start=1) if layer.get("d")}
    return {**rms, "od": float(np.sqrt(np.mean(result["od"] ** 2)))}


def record_kernels(out, net, epoch: int) -> None:
    """Append the first KERNEL_LAYERS 'c' layers' kernels after epoch `epoch` (1-based) to out/kernels.npz,
    atomically; entries from epoch `epoch` on (a resumed run redoing an epoch) are replaced."""
    path = Path(out) / "kernels.npz"
    arrays, epochs = records.read_kernels(path) if path.exists() else ({}, [])
    keep = [i for i, e in enumerate(epochs) if e < epoch]
    new = {f"conv{i}": np.asarray(p["k"], np.float64)[None] for i, p in enumerate(net.params["conv"][:KERNEL_LAYERS], 1)}
    arrays = {name: np.concatenate([arrays[name][keep], k]) if name in arrays and keep else k for name, k in new.items()}
    fileio.save_npz(path, arrays, {"epochs": [epochs[i] for i in keep] + [epoch], "layout": records.KERNELS_LAYOUT})


def warn_on_stderr(message: str) -> None:
    print(f"jaxcnn: warning: {message}", file=sys.stderr)


def train(cfg, out, *, resume=False, overwrite=False, force=False, progress=True, log=print,
          warn=warn_on_stderr) -> dict:
    """Train as configured, writing everything into `out`; returns the summary dict.

    A resume continues from the newest checkpoint whose checksum holds; each damaged newer one is named
    through `warn` and set aside as `<name>.damaged`. Raises RunError / ConfigError / DataError /
    CheckpointError / DamagedFile for bad input (before anything is written) and TrainingDiverged
    when a loss turns non-finite.
    """
    out = Path(out)
    dtype = use_dtype(cfg.train.dtype)
    _check_out(out, resume, overwrite)
    config_toml = config_mod.dumps(cfg)
    if resume:
        resume_path, resume_arrays, resume_meta = checkpoint.newest_good(out, warn)
        if (out / "kernels.npz").exists():
            records.read_kernels(out / "kernels.npz")         # the run extends it: damaged, it stops us here
        stored = config_mod.from_dict(tomllib.loads(resume_meta["config"]))
        changed = config_mod.diff(stored, cfg)
        if changed and not force:
            raise RunError(f"--resume {out}: the config differs from the checkpointed run in "
                           f"{', '.join(changed)} (use --force to resume anyway)")

    dataset = load_data(cfg)
    n = len(dataset.train_labels)
    batchsize = cfg.train.batchsize
    if batchsize > n:
        raise RunError(f"train.batchsize = {batchsize} is larger than the {n} training samples")
    x, y, x_test = prepare_arrays(dataset, dtype)
    steps = n // batchsize
    net, optimizer, opt_state, order_key = initial_state(cfg, x.shape[1:], dataset.n_classes, steps, dtype)
    state = TrainState(net, opt_state, order_key, 0, 0, np.zeros(0, dtype), np.zeros(0, dtype), [], config_toml)
    if resume:
        fresh_opt_state = state.opt_state
        state = checkpoint.restore(resume_path, resume_arrays, resume_meta, state.net, state.opt_state)
        listed = checkpoint.list_checkpoints(out)
        for damaged in listed[listed.index(resume_path) + 1:]:      # so that pruning never keeps them over good ones
            checkpoint.set_aside(damaged)
        for folder in (out, checkpoint.directory(out)):          # leftovers of writes cut short by a crash
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink()
        state.config_toml = config_toml
        # hyperparameters come from the config (they differ only under --force), the rest from the checkpoint;
        # the epochs' orders keep coming from the run's own key
        state.opt_state.hyperparams.update(fresh_opt_state.hyperparams)
        order_key = state.key
        log(f"resuming from {resume_path.name}: epoch {state.epoch + 1}, step {state.step}"
            + (" (damaged newer checkpoints set aside as *.damaged)" if listed[-1] != resume_path else ""))
    atomic_write_text(out / "config.toml", config_toml)

    bar = tqdm(total=steps, disable=not progress, leave=False, dynamic_ncols=True)
    offset = [0]

    def show(t):
        bar.n = offset[0] + int(t)
        bar.refresh()

    mesh = parallel.batch_mesh(batchsize)
    batch_devices = parallel.mesh_size(mesh)
    if resume and resume_meta["batch_devices"] != batch_devices:
        warn(f"{resume_path.name} was trained with each batch split over {resume_meta['batch_devices']} device(s), "
             f"this process splits it over {batch_devices}: the run goes on the same to rounding, not bit for bit "
             f"(JAX_NUM_CPU_DEVICES={resume_meta['batch_devices']} matches it where the batch divides)")
    x, y = parallel.replicated((x, y), mesh)
    epoch_fn = make_epoch_fn(optimizer, progress=show if progress else None, mesh=mesh)
    compiled, compile_seconds = {}, 0.0
    chunk = cfg.checkpoint.every_steps or steps
    seconds, result = [], None
    log(f"{describe(net.layers)} net ({count_params(net):,} parameters), {dataset.name}: {n} training / "
        f"{len(dataset.test_labels)} test images, {steps} steps of {batchsize} per epoch, {np.dtype(dtype).name}, "
        f"{jax.devices()[0].platform}"
        + (f", each batch split over {batch_devices} devices, all-reduce: {parallel.gradient_all_reduce(net, mesh)}"
           if mesh is not None else "") + f", patch matrices: {native_patches.status()}")

    while state.epoch < cfg.train.numepochs:
        epoch = state.epoch
        batches = batch_matrix(epoch_order(order_key, epoch, n), batchsize)
        bar.reset(total=steps)
        bar.set_description(f"epoch {epoch + 1}/{cfg.train.numepochs}")
        started = time.perf_counter()
        while state.step < steps:
            rows = jnp.asarray(batches[state.step: state.step + chunk])
            rl0 = jnp.asarray(state.rl[-1] if state.rl.size else np.nan, dtype)
            if rows.shape[0] not in compiled:
                t0 = time.perf_counter()
                compiled[rows.shape[0]] = epoch_fn.lower(state.net, state.opt_state, rl0, x, y, rows).compile()
                compile_seconds += time.perf_counter() - t0
                started += time.perf_counter() - t0
            offset[0] = state.step
            net, opt_state, losses, rls = compiled[rows.shape[0]](state.net, state.opt_state, rl0, x, y, rows)
            losses, rls = np.asarray(losses), np.asarray(rls)
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                bar.close()
                raise TrainingDiverged(
                    f"non-finite loss ({losses[bad[0]]}) at epoch {epoch + 1}, step {state.step + bad[0] + 1}; "
                    f"the last good checkpoint is kept in {checkpoint.directory(out)} "
                    f"(try a smaller train.alpha than {cfg.train.alpha})")
            rl = np.concatenate([state.rl if state.rl.size else losses[:1], rls])
            state = TrainState(net, opt_state, state.key, epoch, state.step + rows.shape[0],
                               np.concatenate([state.losses, losses]), rl, state.metrics, config_toml)
            if state.step < steps:
                checkpoint.save(out, state, cfg.checkpoint.keep, batch_devices)
        seconds.append(time.perf_counter() - started)
        result = evaluate(state.net, x_test, dataset.test_labels)
        epoch_losses = state.losses[-steps:]
        record_kernels(out, state.net, epoch + 1)
        metrics = {"epoch": epoch + 1, "loss_mean": float(epoch_losses.mean()), "loss_last": float(epoch_losses[-1]),
                   "rL": float(state.rl[-1]), "test_error": result.error_rate,
                   "n_misclassified": result.n_misclassified, "seconds": round(seconds[-1], 3),
                   "delta_rms": delta_rms(state.net, x[:DELTA_BATCH], y[:DELTA_BATCH])}
        state = TrainState(state.net, state.opt_state, state.key, epoch + 1, 0, state.losses, state.rl,
                           [*state.metrics, metrics], config_toml)
        checkpoint.save(out, state, cfg.checkpoint.keep, batch_devices)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in state.metrics))
        log(f"epoch {epoch + 1}/{cfg.train.numepochs}  loss {metrics['loss_mean']:.4f}  rL {metrics['rL']:.4f}  "
            f"test error {result.error_rate:.4f} ({result.n_misclassified}/{len(dataset.test_labels)})  "
            f"{seconds[-1]:.1f} s")
    bar.close()

    if result is None:                                   # resumed after the last epoch: nothing was evaluated
        result = evaluate(state.net, x_test, dataset.test_labels)
    netfile.save(out / "net.npz", state.net)
    plots.plot_loss(out / "loss.png", state.rl, steps, f"{describe(net.layers)} on {dataset.name}: rL")
    names = data_mod.CLASS_NAMES.get(dataset.name, [str(c) for c in range(dataset.n_classes)])
    plots.plot_misclassified(out / "misclassified.png", dataset.test_images, dataset.test_labels,
                             result.predictions, result.bad, names)
    summary = {
        "test_error": result.error_rate, "n_misclassified": result.n_misclassified,
        "n_test": len(dataset.test_labels), "n_train": n, "epochs": state.epoch,
        "steps_per_epoch": steps, "final_rL": float(state.rl[-1]),
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        "compile_seconds": round(compile_seconds, 3), "compiled_programs": len(compiled),
        "confusion": result.confusion.tolist(), "dtype": np.dtype(dtype).name,
        "net": describe(net.layers), "n_params": count_params(net), "dataset": dataset.name,
        "data_source": dataset.source, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
        "batch_devices": batch_devices, "python": platform.python_version(),
        **({"all_reduce": parallel.gradient_all_reduce(net, mesh)} if mesh is not None else {}),
        "phase_patches": native_patches.status(),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
