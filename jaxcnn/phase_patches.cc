// The polyphase patch matrix of jaxcnn.fast.phase_patches as a copy loop (jaxcnn/native.py builds this
// file, jaxcnn/fast.py calls it; docs/performance.md says why).
//
// For a 'valid' k×k convolution followed by s×s pooling, with P = k + s − 1, the matrix is
//   T[(c, p, q), (I, J, n)] = a[c, p + s·I, q + s·J, n],   p, q < P, I < h, J < w,
// h = (H − k + 1) / s and w = (W − k + 1) / s: every row of T is a run of w·N values taken N at a time
// from the maps. XLA:CPU emits scalar code for the concatenations that build it, and for the first layer,
// whose images come batch-outer (C, N, H, W), it also transposes them on the way. Here each map row is
// copied once into a buffer that stays in cache, split by column phase (and for the first layer transposed
// on the way), and each of T's runs of w·N values is then one copy from it. The values are copied, not
// computed: T is the same bits either way.
//
// Layout 0 ("CNHW"): a is (C, N, H, W). Layout 1 ("CHWN"): a is (C, H, W, N). Any leading axes (jax.vmap)
// count as more maps C, which leaves T's memory order as it is. The "of rows" handlers take the first
// layer's images (C, N_stored, H, W) and the batch's indices into them, so that a batch (or an evaluation
// chunk) need not be copied out before its matrix is made.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shape {
  int64_t maps, n, height, width, k, s, p, h, w;
};

constexpr int64_t kCnhw = 0;
constexpr int64_t kChwn = 1;
constexpr int64_t kBlock = 16;   // images transposed together: one 64-byte line of float32 per map column

// One run of n values. A loop, not memcpy: the runs are short in a training step (25 values a device),
// where a call per run costs as much as the copy.
template <typename T>
inline void CopyRun(T* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// Map row r, held split by column phase (row[x % s][x / s][n] = a[c, r, x, n]), gives T's runs (p, q, I) for
// p + s·I = r: all w·N values of each, columns q + s·J for J < w, are one stretch of it, at row[q % s][q / s].
template <typename T>
void RunsOfRow(const T* row, T* block, int64_t r, int64_t columns, const Shape& d) {
  const int64_t run = d.w * d.n;
  for (int64_t p = r % d.s; p < d.p; p += d.s) {
    const int64_t i = (r - p) / d.s;
    if (i < 0 || i >= d.h) continue;
    for (int64_t q = 0; q < d.p; ++q)
      CopyRun(block + ((p * d.p + q) * d.h + i) * run, row + ((q % d.s) * columns + q / d.s) * d.n, run);
  }
}

// a (C, N, H, W), the first layer's images: map row r of every image is gathered into `row`, kBlock images at
// a time, which transposes it. With `rows`, a holds `stored` images, and image b of the batch is a's rows[b].
template <typename T>
void FromCnhw(const T* a, T* out, const Shape& d, const int32_t* rows = nullptr, int64_t stored = 0) {
  const int64_t plane = d.height * d.width, columns = (d.width + d.s - 1) / d.s;
  std::vector<T> row(static_cast<size_t>(d.s * columns * d.n));
  std::vector<const T*> image(static_cast<size_t>(d.n));
  for (int64_t c = 0; c < d.maps; ++c) {
    const T* maps = a + c * (rows ? stored : d.n) * plane;
    for (int64_t b = 0; b < d.n; ++b) image[b] = maps + (rows ? rows[b] : b) * plane;
    for (int64_t r = 0; r < d.height; ++r) {
      for (int64_t n0 = 0; n0 < d.n; n0 += kBlock) {
        const int64_t nb = std::min(kBlock, d.n - n0);
        for (int64_t x = 0; x < d.width; ++x) {
          T* dst = row.data() + ((x % d.s) * columns + x / d.s) * d.n + n0;
          if (rows) {
            for (int64_t b = 0; b < nb; ++b) dst[b] = image[n0 + b][r * d.width + x];
          } else {                               // a constant stride: 1.15x faster than through `image`
            const T* src = image[n0] + r * d.width + x;
            for (int64_t b = 0; b < nb; ++b) dst[b] = src[b * plane];
          }
        }
      }
      RunsOfRow(row.data(), out + c * d.p * d.p * d.h * d.w * d.n, r, columns, d);
    }
  }
}

// a (C, H, W, N): map row r is copied into `row` a column (N values) at a time.
template <typename T>
void FromChwn(const T* a, T* out, const Shape& d) {
  const int64_t columns = (d.width + d.s - 1) / d.s;
  std::vector<T> row(static_cast<size_t>(d.s * columns * d.n));
  for (int64_t c = 0; c < d.maps; ++c)
    for (int64_t r = 0; r < d.height; ++r) {
      const T* src = a + (c * d.height + r) * d.width * d.n;
      for (int64_t x = 0; x < d.width; ++x)
        CopyRun(row.data() + ((x % d.s) * columns + x / d.s) * d.n, src + x * d.n, d.n);
      RunsOfRow(row.data(), out + c * d.p * d.p * d.h * d.w * d.n, r, columns, d);
    }
}

// The shape of T for maps `dims` in `layout`, or an error that names what is wrong.
ffi::Error ShapeOf(ffi::Span<const int64_t> dims, int64_t k, int64_t s, int64_t layout, Shape& d) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 4 || k < 1 || s < 1 || (layout != kCnhw && layout != kChwn))
    return ffi::Error::InvalidArgument("jaxcnn phase patches: maps of rank >= 4, k >= 1, s >= 1, layout 0 or 1");
  d.maps = 1;
  for (int64_t axis = 0; axis < rank - 3; ++axis) d.maps *= dims[axis];
  if (layout == kCnhw) {
    d.n = dims[rank - 3], d.height = dims[rank - 2], d.width = dims[rank - 1];
  } else {
    d.height = dims[rank - 3], d.width = dims[rank - 2], d.n = dims[rank - 1];
  }
  d.k = k, d.s = s, d.p = k + s - 1;
  if (d.height < k || d.width < k || (d.height - k + 1) % s || (d.width - k + 1) % s)
    return ffi::Error::InvalidArgument("jaxcnn phase patches: " + std::to_string(s) + "x" + std::to_string(s) +
                                       " pooling does not tile the " + std::to_string(k) + "x" + std::to_string(k) +
                                       " convolution's output on " + std::to_string(d.height) + "x" +
                                       std::to_string(d.width) + " maps");
  d.h = (d.height - k + 1) / s, d.w = (d.width - k + 1) / s;
  return ffi::Error::Success();
}

