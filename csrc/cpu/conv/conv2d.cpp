// 2-D convolution drivers (forward; backward: input, weight and bias gradients), compiled once
// per instruction set, float32 and float64 from one template.  NCHW as torch; weight
// [K, C/groups, R, S].  Arguments: kernels/conv_args.h; the algebra: docs/math/convolution.md.
// This file names the algorithm family of each shape (ConvPath), chooses it (select_*_path, the
// functions fl.functional.conv2d_paths reports) and runs it; the families live one per file
// (conv_internal.h lists them).
//
// How each shape is computed (and why):
//  * 1x1, stride 1, no padding ("pointwise"): the image [Cg, H*W] already is the
//    GEMM operand, so y[n, g] = w[g] @ x[n, g] with the bias (and relu) in
//    the GEMM epilogue -- no copy at all.  Backward: dw += g_y @ x^T and
//    dx = w^T @ g_y, both straight GEMMs on the image.
//  * groups > 1 with one input channel per group (depthwise, incl. channel
//    multipliers): a direct kernel.  Each output channel is a sum of R*S scaled
//    shifted rows of one input plane, so a GEMM would have M = 1: the direct
//    loop over rows (contiguous, vectorised by the compiler for stride 1)
//    does the same arithmetic with no packing.
//  * stride 1, dilation 1, Cg*R*S <= tuning::kDirectMaxTaps, output rows filling the
//    vector chunks (RGB / grey first layers, 3x3 layers on 32x32 images):
//    forward by a direct register-blocked kernel with vectors along the width
//    (conv_direct.cpp); the input gradient is the same kind of convolution
//    (flipped weights), the weight gradient see below.
//  * when at least 3/4 of the vector lanes hold an output channel (K >= 12 with
//    AVX-512), kernels with vectors along the output channels (conv_channel_vector.cpp): the forward where the direct kernel
//    does not fit (strides, 16x16 / 8x8 images) as an implicit GEMM on the
//    zero-bordered image, the weight gradient of every such shape, and the input
//    gradient (stride 1 as a forward with flipped weights, strided by stride
//    phases).  No im2col matrix, no packing, no scatter of a band.
//  * everything else: im2col + GEMM, but never for the whole batch.  The
//    column matrix [Cg*R*S, rows*OW] is built for a band of output rows
//    sized to about tuning::kColBudget bytes (it stays in L2 while the GEMM packs it),
//    and images are split over threads (each GEMM then runs on one thread:
//    no barriers inside a small product, no false sharing between images).
//    The full im2col buffer of a batch (64 x 288 x 1024 floats = 75 MB for the
//    32->64 layer) would be streamed through memory twice; the band is 256 KB.
//    Backward builds the same band once and uses it twice: dw += g_y band @
//    band^T (each thread accumulates its own dw, summed at the end, so images
//    stay independent) and dcol = w^T @ g_y band, scattered back by col2im.
//  * small output images (OH*OW < 256, e.g. 16x16 -> 8x8 at stride 2, or
//    LeNet's 10x10): the band spans several whole images (~256 columns), so
//    one GEMM per band packs the weight once for all of them and gets a wide
//    B; the outputs go through a small scratch (conv_im2col.cpp).
//    Threads then take bands instead of images.
//  With one image (or one thread) the image loop runs inline and the GEMM
//  With one image (or one thread) the image loop runs inline and the GEMM
//  splits its own work over the threads instead.
//  Every path applies tanh / sigmoid through kernels/fast_math.h (conv_common's act_inplace).
#include <algorithm>
#include <atomic>
#include <exception>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/conv/conv_internal.h"
#include "cpu/isa_entry.h"

