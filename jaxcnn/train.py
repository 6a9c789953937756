"""Training and testing: one compiled program per epoch, as `cnntrain.m` and `cnntest.m` do.

An epoch is `lax.scan` over the rows of a (steps, batchsize) index matrix built from a
permutation that is passed in as data, so any order (one recorded elsewhere, say) can be
replayed. When batchsize does not divide N, the last N mod batchsize samples of the
permutation are dropped for that epoch (the toolbox refuses such sizes); a fresh
permutation each epoch means every sample is still seen.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import fast, parallel, xla_options
from .net import Net, as_nhwc, as_targets, checked_images
from .optimizers import init_state, spec_for

RL_DECAY = 0.99


def batch_matrix(order, batchsize: int) -> np.ndarray:
    """The (steps, batchsize) int32 index matrix of one epoch; the remainder is dropped."""
    order = np.asarray(order)
    if order.ndim != 1:
        raise ValueError(f"order must be a 1-D permutation of sample indices, got shape {order.shape}")
    if batchsize < 1 or batchsize > order.size:
        raise ValueError(f"batchsize {batchsize} must be between 1 and the number of samples ({order.size})")
    steps = order.size // batchsize
    return order[: steps * batchsize].reshape(steps, batchsize).astype(np.int32)


def delta_rule_grad(net: Net, x, y):
    """(L, grads as a Net) by the fast delta-rule formulation (`jaxcnn.fast`), traced inside the epoch on
    (N, H, W, C) images and targets that an entry point has already checked (`net.as_targets`)."""
    loss, grads = fast.loss_and_grad(net.params, net.layers, x, y, net.output)
    return loss, dataclasses.replace(net, params=grads)


delta_rule_grad.takes_rows = True       # x may be `fast.Rows`: a batch that the copy loop reads in place
_delta_rule_grad = xla_options.jit(delta_rule_grad)


def fast_loss_and_grad(net: Net, images, targets):
    """(L, grads as a Net) for a batch by the fast delta rule: the same values as `jaxcnn.loss_and_grad`,
    with the same checks of `images` and `targets`."""
    x = as_nhwc(net, images)
    return _delta_rule_grad(net, x, as_targets(net, targets, x.shape[0]))


def gathers_per_step(net: Net, images) -> bool:
    """Whether `epoch_scan` gathers each batch in its step (by default, for the delta rule): where the first
    layer's patch matrix is made by jaxcnn's copy loop from grey images, which it reads in place (1.06x
    faster epochs than the whole-epoch gather, and no copy of the training set). Where XLA makes it, XLA fuses a per-step
    gather into its patch copies, which then cost more, so the epoch's batches are gathered once
    (docs/performance.md)."""
    return fast.native_first_layer(net.layers, images.shape[1:], images.dtype)


def epoch_scan(net: Net, opt_state, rl, images, targets, batches, *, optimizer,
               progress: Callable[[int], None] | None = None, progress_every: int = 20,
               grad_fn=delta_rule_grad, gather_per_step: bool | None = None):
    """Run the batches of one epoch; returns (net, opt_state, losses, rL).

    `rl` is the smoothed loss carried over from the previous epoch (NaN before the first
    step, where the toolbox sets rL(1) = L). `rL[t] = 0.99·rL[t-1] + 0.01·L[t]` per step.
    `images` (N, H, W, C) and `targets` (N, classes) stay whole. Each step gathers its batch
    (`gather_per_step=True`), or the epoch's batches are gathered once, before the scan, as whole image
    rows (a copy of the training set; `False`); None gathers per step for a `grad_fn` marked `takes_rows`
    where `gathers_per_step` says so. Either way the numbers are the same.
    `grad_fn(net, x, y) -> (L, grads)` is the fast delta rule by default; `jax.value_and_grad(model.loss)`
    gives the same numbers (the benchmark's baseline uses it). A `grad_fn` marked `takes_rows` (the delta
    rule) gets a per-step batch as `fast.Rows`, which the copy loop reads in place (1.04 - 1.05x per epoch);
    any other gets it gathered.
    """
    def step(carry, xs):
        net, opt_state, rl = carry
        t, x, y = xs
        if gather_per_step:            # the delta rule reads the batch's images where they lie (`fast.Rows`)
            x, y = (fast.Rows(images, x) if getattr(grad_fn, "takes_rows", False) else images[x]), targets[x]
        else:
            x = x.reshape(x.shape[:1] + images.shape[1:])
        loss, grads = grad_fn(net, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, net)
        net = optax.apply_updates(net, updates)
        rl = jnp.where(jnp.isnan(rl), loss, rl)
        rl = RL_DECAY * rl + (1 - RL_DECAY) * loss
        if progress is not None:
            jax.lax.cond((t + 1) % progress_every == 0,
                         lambda: jax.debug.callback(progress, t + 1), lambda: None)
        return (net, opt_state, rl), (loss, rl)

    if gather_per_step is None:              # only a grad_fn that reads the batch in place gains by it
        gather_per_step = getattr(grad_fn, "takes_rows", False) and gathers_per_step(net, images)
    steps = jnp.arange(batches.shape[0])
    if gather_per_step:
        inputs = (steps, batches, None)                        # indices; the step gathers x and y
    else:
        # whole image rows: a gather of (N, H, W, C) picked a layout that then needed a second copy
        inputs = (steps, images.reshape(images.shape[0], -1)[batches], targets[batches])
    (net, opt_state, rl), (losses, rls) = jax.lax.scan(step, (net, opt_state, rl), inputs)
    return net, opt_state, losses, rls


def make_epoch_fn(optimizer: optax.GradientTransformation, *, donate: bool = True, progress=None,
                  grad_fn=delta_rule_grad, gather_per_step: bool | None = None,
                  options=xla_options.for_dtype, mesh=None, all_reduce: str = "auto"):
    """Jit `epoch_scan` for one optimizer; params and optimizer state are donated by default.

    With a `mesh` (`parallel.batch_mesh`) each batch is split over its devices and the gradients are
    averaged across them every step (`jaxcnn.parallel`; `all_reduce="xla"` sums them by psum, not the spin); pass the training set through
    `parallel.replicated` once, so that no call copies it. `options(dtype)` gives the XLA compiler options
    (`jaxcnn.xla_options`; None: XLA's defaults)."""
    fn = lambda net, opt_state, rl, images, targets, batches: epoch_scan(  # noqa: E731
        net, opt_state, rl, images, targets, batches, optimizer=optimizer, progress=progress,
        grad_fn=grad_fn if mesh is None else parallel.averaged_over_devices(grad_fn, mesh, all_reduce), gather_per_step=gather_per_step)
    if mesh is not None:
        fn = parallel.split_batches(fn, mesh)
    return xla_options.jit(fn, options=options, donate_argnums=(0, 1) if donate else ())


_SGD = spec_for("sgd")
_sgd_epoch = make_epoch_fn(_SGD.transformation(), donate=False)


def train_epoch(net: Net, images, targets, order, alpha: float = 1.0, batchsize: int = 50):
    """One epoch of the toolbox's plain SGD over `order`; returns (net, per-step losses).

    `images` (N, H, W[, C]) float, `targets` (N, classes), `order` a permutation of range(N)
    (the toolbox's `kk = randperm(m)`, 0-based). Trailing samples beyond a whole batch are dropped.
    """
    x = as_nhwc(net, images)
    y = as_targets(net, targets, x.shape[0])
    order = np.asarray(order)
    if order.size and (order.max() >= x.shape[0] or order.min() < 0):
        raise ValueError(f"order holds indices outside 0..{x.shape[0] - 1}")
    batches = batch_matrix(order, batchsize)
    rl = jnp.asarray(jnp.nan, net.dtype)
    net, _, losses, _ = _sgd_epoch(net, init_state(_SGD, net, alpha), rl, x, y, jnp.asarray(batches))
    return net, losses


def smoothed_loss(losses, previous=None) -> np.ndarray:
    """The toolbox's `rL` for these per-step losses, continuing `previous` (its whole history)."""
    losses = np.asarray(losses, dtype=np.float64)
    rl = list(previous) if previous is not None and len(previous) else [losses[0]] if losses.size else []
    for value in losses:
        rl.append(RL_DECAY * rl[-1] + (1 - RL_DECAY) * value)
    return np.asarray(rl)


def predict(net: Net, images) -> jax.Array:
    """The network's outputs `o`, each in (0, 1): (N, classes) for a batch (N, H, W) or (N, H, W, C),
    (classes,) for one image (H, W) or (H, W, C).

    Computed by `jaxcnn.fast.forward` (the same values as `model.forward_nhwc`, faster on CPU)."""
    images = jnp.asarray(images)
    h, w, c = net.input_shape
    if images.shape in ({(h, w, c), (h, w)} if c == 1 else {(h, w, c)}):
        return _predict(net, checked_images(net, images[None]))[0]
    return _predict(net, checked_images(net, images))


@xla_options.jit
def _predict(net, x):
    return fast.forward(net.params, net.layers, x.reshape(-1, *net.input_shape), net.output)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """`cnntest.m`'s `er` and `bad`, plus the predicted labels and a confusion matrix (rows: true)."""

    error_rate: float
    bad: np.ndarray
    predictions: np.ndarray
    confusion: np.ndarray

    @property
    def n_misclassified(self) -> int:
        return int(self.bad.size)


EVAL_CHUNK = 500


def _labels_in_chunks(net, x, chunk: int):
    """The predicted classes of images `x` (N, H, W, C), `chunk` at a time (N a multiple of it). Where the
    first layer's patch matrix is made by the copy loop, each chunk is read where it lies (`fast.Rows`);
    elsewhere the chunks are slices, which XLA fuses into its own patch copies."""
    def labels(batch):
        return jnp.argmax(fast.forward(net.params, net.layers, batch, net.output), axis=1)
    if fast.native_first_layer(net.layers, x.shape[1:], x.dtype):
        starts = jnp.arange(0, x.shape[0], chunk)
        return jax.lax.map(lambda start: labels(fast.Rows(x, start + jnp.arange(chunk))), starts).reshape(-1)
    return jax.lax.map(labels, x.reshape(-1, chunk, *x.shape[1:])).reshape(-1)


@functools.partial(xla_options.jit, static_argnums=(2, 3))
def _predicted_labels(net, x, chunk: int, mesh):
    """Predicted classes, in chunks of `chunk` images inside one program (patches stay in cache; see
    docs/performance.md), the chunks shared out over `mesh`'s devices where there is one. `x` is padded
    to a whole number of chunks for every device."""
    x = x.reshape(-1, *net.input_shape)
    labels_of = functools.partial(_labels_in_chunks, chunk=chunk)
    return (labels_of(net, x) if mesh is None else parallel.split_leading(labels_of, mesh)(net, x))


def evaluate(net: Net, images, labels) -> Evaluation:
    """Test a net: labels are class indices (N,) or targets (N, classes), checked as training's are
    (`net.as_targets`), whose largest entry names the class."""
    labels = np.asarray(labels)
    x = checked_images(net, images)         # (N, H, W) or (N, H, W, C): made (N, H, W, C) inside the program
    n = x.shape[0]
    if labels.ndim == 2:
        labels = np.asarray(as_targets(net, labels, n)).argmax(axis=1)
    if labels.shape != (n,):
        raise ValueError(f"{labels.shape[0]} labels for {n} images")
    if labels.size and not (np.issubdtype(labels.dtype, np.integer) and 0 <= labels.min() and labels.max() < net.n_classes):
        raise ValueError(f"labels must be class indices 0..{net.n_classes - 1}, found {labels.min()}..{labels.max()}")
    # A set smaller than a chunk is one chunk, its size rounded up to 100 so that sizes 1..100 share a program.
    chunk = min(EVAL_CHUNK, -(-max(n, 1) // 100) * 100)
    mesh = parallel.chunk_mesh(-(-n // chunk))
    padding = -n % (chunk * parallel.mesh_size(mesh))
    if padding:
        x = jnp.concatenate([x, jnp.zeros((padding, *x.shape[1:]), x.dtype)])
    if mesh is not None:        # a net trained on another mesh (or device) is placed on this one
        net, x = parallel.replicated(net, mesh), parallel.spread(x, mesh)
    predictions = np.asarray(_predicted_labels(net, x, chunk, mesh))[:n]
    bad = np.flatnonzero(predictions != labels)
    confusion = np.zeros((net.n_classes, net.n_classes), dtype=np.int64)
    np.add.at(confusion, (labels.astype(np.int64), predictions), 1)
    error = bad.size / labels.size if labels.size else float("nan")
    return Evaluation(float(error), bad, predictions, confusion)
