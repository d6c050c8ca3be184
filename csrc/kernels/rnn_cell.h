// The LSTM and GRU cell arithmetic, written once.
//
// Everything here is templated on an "Ops" type (ScalarOps<float|double>,
// the per-ISA SimdOps, or the same ScalarOps on a CUDA thread) that gives the
// value type V and load / store / set1.  The scalar, AVX2, AVX-512 and CUDA
// builds all instantiate these functions (see cpu/rnn/rnn_kernels.cpp and
// cuda/rnn/rnn_cuda.cu).
//
// Equations (docs/math/rnn.md; torch's gate order), forward:
//   LSTM (Greff et al., optional peepholes p_i, p_f, p_o; without them p = 0)
//     i = s(a_i + p_i c_{t-1})  f = s(a_f + p_f c_{t-1})  g = tanh(a_g)
//     c_t = f c_{t-1} + i g     o = s(a_o + p_o c_t)       h_t = o tanh(c_t)
//   GRU, reset after (torch / cuDNN): q = W_hn h + b_hn
//     r = s(a_r)  z = s(a_z)  n = tanh(x_n + r q)  h_t = (1-z) n + z h_{t-1}
//   GRU, Cho et al. (reset before):
//     r = s(a_r)  z = s(a_z)  n = tanh(x_n + U_n (r h_{t-1}) + b_n)  h_t = same
// where a_* is the sum of both matrix products and both biases.
//
// Backward (d_x: dL/d(pre-activation of x); dh = dL/dh_t from step t+1 plus dy_t):
//   LSTM    d_o = dh tanh(c_t) o (1-o)
//           dc  = dc_t(from t+1) + dh o (1 - tanh^2 c_t) + p_o d_o
//           d_f = dc c_{t-1} f (1-f)   d_i = dc g i (1-i)   d_g = dc i (1 - g^2)
//           dc_{t-1} = dc f + p_i d_i + p_f d_f        dh <- 0 (the driver adds dgates W_hh)
//           db_{i,f,g,o} += d_{i,f,g,o} (both biases)
//           dp_i += c_{t-1} d_i   dp_f += c_{t-1} d_f   dp_o += c_t d_o
//   GRU, reset after:
//           d_n = dh (1-z) (1-n^2)   d_z = dh (h_{t-1} - n) z (1-z)
//           dq  = r d_n              d_r = d_n q r (1-r)
//           dh <- dh z (the driver adds [d_r, d_z] W_hrz + dq W_hn)
//           db_ih += [d_r, d_z, d_n]   db_hh += [d_r, d_z, dq]
//   GRU, Cho et al. (two phases around the driver's d(r h) = d_n U_n):
//     bwd1  d_n, d_z as above; dh <- dh z
//     bwd2  d_r = d(r h) h_{t-1} r (1-r);  dh += d(r h) r (the driver then adds [d_r, d_z] U_rz)
//           db_ih, db_hh += [d_r, d_z, d_n]
#pragma once
#include <cstdint>
#include <cstring>

#include "core/macros.h"
#include "kernels/rnn_args.h"
#include "kernels/fast_math.h"
#include "kernels/vec.h"