template <ffi::DataType dtype>
ffi::Error PhasePatches(ffi::Buffer<dtype> a, ffi::ResultBuffer<dtype> out, int64_t k, int64_t s,
                        int64_t layout) {
  Shape d{};
  if (ffi::Error error = ShapeOf(a.dimensions(), k, s, layout, d); error.failure()) return error;
  if (static_cast<int64_t>(out->element_count()) != d.maps * d.p * d.p * d.h * d.w * d.n)
    return ffi::Error::InvalidArgument("jaxcnn phase patches: the result has the wrong size");
  if (layout == kCnhw) FromCnhw(a.typed_data(), out->typed_data(), d);
  else FromChwn(a.typed_data(), out->typed_data(), d);
  return ffi::Error::Success();
}

// The same for the batch images[rows] of stored images (C, N_stored, H, W), without gathering it first.
template <ffi::DataType dtype>
ffi::Error PhasePatchesOfRows(ffi::Buffer<dtype> images, ffi::Buffer<ffi::S32> rows, ffi::ResultBuffer<dtype> out,
                              int64_t k, int64_t s) {
  Shape d{};
  if (ffi::Error error = ShapeOf(images.dimensions(), k, s, kCnhw, d); error.failure()) return error;
  const int64_t stored = d.n;
  d.n = static_cast<int64_t>(rows.element_count());
  const int32_t* index = rows.typed_data();
  for (int64_t b = 0; b < d.n; ++b)
    if (index[b] < 0 || index[b] >= stored)
      return ffi::Error::InvalidArgument("jaxcnn phase patches: image " + std::to_string(index[b]) + " of a batch is "
                                         "outside the " + std::to_string(stored) + " images");
  if (static_cast<int64_t>(out->element_count()) != d.maps * d.p * d.p * d.h * d.w * d.n)
    return ffi::Error::InvalidArgument("jaxcnn phase patches: the result has the wrong size");
  FromCnhw(images.typed_data(), out->typed_data(), d, index, stored);
  return ffi::Error::Success();
}

}  // namespace

#define JAXCNN_PHASE_HANDLER(name, dtype)                                                 \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, PhasePatches<dtype>,                               \
                                ffi::Ffi::Bind()                                         \
                                    .Arg<ffi::Buffer<dtype>>()                           \
                                    .Ret<ffi::Buffer<dtype>>()                           \
                                    .Attr<int64_t>("k")                                  \
                                    .Attr<int64_t>("s")                                  \
                                    .Attr<int64_t>("layout"));

#define JAXCNN_ROWS_HANDLER(name, dtype)                                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, PhasePatchesOfRows<dtype>,                         \
                                ffi::Ffi::Bind()                                         \
                                    .Arg<ffi::Buffer<dtype>>()                           \
                                    .Arg<ffi::Buffer<ffi::S32>>()                        \
                                    .Ret<ffi::Buffer<dtype>>()                           \
                                    .Attr<int64_t>("k")                                  \
                                    .Attr<int64_t>("s"));

JAXCNN_PHASE_HANDLER(jaxcnn_phase_patches_f32, ffi::F32)
JAXCNN_PHASE_HANDLER(jaxcnn_phase_patches_f64, ffi::F64)
JAXCNN_ROWS_HANDLER(jaxcnn_phase_patches_of_rows_f32, ffi::F32)
JAXCNN_ROWS_HANDLER(jaxcnn_phase_patches_of_rows_f64, ffi::F64)
