"""One net's batch split over the CPU's cores: data parallelism inside the compiled epoch.

Why: on XLA:CPU one net's step cannot use a second core. Its ops take 5-100 µs, each is split over the
threads and the hand-over costs what the second thread gains (docs/performance.md: the step pinned to
one core was as fast). Separate CPU devices do run on separate cores. So the epoch runs under
`shard_map` over a 1-D mesh named "batch": every device holds the whole net and training set, takes
its slice of each batch, and the slices' gradients (and loss) are averaged by one all-reduce of them
raveled into a single vector. One collective of one array a step: a psum per gradient array, which
XLA merges into one all-reduce of a tuple, made the step slower than on one device; one vector made it
1.3x faster on 2 cores.
The all-reduce is XLA's `psum`, or where a C++ compiler can build it, a custom call whose waiting thread
spins instead of sleeping (`jaxcnn.spin_allreduce`): split epochs 1.19 - 1.32x faster (per-round medians)
on a VM whose idle vCPUs halt at once, the same sums.

The average of the slices' mean gradients is the batch's mean gradient; only the order of the
additions differs (agreement to rounding, ~1e-16 relative in float64). Runs with the same number of
devices are bit-for-bit reproducible. `jaxcnn train`, `eval` and `bench` make one CPU device per core
(`cli.py`; `JAX_NUM_CPU_DEVICES=1` keeps one). In a Python session JAX has one CPU device, and everything
runs unsplit as before, unless `jax_num_cpu_devices` (or XLA_FLAGS) made more before JAX started: then
`run.train` and `evaluate` split over them too.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn import spin_allreduce

AXIS = "batch"
MIN_IMAGES_PER_DEVICE = 16    # measured: 2 x 25 on 2 cores; smaller slices than this are not measured


def devices_for_batch(batchsize: int, devices: int) -> int:
    """How many devices to split a batch of `batchsize` over: the most that divide it evenly, at most
    `devices`, each taking at least MIN_IMAGES_PER_DEVICE images (1: no split)."""
    fits = [d for d in range(1, max(1, devices) + 1)
            if batchsize % d == 0 and (d == 1 or batchsize // d >= MIN_IMAGES_PER_DEVICE)]
    return max(fits)


def _cpu_devices(devices):
    """This process's devices to split over, or [] where nothing is split: an accelerator (a GPU runs a
    batch on one chip), or several processes (`jaxcnn sweep --coordinator`: each member has its device)."""
    if devices is None:
        if jax.process_count() > 1:
            return []
        devices = jax.local_devices()
    devices = list(devices)
    return devices if devices and devices[0].platform == "cpu" else []


def batch_mesh(batchsize: int, devices=None) -> Mesh | None:
    """The mesh over which an epoch of `batchsize` batches is split, or None to run on one device (a
    batch that does not split, one device, or no CPU devices to split over)."""
    devices = _cpu_devices(devices)
    d = devices_for_batch(batchsize, len(devices))
    return Mesh(np.array(devices[:d]), (AXIS,)) if d > 1 else None


def chunk_mesh(chunks: int, devices=None) -> Mesh | None:
    """The mesh over which evaluation shares out `chunks` chunks of images: as few devices as take
    ⌈chunks / devices⌉ chunks each (so that less than one share is padding), or None for one device."""
    devices = _cpu_devices(devices)
    if len(devices) < 2 or chunks < 2:
        return None
    per_device = -(-chunks // len(devices))
    d = -(-chunks // per_device)
    return Mesh(np.array(devices[:d]), (AXIS,)) if d > 1 else None


def mesh_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.devices.size


def _host_view(a):
    """A CPU jax array as a numpy view of its memory, anything else unchanged. A CPU device's array is host
    memory: `np.asarray` views it without a copy, and `device_put` of such a view (aligned, read-only) to
    CPU devices aliases it too, where `device_put` of the jax array itself copies it for every device
    (measured: 10,000 test images spread over 2 devices in 0.5 ms instead of 7 - 18 ms)."""
    on_cpu = (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
              and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
              and all(d.platform == "cpu" for d in a.devices()))
    return np.asarray(a) if on_cpu else a


def _host_views(tree):
    return jax.tree.map(_host_view, tree)


def replicated(tree, mesh: Mesh | None):
    """`tree` placed whole on every device of `mesh` (unchanged without one), so that a compiled epoch
    does not copy the training set to its devices at every call. The devices share one copy of it in memory."""
    return tree if mesh is None else jax.device_put(_host_views(tree), NamedSharding(mesh, PartitionSpec()))


def spread(x, mesh: Mesh):
    """`x` split along its leading axis over `mesh`'s devices (which must divide it), as `split_leading` takes
    it; each device's slice is a view of `x`'s memory, not a copy."""
    return jax.device_put(_host_views(x), NamedSharding(mesh, PartitionSpec(AXIS)))


ALL_REDUCES = ("auto", "xla")        # auto: the spinning all-reduce where it can take the vector, else psum


def all_reduce_plan(mesh: Mesh, values: int, dtype, all_reduce: str = "auto") -> tuple[int | None, str]:
    """How a vector of `values` values of `dtype` is summed over `mesh`'s devices: (the spin's slot group,
    or None for `jax.lax.psum`; the words the records and `jaxcnn train`'s first line use)."""
    if all_reduce not in ALL_REDUCES:
        raise ValueError(f"all_reduce={all_reduce!r}: expected one of {ALL_REDUCES}")
    if all_reduce == "xla":
        return None, "xla psum (asked for)"
    return spin_allreduce.plan(values, dtype, tuple(int(d.id) for d in mesh.devices.flat))


