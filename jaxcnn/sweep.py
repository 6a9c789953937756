"""Sweeps: many independent nets trained at once, each exactly as `jaxcnn train` would train it alone on one device.

A sweep config is a normal config plus a `[sweep.<section>]` table of lists; members are the
Cartesian product. Members whose programs are the same (`program_key`: the same net and optimizer
state structure, shapes and dtypes, the same optimizer spec, batch shape and epoch count) train in
one compiled program, each with its own data (initial weights, alpha, momentum, epoch orders):
their parameters are stacked on a leading model axis, which is sharded across every device
(`shard_map` over a 1-D mesh), and across processes and hosts when JAX's multi-process runtime is
initialised (`jax.distributed.initialize`). Other members form their own groups, run one after another.

On each device, the members it holds train "side by side" by default: one independent epoch scan
per member in the same program, which XLA runs concurrently. `batching="vmap"` batches them with
`jax.vmap` instead, which XLA:CPU runs slower (docs/sweeps.md).
"""
from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import config as config_mod, netfile, plots, xla_options
from .fileio import atomic_write_bytes, atomic_write_text
from .layers import describe
from .numerics import use_dtype
from .run import RunError, epoch_order, initial_state, load_data, optimizer_spec, prepare_arrays, with_channels
from .train import batch_matrix, epoch_scan, evaluate


def load(path, overrides=()) -> tuple[config_mod.Config, list[dict], list[config_mod.Config]]:
    """(base config = the first member's, the swept values of each member, each member's config)."""
    raw = config_mod.read_raw(path, overrides)
    table = raw.pop("sweep", None)
    if not isinstance(table, dict) or not table:
        raise config_mod.ConfigError(f"{path}: a sweep needs a [sweep.<section>] table of lists, e.g. "
                                     f"[sweep.train] seed = [0, 1, 2]")
    axes = []
    for section, body in table.items():
        if not isinstance(body, dict):
            raise config_mod.ConfigError(f"[sweep.{section}] must be a table of lists")
        for key, values in body.items():
            if not isinstance(values, list) or not values:
                raise config_mod.ConfigError(f"sweep.{section}.{key}: expected a non-empty list of values")
            if section == "data":
                raise config_mod.ConfigError(f"sweep.{section}.{key}: the data cannot be swept (one dataset per sweep)")
            axes.append((f"{section}.{key}", values))
    values, configs = [], []
    for combo in itertools.product(*(v for _, v in axes)):
        member_raw = {s: dict(b) for s, b in raw.items()}
        assignment = dict(zip((k for k, _ in axes), combo))
        for dotted, value in assignment.items():
            section, key = dotted.split(".", 1)
            member_raw.setdefault(section, {})[key] = value
        configs.append(config_mod.from_dict(member_raw))
        values.append(assignment)
    return configs[0], values, configs


def program_key(cfg, image_shape, n_classes: int, n: int):
    """What must be equal for two members to share one compiled program: the abstract shapes of the
    initial net and optimizer state (tree structure, static fields, shapes, dtypes), the optimizer's
    static spec, and the epoch's batch matrix shape and count. Everything else is data."""
    steps = n // cfg.train.batchsize
    dtype = use_dtype(cfg.train.dtype)
    shapes = jax.eval_shape(lambda: initial_state(cfg, image_shape, n_classes, steps, dtype)[::2])  # (net, opt_state)
    leaves, treedef = jax.tree.flatten(shapes)
    return (str(treedef), tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves), optimizer_spec(cfg, steps),
            (steps, cfg.train.batchsize), cfg.train.numepochs)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def model_mesh() -> Mesh:
    """A 1-D mesh named 'model' over every device of every process."""
    return Mesh(np.array(jax.devices()), ("model",))


