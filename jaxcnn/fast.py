"""The fast formulation behind `train_epoch`, `predict` and `evaluate`: the same maths as `model`.

Why: on XLA:CPU, `lax.conv_general_dilated` with 1-12 channels and its autodiff transpose run far
from the hardware's limit, and per-op overhead dominates such small steps. Here every convolution
is one matrix product with an im2col patch matrix, and the gradient is the lecture's delta rule
written out as `cnnbp.m` does it: `expand(d)/s²` back through mean pooling (through max pooling,
expand(d) masked to each window's first maximum), `d·σ'(a)` through the activation, patches @ dzᵀ
for the kernels, and the 'full' convolution with rot180(k) back to the previous maps as k @ dz
followed by col2im (a sum of shifted slices). The output delta is (o − y)·o(1 − o) for the
toolbox's sigmoid/MSE output and o − y for softmax with cross-entropy.

Layouts (chosen by profiling; figures in docs/performance.md):
- Maps are held channel-major. The first convolution reads the images as (C, N, H, W) (`CNHW`),
  which for grey images is the gathered batch itself, with no transpose.
- Later layers hold maps as (C, H, W, N) (`CHWN`), batch innermost, so every patch slice and every
  col2im update moves runs of w·N contiguous values instead of short rows.
- Patch rows are ordered (u, v, c), which is the HWIO kernel reshaped (k·k·C_in, C_out), so neither the
  forward product nor the kernel gradient needs a transpose; the kernel gradient is patches @ dzᵀ.
- A 'c' layer followed by pooling that tiles its output (both layers of the toolbox net) goes by
  polyphase (`phase_patches`, `PhaseConvRecord`): the input's (k+s−1)² phase-shifted stride-s slices
  times `phase_kernel` (the kernel at each of the s² offsets inside a pooling window) give every
  window member at once, as (C_out, s·s, h'·w'·N). Pooling, mean or max, is then a reduction over
  the s·s axis whose result is already the next layer's (C, H, W, N) maps; the activation, expand and
  σ' are flat loops that XLA:CPU vectorises; the patch matrix has s² times fewer columns than im2col's
  ((k+s−1)²/k² more rows: the path is taken while that is at most 2), and col2im is ⌈(k+s−1)/s⌉²
  shifted adds instead of k².
  The phase matrix is a copy of the maps; where jaxcnn's C++ is built it is made by a copy loop
  (`phase_patches.cc` via `maps_phase_patches`: the same bits, no concatenation fusions, and grey images,
  batch-outer, need no transpose first), else by XLA.
- The output layer reads the last (C, H, W, N) maps as fv' (C·h·w, N), which is a reshape of them,
  and its delta lands back on them the same way.
Tests hold it to `jax.grad(model.loss)` at 1e-12 in float64.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import native_patches
from .layers import Conv, Pool
from .numerics import HIGHEST, activate, activation_derivative, output_and_loss, output_delta


class Layout(NamedTuple):
    """Where the axes of a stack of maps are: `spatial` = the (H, W) axes, `to_nchw` = the transpose to NCHW."""

    name: str
    spatial: tuple[int, int]
    to_nchw: tuple[int, int, int, int]

    def from_nchw(self) -> tuple[int, ...]:
        return tuple(self.to_nchw.index(axis) for axis in range(4))

    def batch_size(self, a) -> int:
        return a.shape[self.to_nchw[0]]


CNHW = Layout("CNHW", (2, 3), (1, 0, 2, 3))
CHWN = Layout("CHWN", (1, 2), (3, 0, 1, 2))


class ConvRecord(NamedTuple):
    """What the delta rule needs from a 'c' layer's forward pass."""

    layer: Conv
    layout: Layout                   # of its input and output maps
    patches: jax.Array               # (k·k·C_in, positions): im2col of the input maps
    kernel_matrix: jax.Array         # (k·k·C_in, C_out): the HWIO kernel reshaped
    a: jax.Array                     # σ(z), the output maps (C_out, ...) in `layout`
    needs_input_delta: bool          # False for the first 'c' layer: nothing before it learns


