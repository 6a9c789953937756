"""Training checkpoints: everything needed to continue a run bit for bit.

One file per checkpoint, `checkpoints/ckpt-E{epoch:04d}-S{step:06d}.npz` (epoch = whole epochs
done, step = steps done inside the next one), written atomically (see `fileio`), the newest
`keep` kept. Arrays: one per leaf of the net and of the optimizer state, named by its tree path
(`params.params['conv'][0]['k']`, `opt.inner_state[0].trace.params['ffW']`, ...), so a leaf can only
load into the leaf of the same name; `key` (the key whose fold_in(epoch) orders each epoch),
`losses` (every step so far), `rl` (the rL history). Metadata: the counters, the resolved config
(TOML), the per-epoch metrics so far, and a SHA-256 of all of it (`fileio.content_digest`).

Reading verifies that checksum: a checkpoint whose bytes changed after it was written (a flipped bit,
a truncated copy, another file under its name) is a `DamagedFile`, and `newest_good` skips it,
naming it, in favour of the newest checkpoint that is whole.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .fileio import DamagedFile, load_npz, reading, save_npz, verify_checksum

FORMAT, VERSION = "jaxcnn-checkpoint", 3           # 3: with a checksum
_NAME = re.compile(r"^ckpt-E(\d{4,})-S(\d{6,})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the run."""


class ArchitectureMismatch(CheckpointError):
    """A readable checkpoint of another architecture or optimizer: resuming from an older one will not help."""


class DamagedCheckpoint(CheckpointError, DamagedFile):
    """A checkpoint file that is unreadable or whose contents do not match its checksum."""


FILE = "jaxcnn checkpoint"


@dataclasses.dataclass
class TrainState:
    """The whole state of a run between two compiled chunks of work."""

    net: object
    opt_state: object
    key: jax.Array              # orders the epochs: epoch e uses fold_in(key, e)
    epoch: int                  # whole epochs completed
    step: int                   # steps completed inside epoch `epoch` (0 at a boundary)
    losses: np.ndarray          # every step's loss so far
    rl: np.ndarray              # the toolbox's rL history (len = steps + 1 once started)
    metrics: list               # one dict per completed epoch
    config_toml: str


def directory(out) -> Path:
    return Path(out) / "checkpoints"