def cpu_devices_for(members: int, cores: int) -> int:
    """How many CPU devices to spread `members` nets over: as many as there are cores, but no more than
    divide the members evenly (a padded member would be trained for nothing). One net's step gains
    nothing from a second core on XLA:CPU, while members on separate devices run on separate cores
    (docs/performance.md: 8 seeds on 2 cores, 1.6-2.9x faster on 2 devices than on 1)."""
    return max(d for d in range(1, max(1, min(members, cores)) + 1) if members % d == 0)


BATCHINGS = ("side-by-side", "vmap")


def side_by_side(epoch_fn):
    """`epoch_fn` mapped over the leading axis of (net, opt_state, rl, ·, ·, batches) by calling it once
    per member: independent scans in one program, each with the unbatched ops of a solo run."""
    def members_epoch(nets, opt_states, rl, x, y, batches):
        outs = [epoch_fn(_member(nets, i), _member(opt_states, i), rl[i], x, y, batches[i])
                for i in range(batches.shape[0])]
        return _stack(outs)
    return members_epoch


def train_group(configs, dataset, dtype, log=print, batching="side-by-side"):
    """Train members that share shapes in one program; returns per-member (net, losses, rl, metrics)."""
    cfg0 = configs[0]
    n = len(dataset.train_labels)
    batchsize, epochs = cfg0.train.batchsize, cfg0.train.numepochs
    if batchsize > n:
        raise RunError(f"train.batchsize = {batchsize} is larger than the {n} training samples")
    steps = n // batchsize
    x, y, x_test = prepare_arrays(dataset, dtype)
    states = [initial_state(cfg, x.shape[1:], dataset.n_classes, steps, dtype) for cfg in configs]
    optimizer = states[0][1]              # equal program keys: one update rule; each state holds its own numbers
    nets, opt_states = _stack([s[0] for s in states]), _stack([s[2] for s in states])
    order_keys = [s[3] for s in states]
    m = len(configs)
    mesh = model_mesh()
    devices = mesh.devices.size
    pad = -m % devices                    # pad the model axis to a multiple of the devices with copies of member 0
    if pad:
        nets = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, 0)]), nets)
        opt_states = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, 0)]), opt_states)
    sharded = NamedSharding(mesh, PartitionSpec("model"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def put(tree, sharding):
        """A global array from data every process holds in full (it takes the slices its devices own)."""
        return jax.tree.map(lambda a: jax.make_array_from_callback(np.shape(a), sharding,
                                                                   lambda index, a=np.asarray(a): a[index]), tree)

    nets, opt_states = put(nets, sharded), put(opt_states, sharded)
    x, y = put(x, replicated), put(y, replicated)
    # Each step gathers its batch: the whole-epoch gather of solo runs would hold a copy of the
    # training set per member (docs/sweeps.md).
    epoch_fn = functools.partial(epoch_scan, optimizer=optimizer, gather_per_step=True)
    if batching == "vmap":
        members_epoch = jax.vmap(epoch_fn, in_axes=(0, 0, 0, None, None, 0))
    elif batching == "side-by-side":
        members_epoch = side_by_side(epoch_fn)
    else:
        raise RunError(f"unknown batching {batching!r} ({', '.join(BATCHINGS)})")
    model_axis, whole = PartitionSpec("model"), PartitionSpec()
    program = jax.jit(jax.shard_map(members_epoch, mesh=mesh, in_specs=(model_axis,) * 3 + (whole, whole, model_axis),
                                    out_specs=model_axis),
                      donate_argnums=(0, 1), compiler_options=xla_options.for_dtype(dtype))
    rl = put(np.full((m + pad,), np.nan, dtype), sharded)
    losses, rls, metrics, seconds = [], [], [[] for _ in range(m)], []
    for epoch in range(epochs):
        orders = [epoch_order(k, epoch, n) for k in order_keys] + [epoch_order(order_keys[0], epoch, n)] * pad
        batches = put(np.stack([batch_matrix(o, batchsize) for o in orders]), sharded)
        t0 = time.perf_counter()
        nets, opt_states, epoch_losses, epoch_rls = program(nets, opt_states, rl, x, y, batches)
        epoch_losses = np.asarray(multihost_utils.process_allgather(epoch_losses, tiled=True))
        epoch_rls = np.asarray(multihost_utils.process_allgather(epoch_rls, tiled=True))
        seconds.append(time.perf_counter() - t0)
        rl = put(epoch_rls[:, -1], sharded)
        losses.append(epoch_losses[:m])
        rls.append(epoch_rls[:m])
        local = jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), nets)
        for i in range(m):
            result = evaluate(jax.tree.map(jnp.asarray, _member(local, i)), x_test, dataset.test_labels)
            metrics[i].append({"epoch": epoch + 1, "loss_mean": float(epoch_losses[i].mean()),
                               "rL": float(epoch_rls[i, -1]), "test_error": result.error_rate,
                               "n_misclassified": result.n_misclassified})
        log(f"epoch {epoch + 1}/{epochs}: {m} nets in {seconds[-1]:.2f} s  test errors "
            + " ".join(f"{mm[-1]['test_error']:.4f}" for mm in metrics))
    local = jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), nets)
    out = []
    for i in range(m):
        all_losses = np.concatenate([l[i] for l in losses])
        rl_history = np.concatenate([all_losses[:1], *[r[i] for r in rls]])
        out.append((jax.tree.map(jnp.asarray, _member(local, i)), all_losses, rl_history, metrics[i]))
    return out, seconds