def gradient_all_reduce(net, mesh: Mesh, all_reduce: str = "auto") -> str:
    """The words of `all_reduce_plan` for a split step of `net`: its (loss, gradients) vector has one value
    more than the net has parameters."""
    leaves = jax.tree.leaves(net.params)
    return all_reduce_plan(mesh, sum(int(np.size(a)) for a in leaves) + 1, leaves[0].dtype, all_reduce)[1]


def sum_over_devices(flat, mesh: Mesh, all_reduce: str = "auto"):
    """The sum of the vector `flat` over `mesh`'s devices, inside `shard_map`, as `all_reduce_plan` says: by
    the spinning all-reduce (`jaxcnn.spin_allreduce`) or by `jax.lax.psum`. Both add the devices' vectors in
    device order, so the result is the same."""
    group, _ = all_reduce_plan(mesh, flat.size, flat.dtype, all_reduce)
    return jax.lax.psum(flat, AXIS) if group is None else spin_allreduce.summed(flat, AXIS, group)


def averaged_over_devices(grad_fn, mesh: Mesh, all_reduce: str = "auto"):
    """`grad_fn(net, x, y) -> (loss, grads)` on this device's slice of the batch, made into the mean over
    the slices of `mesh`: one all-reduce of (loss, grads) raveled into one vector. Inside `shard_map` only."""
    def averaged(net, x, y):
        flat, unravel = ravel_pytree(grad_fn(net, x, y))
        return unravel(sum_over_devices(flat, mesh, all_reduce) / jax.lax.axis_size(AXIS))
    averaged.takes_rows = getattr(grad_fn, "takes_rows", False)          # `train.epoch_scan`'s batch as it comes
    return averaged


def split_leading(fn, mesh: Mesh):
    """`fn(net, xs)` as one SPMD program over `mesh`: `xs` split along its leading axis, the net whole
    on every device, the results joined along their leading axis."""
    return jax.shard_map(fn, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                         out_specs=PartitionSpec(AXIS))


def split_batches(epoch_fn, mesh: Mesh):
    """`epoch_fn(net, opt_state, rl, images, targets, batches)` as one SPMD program over `mesh`: the
    (steps, batchsize) index matrix split along its batch axis, everything else whole on every device.
    `epoch_fn` must average its gradients with `averaged_over_devices`; every device then makes the same
    update, so the net, optimizer state and losses it returns are the same on all of them."""
    whole, by_batch = PartitionSpec(), PartitionSpec(None, AXIS)
    return jax.shard_map(epoch_fn, mesh=mesh, in_specs=(whole,) * 5 + (by_batch,), out_specs=whole,
                         check_vma=False)
