"""Training checkpoints: everything needed to continue a run bit for bit.

One file per checkpoint, `checkpoints/ckpt-E{epoch:04d}-S{step:06d}.npz` (epoch = whole epochs
done, step = steps done inside the next one), written atomically (see `fileio`), the newest
`keep` kept. Arrays: `params/i` and `opt/i` (the leaves of the net and optimizer state in
pytree order), `key` (the run's PRNG key data), `losses` (every step so far), `rl` (the rL
history). Metadata: the counters, the resolved config (TOML), the per-epoch metrics so far.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .fileio import load_npz, save_npz

FORMAT = "jaxcnn-checkpoint"
_NAME = re.compile(r"^ckpt-E(\d{4,})-S(\d{6,})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the run."""


class ArchitectureMismatch(CheckpointError):
    """A readable checkpoint of another architecture or optimizer: resuming from an older one will not help."""


@dataclasses.dataclass
class TrainState:
    """The whole state of a run between two compiled chunks of work."""

    net: object
    opt_state: object
    key: jax.Array
    epoch: int                  # whole epochs completed
    step: int                   # steps completed inside epoch `epoch` (0 at a boundary)
    losses: np.ndarray          # every step's loss so far
    rl: np.ndarray              # the toolbox's rL history (len = steps + 1 once started)
    metrics: list               # one dict per completed epoch
    config_toml: str


def directory(out) -> Path:
    return Path(out) / "checkpoints"


def save(out, state: TrainState, keep: int) -> Path:
    folder = directory(out)
    path = folder / f"ckpt-E{state.epoch:04d}-S{state.step:06d}.npz"
    arrays = {f"params/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state.net))}
    arrays.update({f"opt/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state.opt_state))})
    arrays.update(key=np.asarray(jax.random.key_data(state.key)), losses=state.losses, rl=state.rl)
    meta = {"format": FORMAT, "version": 1, "epoch": state.epoch, "step": state.step,
            "metrics": state.metrics, "config": state.config_toml}
    save_npz(path, arrays, meta)
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


def _restore_leaves(template, arrays, prefix, path):
    leaves, treedef = jax.tree.flatten(template)
    stored = sorted((k for k in arrays if k.startswith(prefix + "/")), key=lambda k: int(k.split("/")[1]))
    if len(stored) != len(leaves):
        raise ArchitectureMismatch(f"{path}: checkpoint from another architecture or optimizer: "
                              f"{len(stored)} {prefix} arrays, this run has {len(leaves)}")
    restored = []
    for key, leaf in zip(stored, leaves):
        value = arrays[key]
        if value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise ArchitectureMismatch(f"{path}: checkpoint from another architecture: {key} is {value.dtype}"
                                  f"{list(value.shape)}, this run needs {leaf.dtype}{list(leaf.shape)}")
        restored.append(jnp.asarray(value))
    return jax.tree.unflatten(treedef, restored)


def load(path, net_template, opt_template) -> TrainState:
    """Read one checkpoint, fitting its arrays into the given pytree templates."""
    try:
        arrays, meta = load_npz(path)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a jaxcnn checkpoint")
    return TrainState(
        net=_restore_leaves(net_template, arrays, "params", path),
        opt_state=_restore_leaves(opt_template, arrays, "opt", path),
        key=jax.random.wrap_key_data(jnp.asarray(arrays["key"])),
        epoch=int(meta["epoch"]), step=int(meta["step"]),
        losses=arrays["losses"], rl=arrays["rl"], metrics=list(meta["metrics"]), config_toml=meta["config"])


def stored_config(path) -> str:
    """The resolved config TOML saved in a checkpoint."""
    try:
        _, meta = load_npz(path)
        return meta["config"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({err})") from None