class PhaseConvRecord(NamedTuple):
    """A 'c' layer and the s×s pooling after it, by polyphase (`phase_patches`): positions grouped by window."""

    layer: Conv
    pool: Pool
    phases: jax.Array                # (C_in·P·P, h'·w'·N), P = k + s − 1: rows (c, p, q), columns (I, J, N)
    kernel_matrix: jax.Array         # (C_out·s·s, C_in·P·P): `phase_kernel`
    a: jax.Array                     # σ(z), (C_out, s·s, h'·w'·N): window member (di, dj) of window (I, J)
    mask: jax.Array | None           # max pooling: one-hot of each window's first maximum along axis 1; else None
    needs_input_delta: bool
    input_shape: tuple[int, ...]     # (C_in, H, W, N)


class PoolRecord(NamedTuple):
    layer: Pool
    layout: Layout
    mask: jax.Array | None           # max pooling: one-hot of each window's first maximum, (..., s·s); else None


class Rows(NamedTuple):
    """The batch `images[rows]`, not yet gathered: `images` (N_stored, H, W, C), `rows` (N,) indices, each in
    0..N_stored − 1. Where the first layer's patch matrix is made by the copy loop from grey images, it reads
    the rows in place (an evaluation chunk or a training batch is then never copied out) and refuses an index
    outside the images; anywhere else they are gathered first (where jnp's indexing would clamp it)."""

    images: jax.Array
    rows: jax.Array


class Forward(NamedTuple):
    fv_t: jax.Array                  # (fvnum, N): the toolbox's feature vector, transposed (the maps' own order)
    z: jax.Array                     # (N, classes), the output layer's input ffW·fv + ffb
    o: jax.Array                     # (N, classes), the outputs
    records: tuple                   # one ConvRecord / PoolRecord per layer after the input
    last_maps_shape: tuple[int, ...]  # shape of the last maps, in CHWN