def train(path, out, overrides=(), *, overwrite=False, log=print, batching="side-by-side") -> list[dict]:
    """Run a sweep config; writes members.csv, members.jsonl, loss_curves.png and nets/member-XXX.npz."""
    base, values, configs = load(path, overrides)
    out = Path(out)
    if (out / "members.csv").exists() and not overwrite:
        raise RunError(f"{out} already holds a sweep (members.csv); use --overwrite to replace it")
    dataset = load_data(base)
    image_shape, n = with_channels(dataset.train_images).shape[1:], len(dataset.train_labels)
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        if cfg.train.batchsize > n:
            raise RunError(f"member {i}: train.batchsize = {cfg.train.batchsize} is larger than the {n} training samples")
        groups.setdefault(program_key(cfg, image_shape, dataset.n_classes, n), []).append(i)
    log(f"sweep of {len(configs)} nets in {len(groups)} compiled group(s) on {jax.device_count()} device(s), "
        f"{jax.process_count()} process(es)")
    rows, results = [None] * len(configs), [None] * len(configs)
    for indices in groups.values():
        t0 = time.perf_counter()
        group = [configs[i] for i in indices]
        trained, seconds = train_group(group, dataset, use_dtype(group[0].train.dtype), log, batching)
        group_seconds = time.perf_counter() - t0
        for i, result in zip(indices, trained):
            results[i] = result
            cfg = configs[i]
            rows[i] = {"member": i, **values[i], "net": describe(cfg.model.layers),
                       "test_error": result[3][-1]["test_error"], "n_misclassified": result[3][-1]["n_misclassified"],
                       "final_rL": float(result[2][-1]), "epochs": cfg.train.numepochs,
                       "group_size": len(indices), "group_seconds_per_epoch": float(np.median(seconds)),
                       "group_seconds": round(group_seconds, 3)}
    if jax.process_index() == 0:
        for i, (net, losses, rl, metrics) in enumerate(results):
            netfile.save(out / "nets" / f"member-{i:03d}.npz", net)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "members.csv", buffer.getvalue())
        atomic_write_text(out / "members.jsonl", "".join(json.dumps({**r, "metrics": results[r["member"]][3]}) + "\n"
                                                           for r in rows))
        curves = {", ".join(f"{k.split('.')[-1]}={v}" for k, v in values[i].items()): results[i][2]
                  for i in range(len(configs))}
        plots.plot_curves(out / "loss_curves.png", curves, f"sweep {Path(path).name}: rL of each member")
        atomic_write_bytes(out / "losses.npz", _npz({f"member-{i:03d}": r[1] for i, r in enumerate(results)}))
    return rows


def _npz(arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