namespace fl {
namespace FL_ISA_NS {
namespace conv {

// ---- the paths --------------------------------------------------------------------------------
// The algorithm family that computes one pass of a convolution (the file that holds it).
enum class ConvPath : int {
  im2col,          // im2col bands + GEMM (conv_im2col.cpp)
  pointwise,       // 1x1, stride 1, no padding: the GEMM on the image itself (conv_im2col.cpp)
  depthwise,       // one input channel per group (conv_depthwise.cpp)
  direct,          // vectors along the output width (conv_direct.cpp)
  channel_vector,  // vectors along the output channels (conv_channel_vector.cpp)
};

inline const char* path_name(ConvPath c) {
  switch (c) {
    case ConvPath::im2col: return "im2col";
    case ConvPath::pointwise: return "pointwise";
    case ConvPath::depthwise: return "depthwise";
    case ConvPath::direct: return "direct";
    case ConvPath::channel_vector: return "channel_vector";
  }
  return "?";
}

// The GEMM family's name for a shape no specialised kernel takes.
inline ConvPath gemm_path(const ConvShape& p) { return is_pointwise(p) ? ConvPath::pointwise : ConvPath::im2col; }

template <class T>
ConvPath select_forward_path(const ConvShape& p) {
  if (is_depthwise(p)) return ConvPath::depthwise;
  if (use_direct<T>(p)) return ConvPath::direct;
  if (cv_lanes_ok<T>(p)) return ConvPath::channel_vector;  // strides, small images
  return gemm_path(p);
}

// The input gradient: stride 1 as the forward of the transposed convolution (by the direct or
// the channel-vector kernel, whichever takes that shape), strided by stride phases.
template <class T>
ConvPath select_input_grad_path(const ConvShape& p) {
  if (is_depthwise(p)) return ConvPath::depthwise;
  if (direct_dx_ok<T>(p)) return use_direct<T>(transposed_shape(p)) ? ConvPath::direct : ConvPath::channel_vector;
  if (cv_dx_strided_ok<T>(p)) return ConvPath::channel_vector;
  return gemm_path(p);
}

template <class T>
ConvPath select_weight_grad_path(const ConvShape& p) {
  if (is_depthwise(p)) return ConvPath::depthwise;
  if (cv_lanes_ok<T>(p)) return ConvPath::channel_vector;
  if (direct_dw_ok<T>(p)) return ConvPath::direct;
  return gemm_path(p);
}

template <class T>
ConvPathNames conv2d_paths(const ConvShape& p) {
  return {path_name(select_forward_path<T>(p)), path_name(select_input_grad_path<T>(p)),
          path_name(select_weight_grad_path<T>(p))};
}

// ---- forward ------------------------------------------------------------------------------------
template <class T>
void conv2d_forward(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  if (p.N == 0 || p.K == 0 || p.OH == 0 || p.OW == 0) return;
  switch (select_forward_path<T>(p)) {
    case ConvPath::depthwise: {
      const int64_t planes = p.N * p.K;
      std::atomic<int64_t> next{0};
      run_team(conv_team(p, planes), [&](int, int) {
        for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < planes;)
          dw_forward_plane(a, i / p.K, i % p.K);
      });
      return;
    }
    case ConvPath::direct:
      direct_forward(a);
      return;
    case ConvPath::channel_vector:
      cv_forward(a);
      return;
    case ConvPath::im2col:
    case ConvPath::pointwise:
      break;
  }
  const int64_t imgs = band_images<T>(p, team_size(p.N));
  if (imgs > 1) {  // small images: bands of several images, threads over bands
    const int64_t bands = (p.N + imgs - 1) / imgs;
    std::atomic<int64_t> next{0};
    run_team(conv_team(p, bands), [&](int, int) {
      for (int64_t b; (b = next.fetch_add(1, std::memory_order_relaxed)) < bands;)
        conv_forward_images(a, b * imgs, std::min(imgs, p.N - b * imgs));
    });
    return;
  }
  std::atomic<int64_t> next{0};
  run_team(conv_team(p, p.N), [&](int, int) {
    for (int64_t n; (n = next.fetch_add(1, std::memory_order_relaxed)) < p.N;) conv_forward_image(a, n);
  });
}

// ---- backward -----------------------------------------------------------------------------------
// The depthwise and GEMM paths: whatever of dx, dw, db a asks for, images (or planes) over the
// threads.  Each thread sums its images' dw / db into its own buffer, published here; after a
// barrier the threads add all buffers into dw / db, each a slice.
template <class T>
void backward_by_images(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  const int64_t wsize = p.K * p.Cg() * p.R * p.S;
  const bool dw_out = a.dw != nullptr, db_out = a.db != nullptr;
  const bool dwise = is_depthwise(p);
  const int64_t imgs = dwise ? 1 : band_images<T>(p, team_size(p.N));
  const int64_t items = dwise ? p.N * p.C : (p.N + imgs - 1) / imgs;
  const int nt = conv_team(p, items);
  std::vector<T*> parts(size_t(nt), nullptr);
  const int64_t psize = (dw_out ? wsize : 0) + (db_out ? p.K : 0);
  std::atomic<int64_t> next{0};
  run_team(nt, [&](int t, int nthreads) {
    T* part = psize ? scratch<T>(Scratch::thread_partials, size_t(psize)) : nullptr;
    if (part) std::fill(part, part + psize, T(0));
    parts[size_t(t)] = part;
    T* dwp = dw_out ? part : nullptr;
    T* dbp = db_out ? part + (dw_out ? wsize : 0) : nullptr;
    std::exception_ptr err = nullptr;
    try {
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
        if (dwise)
          dw_backward_plane(a, i / p.C, i % p.C, dwp, dbp);
        else if (imgs > 1)
          conv_backward_images(a, i * imgs, std::min(imgs, p.N - i * imgs), dwp, dbp);
        else
          conv_backward_image(a, i, dwp, dbp);
      }
    } catch (...) {
      err = std::current_exception();
    }
#ifdef _OPENMP
    if (nthreads > 1) {
#pragma omp barrier
    }
#endif
    if (err) std::rethrow_exception(err);
    if (!psize) return;
    const int64_t lo = psize * t / nthreads, hi = psize * (t + 1) / nthreads;
    for (int64_t j = lo; j < hi; ++j) {
      T s = 0;
      for (int u = 0; u < nthreads; ++u) s += parts[size_t(u)][j];
      if (j < (dw_out ? wsize : 0))
        a.dw[j] += s;
      else
        a.db[j - (dw_out ? wsize : 0)] += s;
    }
  });
}

template <class T>
void conv2d_backward(const ConvArgs<T>& a) {
  const ConvShape& p = a.s;
  const int64_t wsize = p.K * p.Cg() * p.R * p.S;
  if (!a.accumulate) {
    if (a.dw) std::fill(a.dw, a.dw + wsize, T(0));
    if (a.db) std::fill(a.db, a.db + p.K, T(0));
  }
  if (p.N == 0 || p.K == 0) {
    if (a.dx) std::fill(a.dx, a.dx + p.N * p.C * p.H * p.W, T(0));
    return;
  }
  // the paths by kernels of their own (direct, channel-vector); the others run by images below
  auto own_kernel = [](ConvPath c) { return c == ConvPath::direct || c == ConvPath::channel_vector; };
  const ConvPath dx_path = select_input_grad_path<T>(p), dw_path = select_weight_grad_path<T>(p);
  const bool own_dx = a.dx && own_kernel(dx_path), own_dw = a.dw && own_kernel(dw_path);
  if (!own_dx && !own_dw) {
    ConvArgs<T> all = a;
    all.accumulate = true;  // dw / db were zeroed above when not accumulating
    backward_by_images(all);
    return;
  }
  // g = dy * act'(y) once for the whole batch when there is an activation (in this thread's
  // scratch, which the team only reads: a fresh vector would cost a memset and the page faults
  // of a new mapping every call)
  const T* g = a.dy;
  const int64_t ysize = p.N * p.K * p.OH * p.OW;
  if (a.act != Activation::identity && a.y) {
    T* gbuf = scratch<T>(Scratch::batch_act_grad, size_t(ysize));
    act_grad(a.act, a.dy, a.y, gbuf, ysize);
    g = gbuf;
  }
  if (own_dx) {
    if (dx_path == ConvPath::channel_vector && (p.stride_h > 1 || p.stride_w > 1))
      cv_input_grad_strided(a, g);
    else
      direct_input_grad(a, g);  // stride 1: the transposed forward, by the direct or channel-vector kernel
  }
  if (own_dw) {
    if (dw_path == ConvPath::channel_vector)
      cv_weight_grad(a, g);
    else
      direct_weight_grad(a, g);
  }
  ConvArgs<T> rest = a;  // what is left, by images (dw already zeroed / accumulated into)
  rest.dx = own_dx ? nullptr : a.dx;
  rest.dw = own_dw ? nullptr : a.dw;
  rest.dy = g;
  rest.act = Activation::identity;
  rest.accumulate = true;
  if (!rest.dx && !rest.dw && rest.db) {  // only the bias gradient left: one pass over g
    const int64_t OHW = p.OH * p.OW;
    for (int64_t k = 0; k < p.K; ++k) {
      double sum = 0;
      for (int64_t n = 0; n < p.N; ++n) sum += lane_sum(g + (n * p.K + k) * OHW, OHW);
      rest.db[k] += T(sum);
    }
  } else if (rest.dx || rest.dw || rest.db) {
    backward_by_images(rest);
  }
}

template <class T>
void fill_set(ConvKernelSet<T>& s) {
  s.conv2d_forward = &conv2d_forward<T>;
  s.conv2d_backward = &conv2d_backward<T>;
  s.conv2d_paths = &conv2d_paths<T>;
  s.activation_ = &act_inplace<T>;
}

}  // namespace conv

void fill_conv_kernels(CpuKernels& k) {  // the pooling and batch-norm entries: pool_norm_kernels.cpp
  conv::fill_set(k.conv_f32);
  conv::fill_set(k.conv_f64);
}

}  // namespace FL_ISA_NS
}  // namespace fl