namespace fl {
namespace FL_ISA_NS {

// ---- one step, columns [j, j + Ops::width) of rows [b_lo, b_hi) (default: every row) --------
// The bias / peephole gradient sums of those rows are added to db_ih / db_hh / dpeep.
template <class Ops, RnnPhase P, class T>
FL_HD void rnn_cell_cols(const RnnCellArgs<T>& a, int64_t j, int64_t b_lo = 0, int64_t b_hi = -1) {
  using V = typename Ops::V;
  const int64_t H = a.H;
  const V zero = Ops::set1(0.0), one = Ops::set1(1.0);
  // per-column sums over the rows of the bias / peephole gradients (a phase uses its own):
  // LSTM: db_i, db_f, db_g, db_o (both biases) and dp_i, dp_f, dp_o (peepholes);
  // the GRUs: db_r, db_z, db_n (both biases; reset after: the input-side n bias only) and,
  // reset after, db_hn (sum of dq, the hidden-side n bias)
  V db_i = zero, db_f = zero, db_g = zero, db_o = zero, dp_i = zero, dp_f = zero, dp_o = zero;
  V db_r = zero, db_z = zero, db_n = zero, db_hn = zero;
  V p_i = zero, p_f = zero, p_o = zero;
  if ((P == RnnPhase::lstm_fwd || P == RnnPhase::lstm_bwd) && a.peep) {
    p_i = Ops::load(a.peep + j);
    p_f = Ops::load(a.peep + H + j);
    p_o = Ops::load(a.peep + 2 * H + j);
  }
  if (b_hi < 0) b_hi = a.B;
  for (int64_t b = b_lo; b < b_hi; ++b) {
    const bool active = a.lengths == nullptr || a.t < a.lengths[b];
    T* g = a.gates + b * a.ldg + j;
    const int64_t hj = b * H + j;
    if (P == RnnPhase::lstm_fwd) {
      const V cp = Ops::load(a.c_prev + hj);
      if (!active) {
        Ops::store(a.c + hj, cp);
        Ops::store(a.h + hj, Ops::load(a.h_prev + hj));
        if (a.y) Ops::store(a.y + b * a.ldy + j, zero);
        continue;
      }
      const V i = fast_sigmoid(Ops::load(g) + p_i * cp);
      const V f = fast_sigmoid(Ops::load(g + H) + p_f * cp);
      const V gg = fast_tanh(Ops::load(g + 2 * H));
      const V c = f * cp + i * gg;
      const V o = fast_sigmoid(Ops::load(g + 3 * H) + p_o * c);
      const V h = o * fast_tanh(c);
      Ops::store(g, i);
      Ops::store(g + H, f);
      Ops::store(g + 2 * H, gg);
      Ops::store(g + 3 * H, o);
      Ops::store(a.c + hj, c);
      Ops::store(a.h + hj, h);
      if (a.y) Ops::store(a.y + b * a.ldy + j, h);
    } else if (P == RnnPhase::lstm_bwd) {
      V dh = Ops::load(a.dh + hj);
      if (!active) {  // state carried: gradients pass through, no gate gradient
        for (int k = 0; k < 4; ++k) Ops::store(g + k * H, zero);
        continue;
      }
      if (a.dy) dh = dh + Ops::load(a.dy + b * a.lddy + j);
      const V i = Ops::load(g), f = Ops::load(g + H), gg = Ops::load(g + 2 * H), o = Ops::load(g + 3 * H);
      const V cp = Ops::load(a.c_prev + hj), c = Ops::load(a.c + hj);
      const V tc = fast_tanh(c);
      const V d_o = dh * tc * o * (one - o);
      const V dc = Ops::load(a.dc + hj) + dh * o * (one - tc * tc) + p_o * d_o;
      const V d_f = dc * cp * f * (one - f);
      const V d_i = dc * gg * i * (one - i);
      const V d_g = dc * i * (one - gg * gg);
      Ops::store(a.dc + hj, dc * f + p_i * d_i + p_f * d_f);
      Ops::store(a.dh + hj, zero);
      Ops::store(g, d_i);
      Ops::store(g + H, d_f);
      Ops::store(g + 2 * H, d_g);
      Ops::store(g + 3 * H, d_o);
      db_i = db_i + d_i; db_f = db_f + d_f; db_g = db_g + d_g; db_o = db_o + d_o;
      dp_i = dp_i + cp * d_i; dp_f = dp_f + cp * d_f; dp_o = dp_o + c * d_o;
    } else if (P == RnnPhase::gru_fwd) {
      const V hp = Ops::load(a.h_prev + hj);
      if (!active) {
        Ops::store(a.h + hj, hp);
        if (a.y) Ops::store(a.y + b * a.ldy + j, zero);
        continue;
      }
      const T* gh = a.gh + b * a.ldgh + j;
      const V r = fast_sigmoid(Ops::load(g) + Ops::load(gh));
      const V z = fast_sigmoid(Ops::load(g + H) + Ops::load(gh + H));
      const V q = Ops::load(gh + 2 * H);
      const V n = fast_tanh(Ops::load(g + 2 * H) + r * q);
      const V h = n + z * (hp - n);
      Ops::store(g, r);
      Ops::store(g + H, z);
      Ops::store(g + 2 * H, n);
      Ops::store(a.aux + hj, q);
      Ops::store(a.h + hj, h);
      if (a.y) Ops::store(a.y + b * a.ldy + j, h);
    } else if (P == RnnPhase::gru_bwd) {
      V dh = Ops::load(a.dh + hj);
      if (!active) {
        for (int k = 0; k < 3; ++k) Ops::store(g + k * H, zero);
        Ops::store(a.aux + hj, zero);
        continue;
      }
      if (a.dy) dh = dh + Ops::load(a.dy + b * a.lddy + j);
      const V r = Ops::load(g), z = Ops::load(g + H), n = Ops::load(g + 2 * H);
      const V q = Ops::load(a.aux + hj), hp = Ops::load(a.h_prev + hj);
      const V d_n = dh * (one - z) * (one - n * n);
      const V d_z = dh * (hp - n) * z * (one - z);
      const V d_q = d_n * r;
      const V d_r = d_n * q * r * (one - r);
      Ops::store(g, d_r);
      Ops::store(g + H, d_z);
      Ops::store(g + 2 * H, d_n);
      Ops::store(a.aux + hj, d_q);
      Ops::store(a.dh + hj, dh * z);
      db_r = db_r + d_r; db_z = db_z + d_z; db_n = db_n + d_n; db_hn = db_hn + d_q;
    } else if (P == RnnPhase::cho_fwd1) {
      const V r = fast_sigmoid(Ops::load(g));
      const V z = fast_sigmoid(Ops::load(g + H));
      Ops::store(g, r);
      Ops::store(g + H, z);
      Ops::store(a.aux + hj, r * Ops::load(a.h_prev + hj));
    } else if (P == RnnPhase::cho_fwd2) {
      const V hp = Ops::load(a.h_prev + hj);
      if (!active) {
        Ops::store(a.h + hj, hp);
        if (a.y) Ops::store(a.y + b * a.ldy + j, zero);
        continue;
      }
      const V z = Ops::load(g + H);
      const V n = fast_tanh(Ops::load(g + 2 * H));
      const V h = n + z * (hp - n);
      Ops::store(g + 2 * H, n);
      Ops::store(a.h + hj, h);
      if (a.y) Ops::store(a.y + b * a.ldy + j, h);
    } else if (P == RnnPhase::cho_bwd1) {
      V dh = Ops::load(a.dh + hj);
      if (!active) {
        for (int k = 0; k < 3; ++k) Ops::store(g + k * H, zero);
        continue;
      }
      if (a.dy) dh = dh + Ops::load(a.dy + b * a.lddy + j);
      const V z = Ops::load(g + H), n = Ops::load(g + 2 * H), hp = Ops::load(a.h_prev + hj);
      const V d_n = dh * (one - z) * (one - n * n);
      const V d_z = dh * (hp - n) * z * (one - z);
      Ops::store(g + H, d_z);
      Ops::store(g + 2 * H, d_n);
      Ops::store(a.dh + hj, dh * z);
      db_z = db_z + d_z; db_n = db_n + d_n;
    } else if (P == RnnPhase::cho_bwd2) {
      if (!active) continue;  // gates already zero, dh passes through
      const V r = Ops::load(g), drh = Ops::load(a.aux + hj), hp = Ops::load(a.h_prev + hj);
      const V d_r = drh * hp * r * (one - r);
      Ops::store(g, d_r);
      Ops::store(a.dh + hj, Ops::load(a.dh + hj) + drh * r);
      db_r = db_r + d_r;
    }
  }
  // fold the column sums into the (accumulated) bias / peephole gradients
  auto add = [&](T* base, int64_t off, V v) {
    if (base) Ops::store(base + off + j, Ops::load(base + off + j) + v);
  };
  if (P == RnnPhase::lstm_bwd) {
    add(a.db_ih, 0, db_i); add(a.db_ih, H, db_f); add(a.db_ih, 2 * H, db_g); add(a.db_ih, 3 * H, db_o);
    add(a.db_hh, 0, db_i); add(a.db_hh, H, db_f); add(a.db_hh, 2 * H, db_g); add(a.db_hh, 3 * H, db_o);
    add(a.dpeep, 0, dp_i); add(a.dpeep, H, dp_f); add(a.dpeep, 2 * H, dp_o);
  } else if (P == RnnPhase::gru_bwd) {
    add(a.db_ih, 0, db_r); add(a.db_ih, H, db_z); add(a.db_ih, 2 * H, db_n);
    add(a.db_hh, 0, db_r); add(a.db_hh, H, db_z); add(a.db_hh, 2 * H, db_hn);
  } else if (P == RnnPhase::cho_bwd1) {
    add(a.db_ih, H, db_z); add(a.db_ih, 2 * H, db_n);
    add(a.db_hh, H, db_z); add(a.db_hh, 2 * H, db_n);
  } else if (P == RnnPhase::cho_bwd2) {
    add(a.db_ih, 0, db_r);
    add(a.db_hh, 0, db_r);
  }
}

}  // namespace FL_ISA_NS
}  // namespace fl