def save(out, state: TrainState, keep: int, batch_devices: int = 1) -> Path:
    """Write `state` as the newest checkpoint (keeping the `keep` newest); `batch_devices` records how many
    devices each batch was split over (`jaxcnn.parallel`), which a resume needs to go on bit for bit."""
    folder = directory(out)
    path = folder / f"ckpt-E{state.epoch:04d}-S{state.step:06d}.npz"
    arrays = {**_named_leaves("params", state.net), **_named_leaves("opt", state.opt_state)}
    arrays.update(key=np.asarray(jax.random.key_data(state.key)), losses=state.losses, rl=state.rl)
    meta = {"format": FORMAT, "version": VERSION, "epoch": state.epoch, "step": state.step,
            "metrics": state.metrics, "config": state.config_toml, "batch_devices": batch_devices}
    save_npz(path, arrays, meta, checksum=True)
    for old in list_checkpoints(out)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(out) -> list[Path]:
    """Checkpoint files in order, oldest first (temporary files of interrupted writes are ignored)."""
    folder = directory(out)
    if not folder.is_dir():
        return []
    found = [(tuple(map(int, m.groups())), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _named_leaves(prefix: str, tree) -> dict[str, np.ndarray]:
    """The leaves of `tree`, each named `prefix` + its tree path."""
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _restore_leaves(template, arrays, prefix, path):
    """`template` with every leaf replaced by the stored array of the same name, shape and dtype."""
    names = list(_named_leaves(prefix, template))
    stored = {k for k in arrays if k.startswith(prefix + ".") or k.startswith(prefix + "[")}
    missing, extra = [n for n in names if n not in stored], sorted(stored - set(names))
    if missing or extra:
        raise ArchitectureMismatch(f"{path}: checkpoint from another architecture or optimizer: "
                                   + "; ".join(filter(None, [missing and f"no {', '.join(missing[:3])}",
                                                             extra and f"unexpected {', '.join(extra[:3])}"])))
    restored = []
    for name, leaf in zip(names, jax.tree.leaves(template)):
        value = arrays[name]
        if value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise ArchitectureMismatch(f"{path}: checkpoint from another architecture: {name} is {value.dtype}"
                                       f"{list(value.shape)}, this run needs {leaf.dtype}{list(leaf.shape)}")
        restored.append(jnp.asarray(value))
    return jax.tree.unflatten(jax.tree.structure(template), restored)


def read(path) -> tuple[dict[str, np.ndarray], dict]:
    """One checkpoint's arrays and metadata, its checksum verified (DamagedCheckpoint otherwise); a
    checkpoint of another format version is an ArchitectureMismatch."""
    arrays, meta = load_npz(path, FILE, error=DamagedCheckpoint)
    if meta.get("format") != FORMAT:
        raise DamagedCheckpoint(path, f"not a {FILE} (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ArchitectureMismatch(f"{path}: checkpoint format version {meta.get('version')}, this jaxcnn reads "
                                   f"version {VERSION} (start the run afresh)")
    meta = verify_checksum(path, arrays, meta, FILE, DamagedCheckpoint)
    with reading(path, FILE, DamagedCheckpoint):
        for name, kind in (("epoch", int), ("step", int), ("metrics", list), ("config", str)):
            if type(meta.get(name)) is not kind:
                raise DamagedCheckpoint(path, f"metadata {name} is {meta.get(name)!r}, expected {kind.__name__}")
        if meta["epoch"] < 0 or meta["step"] < 0:
            raise DamagedCheckpoint(path, f"negative counters: epoch {meta['epoch']}, step {meta['step']}")
        devices = meta.setdefault("batch_devices", 1)            # checkpoints from before the split: one device
        if type(devices) is not int or devices < 1:
            raise DamagedCheckpoint(path, f"metadata batch_devices is {devices!r}, expected a positive int")
        for name in ("key", "losses", "rl"):
            if name not in arrays:
                raise DamagedCheckpoint(path, f"missing array {name}")
    return arrays, meta


def stored_config(path) -> str:
    """The resolved config TOML saved in a checkpoint (its checksum verified)."""
    return read(path)[1]["config"]


def newest_good(out, warn=print) -> tuple[Path, dict, dict]:
    """(path, arrays, meta) of the newest checkpoint in `out` that reads back whole; each damaged newer one
    is named through `warn`, one line each. None whole is one CheckpointError naming every one and why."""
    damaged = []
    for path in reversed(list_checkpoints(out)):
        try:
            arrays, meta = read(path)
        except DamagedCheckpoint as err:
            damaged.append(err)
            continue
        for err in damaged:
            warn(f"skipping damaged checkpoint {err}")
        return path, arrays, meta
    raise CheckpointError(f"--resume {out}: no good checkpoint to resume from, start afresh with --overwrite ("
                          + "; ".join(str(err) for err in damaged) + ")")


def set_aside(path) -> Path:
    """Rename a damaged checkpoint to `<name>.damaged`: kept for inspection, no longer listed or pruned in
    place of a good one."""
    target = Path(path).with_name(Path(path).name + ".damaged")
    Path(path).replace(target)
    return target


def restore(path, arrays, meta, net_template, opt_template) -> TrainState:
    """A TrainState from a checkpoint's arrays and metadata (`read`), fitted into the given pytree templates."""
    return TrainState(
        net=_restore_leaves(net_template, arrays, "params", path),
        opt_state=_restore_leaves(opt_template, arrays, "opt", path),
        key=jax.random.wrap_key_data(jnp.asarray(arrays["key"])),
        epoch=meta["epoch"], step=meta["step"],
        losses=arrays["losses"], rl=arrays["rl"], metrics=list(meta["metrics"]), config_toml=meta["config"])


def load(path, net_template, opt_template) -> TrainState:
    """Read one checkpoint, fitting its arrays into the given pytree templates."""
    return restore(path, *read(path), net_template, opt_template)