def _dot(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def to_layout(a, src: Layout, dst: Layout):
    """Move maps between the two channel-major layouts."""
    if src == dst:
        return a
    return a.transpose(tuple(src.to_nchw[axis] for axis in dst.from_nchw()))


def patches(a, k: int, layout: Layout):
    """im2col: maps -> (k·k·C, positions), rows ordered (u, v, c) like an HWIO kernel, columns in
    the maps' own memory order of the output positions."""
    sh, sw = layout.spatial
    c = a.shape[0]
    h, w = a.shape[sh] - k + 1, a.shape[sw] - k + 1
    shifted_cols = jnp.concatenate([lax.slice_in_dim(a, v, v + w, axis=sw) for v in range(k)], axis=0)  # (k·C, ...)
    rows = [lax.slice_in_dim(shifted_cols, u, u + h, axis=sh) for u in range(k)]
    return jnp.concatenate(rows, axis=0).reshape(k * k * c, -1)                       # (k·k·C, h·w·N)


def _conv_out_shape(a, k: int, c_out: int, layout: Layout) -> tuple[int, ...]:
    return (c_out,) + tuple(a.shape[i] - k + 1 if i in layout.spatial else a.shape[i] for i in range(1, 4))


def mean_pool(a, s: int, layout: Layout):
    """Mean over s×s blocks by reshape-and-mean, in either layout."""
    sh, sw = layout.spatial
    shape = list(a.shape)
    shape[sw:sw + 1] = [shape[sw] // s, s]
    shape[sh:sh + 1] = [shape[sh] // s, s]
    return a.reshape(shape).mean(axis=(sh + 1, sw + 2))


def _windows(a, s: int, layout: Layout):
    """Maps -> (..., s·s): each s×s window's values last, in row-major window order."""
    sh, sw = layout.spatial
    shape = list(a.shape)
    shape[sw:sw + 1] = [shape[sw] // s, s]
    shape[sh:sh + 1] = [shape[sh] // s, s]
    windows = jnp.moveaxis(a.reshape(shape), (sh + 1, sw + 2), (-2, -1))
    return windows.reshape(*windows.shape[:-2], s * s)


def _unwindow(w, s: int, layout: Layout, shape):
    """The inverse of `_windows`: (..., s·s) -> maps of `shape`."""
    sh, sw = layout.spatial
    w = w.reshape(*w.shape[:-1], s, s)
    return jnp.moveaxis(w, (-2, -1), (sh + 1, sw + 2)).reshape(shape)


def max_pool(a, s: int, layout: Layout):
    """(pooled maps, mask): each s×s block's first maximum in row-major window order, and a one-hot
    (..., s·s) mask of where it was, for the delta rule."""
    windows = _windows(a, s, layout)
    first = jnp.argmax(windows, axis=-1)
    pooled = jnp.take_along_axis(windows, first[..., None], axis=-1)[..., 0]
    return pooled, jax.nn.one_hot(first, s * s, dtype=a.dtype)


def unpool_max(d, mask, s: int, layout: Layout, shape):
    """Back through max pooling: each pooled delta goes whole to its window's maximum (`expand(d) .* mask`)."""
    return _unwindow(d[..., None] * mask, s, layout, shape)


def expand(d, s: int, layout: Layout):
    """`expand(d, [s s 1]) / s²`: each pooled delta spread evenly over its s×s block."""
    sh, sw = layout.spatial
    return jnp.repeat(jnp.repeat(d, s, axis=sh), s, axis=sw) / (s * s)


def col2im(d_patches, c_in: int, k: int, dz_shape, layout: Layout):
    """Sum (k·k·C_in, h·w·N) patch deltas back onto (C_in, h+k−1, w+k−1, N) maps: together with the
    product k @ dz this is `Σ_j convn(d_j, rot180(k_ij), 'full')`."""
    assert layout == CHWN, "col2im reads patch columns in (h, w, N) order"
    _, h, w, n = dz_shape
    d_patches = d_patches.reshape(k, k, c_in, h, w, n)
    out = jnp.zeros((c_in, h + k - 1, w + k - 1, n), d_patches.dtype)
    for u in range(k):
        for v in range(k):
            out = out.at[:, u:u + h, v:v + w, :].add(d_patches[u, v])
    return out


def _by_phase(layers, i: int, input_shape) -> bool:
    """Whether 'c' layer `i` and the pooling after it take the polyphase path: the pooling tiles the
    conv's output, and the phase kernel's zeros cost at most twice the products ((k+s−1)² ≤ 2k²)."""
    conv, pool = layers[i], layers[i + 1] if i + 1 < len(layers) else None
    if not (isinstance(conv, Conv) and isinstance(pool, Pool)):
        return False
    k, s = conv.kernelsize, pool.scale
    return (k + s - 1) ** 2 <= 2 * k * k and all((size - k + 1) % s == 0 for size in input_shape)


def phase_patches(a, k: int, s: int):
    """The polyphase im2col of (C, H, W, N) maps for a 'valid' k×k convolution followed by s×s pooling:
    T[(c, p, q), (I, J, N)] = a[c, p + s·I, q + s·J, N] for p, q < P = k + s − 1. Every output position
    (s·I + di, s·J + dj) reads its k×k window from rows p = di + u, q = dj + v, so one product with
    `phase_kernel` gives all s·s members of every pooling window, from (P/k)² as many rows as im2col
    has but s² times fewer columns."""
    c, height, width, n = a.shape
    h, w, p = (height - k + 1) // s, (width - k + 1) // s, k + s - 1
    cols = jnp.stack([lax.slice_in_dim(a, q, q + s * (w - 1) + 1, s, axis=2) for q in range(p)], axis=1)
    rows = jnp.stack([lax.slice_in_dim(cols, r, r + s * (h - 1) + 1, s, axis=2) for r in range(p)], axis=1)
    return rows.reshape(c * p * p, h * w * n)                                      # (C, P_p, P_q, h, w, N)


def phase_kernel(kernel, s: int):
    """The HWIO kernel as the (C_out·s·s, C_in·P·P) matrix that `phase_patches` multiplies:
    K'[(o, di, dj), (c, p, q)] = k[p − di, q − dj, c, o] where that is inside the kernel, else 0."""
    k, _, c_in, c_out = kernel.shape
    p = k + s - 1
    shifted = jnp.stack([jnp.pad(kernel, ((di, s - 1 - di), (dj, s - 1 - dj), (0, 0), (0, 0)))
                         for di in range(s) for dj in range(s)])                  # (s·s, P, P, C_in, C_out)
    return shifted.transpose(4, 0, 3, 1, 2).reshape(c_out * s * s, c_in * p * p)


def kernel_gradient_from_phase(d_kernel_matrix, k: int, s: int, c_in: int, c_out: int):
    """dL/dk from dL/dK' (`phase_kernel` is linear in k): dk[u, v, c, o] = Σ_(di,dj) dK'[(o, di, dj), (c, u+di, v+dj)]."""
    p = k + s - 1
    g = d_kernel_matrix.reshape(c_out, s, s, c_in, p, p)
    dk = sum(g[:, di, dj, :, di:di + k, dj:dj + k] for di in range(s) for dj in range(s))   # (C_out, C_in, k, k)
    return dk.transpose(2, 3, 1, 0)


def phase_col2im(d_phases, c_in: int, k: int, s: int, input_shape):
    """The transpose of `phase_patches`: sum (C_in·P·P, h·w·N) deltas back onto the (C_in, H, W, N) maps.
    With the product K'ᵀ @ dz this is `Σ_j convn(d_j, rot180(k_ij), 'full')`. Rows p = s·pa + pr land on
    map rows s·(pa + I) + pr, so it is ⌈P/s⌉² shifted adds of whole (pr, qr) blocks."""
    _, height, width, n = input_shape
    p = k + s - 1
    h, w, pa = (height - k + 1) // s, (width - k + 1) // s, -(-p // s)
    d = d_phases.reshape(c_in, p, p, h, w, n)
    d = jnp.pad(d, ((0, 0), (0, pa * s - p), (0, pa * s - p), (0, 0), (0, 0), (0, 0)))
    d = d.reshape(c_in, pa, s, pa, s, h, w, n)
    out = jnp.zeros((c_in, h + pa - 1, s, w + pa - 1, s, n), d.dtype)               # (c, A, pr, B, qr, N)
    for ra in range(pa):
        for qa in range(pa):
            out = out.at[:, ra:ra + h, :, qa:qa + w].add(d[:, ra, :, qa].transpose(0, 3, 1, 4, 2, 5))
    return out.reshape(c_in, s * (h + pa - 1), s * (w + pa - 1), n)[:, :height, :width]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _native_phase_patches(a, k: int, s: int, layout: Layout):
    return native_patches.phase_patches(a, k, s, layout.name)


@_native_phase_patches.defjvp
def _native_phase_patches_jvp(k, s, layout, primals, tangents):
    """The copy is linear: its tangent is the same copy of the tangent, by XLA, which JAX can transpose."""
    (a,), (da,) = primals, tangents
    return _native_phase_patches(a, k, s, layout), phase_patches(to_layout(da, layout, CHWN), k, s)


def maps_phase_patches(a, k: int, s: int, layout: Layout):
    """`phase_patches` of maps in either layout: by the C++ copy loop where it is built
    (`jaxcnn.native_patches`; grey first-layer images need no transpose first), else by XLA."""
    if native_patches.available(a.dtype):
        return _native_phase_patches(a, k, s, layout)
    return phase_patches(to_layout(a, layout, CHWN), k, s)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _native_phase_patches_of_rows(images_cnhw, rows, k: int, s: int):
    return native_patches.phase_patches_of_rows(images_cnhw, rows, k, s)


@_native_phase_patches_of_rows.defjvp
def _native_phase_patches_of_rows_jvp(k, s, primals, tangents):
    """Linear in the images, as `_native_phase_patches`; the rows are indices (no tangent)."""
    (images_cnhw, rows), (d_images, _) = primals, tangents
    return (_native_phase_patches_of_rows(images_cnhw, rows, k, s),
            phase_patches(to_layout(d_images[:, rows], CNHW, CHWN), k, s))


def native_first_layer(layers, input_shape, dtype) -> bool:
    """Whether the copy loop reads images of `input_shape` (H, W, C) in place: grey images (whose batch-outer
    layout needs no transpose) and a first layer that takes the polyphase path. Only then is a batch given as
    `Rows` never gathered; elsewhere XLA fuses a gather into its own patch copies."""
    return input_shape[2] == 1 and native_patches.available(dtype) and _by_phase(layers, 1, tuple(input_shape[:2]))


def _phase_conv_forward(p, conv: Conv, pool: Pool, a_in, layout: Layout, needs_input_delta: bool, rows=None):
    """A 'c' layer and its pooling by polyphase: (C_in, H, W, N) maps (or (C_in, N, H, W)) -> pooled (C_out, H', W', N).
    With `rows`, `a_in` is the first layer's stored images (C_in, N_stored, H, W) and the batch is those rows."""
    k, s = conv.kernelsize, pool.scale
    input_shape = tuple(a_in.shape[axis] for axis in (0, *layout.spatial, layout.to_nchw[0]))   # (C_in, H, W, N)
    if rows is not None:
        input_shape = input_shape[:3] + (rows.shape[0],)
        phases = _native_phase_patches_of_rows(a_in, rows, k, s)
    else:
        phases = maps_phase_patches(a_in, k, s, layout)                             # (C_in·P·P, h·w·N)
    h, w, n = (input_shape[1] - k + 1) // s, (input_shape[2] - k + 1) // s, input_shape[3]
    kernel_matrix = phase_kernel(p["k"], s)                                         # (C_out·s·s, C_in·P·P)
    z = _dot(kernel_matrix, phases).reshape(conv.outputmaps, s * s, -1)
    a = activate(conv.activation, z + p["b"][:, None, None])                        # (C_out, s·s, h·w·N)
    if pool.pool == "max":                                                          # each window's first maximum
        first = jnp.argmax(a, axis=1)
        pooled = jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]
        mask = jax.nn.one_hot(first, s * s, axis=1, dtype=a.dtype)
    else:
        pooled, mask = a.sum(axis=1) / (s * s), None
    record = PhaseConvRecord(conv, pool, phases, kernel_matrix, a, mask, needs_input_delta, input_shape)
    return pooled.reshape(conv.outputmaps, h, w, n), record


def feature_vector_t(a, layout: Layout):
    """The toolbox's `fv` (N, C·h·w), map by map, each row-major, transposed: (C·h·w, N), which for
    (C, H, W, N) maps is the maps themselves, so neither the output layer nor its delta moves them."""
    return to_layout(a, layout, CHWN).reshape(-1, layout.batch_size(a))


def forward_records(params: dict, layers, x, output: str = "sigmoid") -> Forward:
    """`cnnff.m` on (N, H, W, C) images (or the `Rows` of stored ones), keeping what the delta rule needs."""
    rows = None
    if isinstance(x, Rows):
        if native_first_layer(layers, x.images.shape[1:], x.images.dtype):
            x, rows = x.images, x.rows                            # the copy loop reads the rows in place
        else:
            x = x.images[x.rows]
    a, layout = x.transpose(3, 0, 1, 2), CNHW                     # (C, N, H, W)
    records, convs_seen = [], 0
    conv = iter(params["conv"])
    pooled_already = False                                        # the pool that `_phase_conv_forward` did
    for i, layer in enumerate(layers[1:], start=1):
        if pooled_already:
            pooled_already = False
        elif _by_phase(layers, i, tuple(a.shape[axis] for axis in layout.spatial)):
            a, record = _phase_conv_forward(next(conv), layer, layers[i + 1], a, layout, convs_seen > 0,
                                            rows if convs_seen == 0 else None)
            layout = CHWN                                                       # a: (C_out, H/s, W/s, N)
            records.append(record)
            convs_seen, pooled_already = convs_seen + 1, True
        elif isinstance(layer, Conv):
            if convs_seen:
                a, layout = to_layout(a, layout, CHWN), CHWN     # (C, H, W, N)
            p = next(conv)
            k, c_in = layer.kernelsize, a.shape[0]
            kernel_matrix = p["k"].reshape(k * k * c_in, layer.outputmaps)     # (k·k·C_in, C_out)
            cols = patches(a, k, layout)                                        # (k·k·C_in, positions)
            z = _dot(kernel_matrix.T, cols).reshape(_conv_out_shape(a, k, layer.outputmaps, layout))
            a = activate(layer.activation, z + p["b"][:, None, None, None])     # (C_out, ...) in `layout`
            records.append(ConvRecord(layer, layout, cols, kernel_matrix, a, convs_seen > 0))
            convs_seen += 1
        elif layer.pool == "max":
            a, mask = max_pool(a, layer.scale, layout)                          # (C, ..., H/s, W/s, ...)
            records.append(PoolRecord(layer, layout, mask))
        else:
            a = mean_pool(a, layer.scale, layout)                               # (C, ..., H/s, W/s, ...)
            records.append(PoolRecord(layer, layout, None))
    fv_t = feature_vector_t(a, layout)                                          # (fvnum, N)
    z = _dot(params["ffW"], fv_t).T + params["ffb"]                             # (N, classes)
    o, _ = output_and_loss(output, z, jnp.zeros_like(z))
    return Forward(fv_t, z, o, tuple(records), to_layout(a, layout, CHWN).shape)


def forward(params: dict, layers, x, output: str = "sigmoid"):
    """`model.forward_nhwc` in this formulation: (N, H, W, C) -> outputs (N, classes)."""
    return forward_records(params, layers, x, output).o


def loss_and_grad(params: dict, layers, x, targets, output: str = "sigmoid"):
    """(L, dL/dparams) for a batch by the delta rule; same values as `jax.value_and_grad(model.loss)`.

    `x` (N, H, W, C) (or `Rows`), `targets` (N, classes) one-hot, both in the params' dtype."""
    fwd = forward_records(params, layers, x, output)
    n = fwd.z.shape[0]
    _, loss = output_and_loss(output, fwd.z, targets)
    od = output_delta(output, fwd.o, targets)                      # output delta (N, classes)
    grads = {"ffW": lax.dot_general(od, fwd.fv_t, (((0,), (1,)), ((), ())), precision=HIGHEST) / n,
             "ffb": jnp.sum(od, axis=0) / n}
    d_fv_t = lax.dot_general(params["ffW"], od, (((0,), (1,)), ((), ())), precision=HIGHEST)   # fvd', (fvnum, N)
    d, layout = d_fv_t.reshape(fwd.last_maps_shape), CHWN          # back onto the last maps
    conv_grads = []
    for record in reversed(fwd.records):
        if isinstance(record, PhaseConvRecord):
            d, layout = to_layout(d, layout, CHWN), CHWN           # (C_out, H', W', N)
            layer, s, k = record.layer, record.pool.scale, record.layer.kernelsize
            c_out, c_in = layer.outputmaps, record.input_shape[0]
            d = d.reshape(c_out, 1, -1)
            d = d * record.mask if record.mask is not None else d / (s * s)   # expand(d) .* mask, or expand(d)/s²
            dz = d * activation_derivative(layer.activation, record.a)        # (C_out, s·s, h'·w'·N)
            # dz stays (C_out, s·s, positions) and the products contract its axes where they are: with a
            # flattened dz as its root, XLA:CPU computed δ by per-element index division (docs/performance.md).
            # phases @ dzᵀ, not dz @ phasesᵀ: 1.05× per step.
            d_kernel_matrix = lax.dot_general(record.phases, dz, (((1,), (2,)), ((), ())), precision=HIGHEST)
            d_kernel_matrix = d_kernel_matrix.transpose(1, 2, 0)                 # (C_out, s·s, C_in·P·P)
            conv_grads.append({"k": kernel_gradient_from_phase(d_kernel_matrix / n, k, s, c_in, c_out),
                               "b": jnp.sum(dz, axis=(1, 2)) / n})
            if not record.needs_input_delta:
                break                                              # the first 'c' layer: nothing before it learns
            kernel_matrix = record.kernel_matrix.reshape(c_out, s * s, -1)
            d_phases = lax.dot_general(kernel_matrix, dz, (((0, 1), (0, 1)), ((), ())), precision=HIGHEST)
            d = phase_col2im(d_phases, c_in, k, s, record.input_shape)       # (C_in, H, W, N)
            continue
        d, layout = to_layout(d, layout, record.layout), record.layout
        if isinstance(record, PoolRecord):
            s = record.layer.scale
            if record.mask is None:
                d = expand(d, s, layout)                           # expand(d)/s²
            else:
                shape = tuple(dim * s if axis in layout.spatial else dim for axis, dim in enumerate(d.shape))
                d = unpool_max(d, record.mask, s, layout, shape)   # expand(d) .* mask
            continue
        layer = record.layer
        dz = d * activation_derivative(layer.activation, record.a)   # δ = d·σ'(a), (C_out, ...)
        dz_matrix = dz.reshape(layer.outputmaps, -1)               # (C_out, positions)
        k = layer.kernelsize
        c_in = record.kernel_matrix.shape[0] // (k * k)
        conv_grads.append({"k": (_dot(record.patches, dz_matrix.T) / n).reshape(k, k, c_in, layer.outputmaps),
                           "b": jnp.sum(dz_matrix, axis=1) / n})
        if not record.needs_input_delta:
            break                                                  # the first 'c' layer: nothing before it learns
        d = col2im(_dot(record.kernel_matrix, dz_matrix), c_in, k, dz.shape, layout)       # (C_in, H, W, N)
    grads["conv"] = conv_grads[::-1]
    return loss, grads
