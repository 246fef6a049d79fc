// The native CPU LSTM loops of jaxlstm: the forward recurrence and the backward (dh, dc) recursion of one layer,
// as XLA FFI handlers (jaxlstm/_src/kernels/native.py calls them through jax.ffi.ffi_call).
//
// What this file computes is exactly the two loops of jaxlstm/_src/kernels/fused.py (`_forward` and the loop of
// `_layer_bwd`), and the forward's input projection; the weight GEMMs after the backward loop stay in XLA. It exists
// because XLA's CPU while loop pays microseconds per fusion, per small GEMM and per thread hand-off on every step;
// here a step costs one small GEMM per task, one pass over the gates and one hand-off between threads.
//
// The input projection xs @ w_x is computed here, by each task for its own gate columns, a chunk of steps at a time,
// rather than by XLA before the call: right after one of XLA's multi-threaded GEMMs in the same executable, XLA's
// pool threads still hold the cores for a while, and the loop's steps then wait on them (measured: 70-110 us per
// step instead of 35 at the S shapes). Chunked, the projection needs no extra hand-off and its rows are still in
// cache when the steps read them.
//
// Layout (time-major, row-major, float32):
//   xs (T, B, I) the inputs in processing order, w_x (I, 4H); gates i, f, g, o in blocks of H columns
//   b (4H), w_h (H, 4H), peep (3, H) or empty, valid (T, B) bool or empty, h0 and c0 (B, H)
//   hs (T, B, H) the carried h after each step (frozen where invalid); h_T, c_T (B, H)
//   P (T, B, 4H), Q and F (T, B, H): the backward factors of fused.py's _backward_factors; cs (T, B, H), the carried
//   c, for the peephole gradient only (empty without peepholes)
//
// The threads, the schedule and the scratch memory are runtime.h's; the per-step GEMMs on the recurrent weights are
// panels.h's.

#include <cstdint>
#include <cstring>

#include "panels.h"
#include "runtime.h"

namespace ffi = xla::ffi;

namespace {

using namespace jaxlstm_native;  // NOLINT: this file's loops are written on the runtime's names

// One row of one step of the forward pass over a task's hw units. z holds the row's h_prev @ w_h for the task's
// columns (4 blocks of hw) and, with save, receives P's four blocks; zx holds the row's input projection for the
// same columns (4 blocks of hw); bias and the outputs point at the task's first unit.
template <bool kPeep, bool kSave>
__attribute__((always_inline)) inline void forward_row_body(int64_t hw, int64_t H, float* __restrict z,
                                                            const float* __restrict zx, const float* __restrict bias,
                                                            const float* __restrict peep, float* __restrict c,
                                                            float* __restrict h,
                                                            float* __restrict Q, float* __restrict F,
                                                            float* __restrict cs) {
  for (int64_t j = 0; j < hw; ++j) {
    const float cp = c[j];
    float ai = z[j] + zx[j] + bias[j];
    float af = z[hw + j] + zx[hw + j] + bias[H + j];
    const float ag = z[2 * hw + j] + zx[2 * hw + j] + bias[2 * H + j];
    float ao = z[3 * hw + j] + zx[3 * hw + j] + bias[3 * H + j];
    if (kPeep) {
      ai += peep[j] * cp;
      af += peep[H + j] * cp;
    }
    const float i = sigmoid_f(ai), f = sigmoid_f(af), g = tanh_f(ag);
    const float cn = f * cp + i * g;
    if (kPeep) ao += peep[2 * H + j] * cn;
    const float o = sigmoid_f(ao);
    const float tc = tanh_f(cn);
    const float hn = o * tc;
    if (kSave) {
      const float d_i = i * (1 - i), d_f = f * (1 - f), d_o = o * (1 - o);
      z[j] = g * d_i;
      z[hw + j] = cp * d_f;
      z[2 * hw + j] = i * (1 - g * g);
      z[3 * hw + j] = tc * d_o;
      float q = o * (1 - tc * tc), ff = f;
      if (kPeep) {
        q += tc * d_o * peep[2 * H + j];
        ff += g * d_i * peep[j] + cp * d_f * peep[H + j];
        cs[j] = cn;
      }
      Q[j] = q;
      F[j] = ff;
    }
    h[j] = hn;
    c[j] = cn;
  }
}

// The four variants of the row, each compiled for every ISA of JAXLSTM_CLONES; the flags are template arguments so
// that the loops have no branches and vectorize.
#define JAXLSTM_FORWARD_ROW(name, peep_, save_)                                                                    \
  JAXLSTM_CLONES void name(int64_t hw, int64_t H, float* z, const float* zx, const float* bias, const float* peep, \
                           float* c, float* h, float* Q, float* F, float* cs) {                                  \
    forward_row_body<peep_, save_>(hw, H, z, zx, bias, peep, c, h, Q, F, cs);                                     \
  }
JAXLSTM_FORWARD_ROW(forward_row_plain, false, false)
JAXLSTM_FORWARD_ROW(forward_row_plain_save, false, true)
JAXLSTM_FORWARD_ROW(forward_row_peep, true, false)
JAXLSTM_FORWARD_ROW(forward_row_peep_save, true, true)
#undef JAXLSTM_FORWARD_ROW

using ForwardRow = void (*)(int64_t, int64_t, float*, const float*, const float*, const float*, float*, float*, float*,
                            float*, float*);

// One row of one step of the backward pass: dh += d_hs[t]; dc += dh * Q; dz = P * [dc, dc, dc, dh]; dc *= F. An
// invalid row passes (dh, dc) through and has dz = 0. dz (4 blocks of hw) is the task's scratch; dh is left as
// the skip term (0 for a valid row), to which the next step adds dz @ w_h.T once every task has written its dz.
JAXLSTM_CLONES void backward_row(int64_t hw, int64_t H, const float* __restrict P, const float* __restrict Q,
                                 const float* __restrict F, const float* __restrict dy, float* __restrict dh,
                                 float* __restrict dc, float* __restrict dz) {
  for (int64_t j = 0; j < hw; ++j) {
    const float dhv = dh[j] + dy[j];
    const float dcv = dc[j] + dhv * Q[j];
    dz[j] = P[j] * dcv;
    dz[hw + j] = P[H + j] * dcv;
    dz[2 * hw + j] = P[2 * H + j] * dcv;
    dz[3 * hw + j] = P[3 * H + j] * dhv;
    dc[j] = dcv * F[j];
    dh[j] = 0.0f;
  }
}

// An invalid row of the backward pass: (dh + d_hs[t], dc) pass through, and dz is 0.
void backward_row_invalid(int64_t hw, const float* dy, float* dh, float* dz) {
  for (int64_t j = 0; j < hw; ++j) dh[j] += dy[j];
  std::memset(dz, 0, 4 * hw * sizeof(float));
}

// Copies a task's 4 blocks of hw columns from its scratch row (contiguous) into a (4H)-wide row at its units.

struct Forward {
  static constexpr int64_t kGates = 4;
  int64_t T, B, I, H;
  const float *xs, *wx, *b, *w, *peep, *h0, *c0;
  const bool* valid;
  float *hs, *hT, *cT, *P, *Q, *F, *cs;
  bool save;
};

// Steps per chunk of a task's input projection: its rows (B, 4hw) for a chunk fill about 256 KB, a quarter of a

// gates. All allocation is here, before the loop; the packing is its first step's.
struct ForwardTask {
  int64_t u0 = 0, hw = 0, tc = 1;
  Scratch scratch;
  Resident w;
  float *wx, *zx, *z;

  ForwardTask(const Forward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1;
    units(a.H, ntask, j, &u0, &u1);
    hw = u1 - u0;
    tc = chunk_steps(a.T, a.B, 4 * hw);
    w = Resident(a.H, 4 * hw, scratch.take(Resident::size(a.H, 4 * hw)));
    wx = scratch.take(a.I * 4 * hw);
    zx = scratch.take(tc * a.B * 4 * hw);
    z = scratch.take(a.B * 4 * hw);
  }

  static size_t sizes(const Forward& a, int ntask, int j) {
    int64_t u0, u1;
    units(a.H, ntask, j, &u0, &u1);
    const int64_t n4 = 4 * (u1 - u0);
    return Scratch::size({Resident::size(a.H, n4), size_t(a.I * n4), size_t(chunk_steps(a.T, a.B, n4) * a.B * n4),
                          size_t(a.B * n4)});
  }
};

// Step t of a forward task: h of step t - 1 is complete.
void forward_step(const Forward& a, ForwardTask& task, int64_t t) {
  const int64_t B = a.B, I = a.I, H = a.H, u0 = task.u0, hw = task.hw, n4 = 4 * hw, tc = task.tc;
  if (hw == 0) return;
  const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
  if (t == 0) {
    task.w.pack([&](int64_t k, float* out) { gate_columns_row(a.w, k, H, 4, u0, hw, out); });
    pack_columns(a.wx, I, H, 4, u0, hw, task.wx);
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.cT + r * H + u0, a.c0 + r * H + u0, hw * sizeof(float));
  }
  if (t % tc == 0) {
    // The input projections of steps [t, t + m) for the task's columns: xs's rows are contiguous in time.
    const int64_t m = std::min(tc, a.T - t);
    if (I > 0)
      sgemm(kRowMajor, kNoTrans, kNoTrans, m * B, n4, I, 1.0f, a.xs + t * B * I, I, task.wx, n4, 0.0f,
            task.zx, n4);
    else
      std::fill(task.zx, task.zx + m * B * n4, 0.0f);
  }
  const float* hp = t == 0 ? a.h0 : a.hs + (t - 1) * B * H;
  task.w.gemm(B, hp, H, task.z, n4);
  const float* peep = a.peep ? a.peep + u0 : nullptr;
  const ForwardRow row_fn = peep ? (a.save ? forward_row_peep_save : forward_row_peep)
                                 : (a.save ? forward_row_plain_save : forward_row_plain);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = t * B + r;
    float* zr = &task.z[r * n4];
    float* c = a.cT + r * H + u0;
    float* h = a.hs + row * H + u0;
    float* cs = a.cs ? a.cs + row * H + u0 : nullptr;
    if (a.valid && !a.valid[row]) {
      // The state stays as it was. P, Q and F are left as they are: the backward pass never reads them here.
      std::memcpy(h, hp + r * H + u0, hw * sizeof(float));
      if (cs) std::memcpy(cs, c, hw * sizeof(float));
      continue;
    }
    row_fn(hw, H, zr, &task.zx[((t % tc) * B + r) * n4], a.b + u0, peep, c, h, a.save ? a.Q + row * H + u0 : nullptr,
           a.save ? a.F + row * H + u0 : nullptr, cs);
    if (a.save) scatter_row(hw, H, 4, zr, a.P + row * 4 * H + u0);
  }
  if (t == a.T - 1)
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.hT + r * H + u0, a.hs + (t * B + r) * H + u0, hw * sizeof(float));
}

struct Backward {
  static constexpr int64_t kGates = 4;
  int64_t T, B, H;
  const float *w, *P, *Q, *F, *dhs, *dhT, *dcT;
  const bool* valid;
  float *dz, *dh0, *dc0;
};

// A backward task: its units, the running (dh, dc) of its units, and scratch rows.
struct BackwardTask {
  int64_t u0 = 0, hw = 0;
  Scratch scratch;
  Resident wt;  // w_h[u0:u0 + hw, :].T, (4H, hw)
  float *dh, *dc, *g, *dz;

  BackwardTask(const Backward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1;
    units(a.H, ntask, j, &u0, &u1);
    hw = u1 - u0;
    wt = Resident(4 * a.H, hw, scratch.take(Resident::size(4 * a.H, hw)));
    dh = scratch.take(a.B * hw);
    dc = scratch.take(a.B * hw);
    g = scratch.take(a.B * hw);
    dz = scratch.take(a.B * 4 * hw);
  }

  static size_t sizes(const Backward& a, int ntask, int j) {
    int64_t u0, u1;
    units(a.H, ntask, j, &u0, &u1);
    const size_t bh = a.B * (u1 - u0);
    return Scratch::size({Resident::size(4 * a.H, u1 - u0), bh, bh, bh, 4 * bh});
  }
};

// Step i of a backward task, i = 0 .. T: dh_prev from dz of time T - i (complete), then the rows of time T - 1 - i.
void backward_step(const Backward& a, BackwardTask& task, int64_t i) {
  const int64_t T = a.T, B = a.B, H = a.H, u0 = task.u0, hw = task.hw, n4 = 4 * hw;
  if (hw == 0) return;
  float *dh = task.dh, *dc = task.dc;
  if (i == 0) {
    task.wt.pack([&](int64_t k, float* out) { transposed_row(a.w, 4 * H, u0, hw, k, out); });
    for (int64_t r = 0; r < B; ++r) {
      std::memcpy(dh + r * hw, a.dhT + r * H + u0, hw * sizeof(float));
      std::memcpy(dc + r * hw, a.dcT + r * H + u0, hw * sizeof(float));
    }
  } else {
    // dh_prev for the task's units: dz (B, 4H) @ w_h[u0:u0 + hw, :].T.
    task.wt.gemm(B, a.dz + (T - i) * B * 4 * H, 4 * H, task.g, hw);
    for (int64_t k = 0; k < B * hw; ++k) dh[k] += task.g[k];  // an invalid row's dz is 0, so g adds nothing there
  }
  if (i == T) {
    for (int64_t r = 0; r < B; ++r) {
      std::memcpy(a.dh0 + r * H + u0, dh + r * hw, hw * sizeof(float));
      std::memcpy(a.dc0 + r * H + u0, dc + r * hw, hw * sizeof(float));
    }
    return;
  }
  const int64_t t = T - 1 - i;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = t * B + r;
    float* dz = &task.dz[r * n4];
    if (a.valid && !a.valid[row])
      backward_row_invalid(hw, a.dhs + row * H + u0, dh + r * hw, dz);
    else
      backward_row(hw, H, a.P + row * 4 * H + u0, a.Q + row * H + u0, a.F + row * H + u0, a.dhs + row * H + u0,
                   dh + r * hw, dc + r * hw, dz);
    scatter_row(hw, H, 4, dz, a.dz + row * 4 * H + u0);  // dz over P (maybe one buffer): the row is read already
  }
}



ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> peep, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                       ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::F32> P, ffi::ResultBuffer<ffi::F32> Q,
                       ffi::ResultBuffer<ffi::F32> F, ffi::ResultBuffer<ffi::F32> cs, bool save) {
  auto d = xs.dimensions();
  if (d.size() != 3) return bad("xs must be (T, B, I)");
  auto wd = w.dimensions();
  if (wd.size() != 2) return bad("w_h must be (H, 4H)");
  const int64_t T = d[0], B = d[1], I = d[2], H = wd[0];
  if (auto e = check_common(T, B, H, 4, w, valid); e.failure()) return e;
  auto wxd = wx.dimensions();
  if (wxd.size() != 2 || wxd[0] != I || wxd[1] != 4 * H) return bad("w_x must be (I, 4H)");
  if (static_cast<int64_t>(b.element_count()) != 4 * H) return bad("b must be (4H,)");
  if (peep.element_count() != 0 && static_cast<int64_t>(peep.element_count()) != 3 * H)
    return bad("peep must be (3, H) or empty");
  if (static_cast<int64_t>(h0.element_count()) != B * H || static_cast<int64_t>(c0.element_count()) != B * H)
    return bad("h0 and c0 must be (B, H)");
  const bool has_peep = peep.element_count() != 0;
  if (save && (static_cast<int64_t>(P->element_count()) != T * B * 4 * H ||
               static_cast<int64_t>(Q->element_count()) != T * B * H ||
               static_cast<int64_t>(F->element_count()) != T * B * H ||
               static_cast<int64_t>(cs->element_count()) != (has_peep ? T * B * H : 0)))
    return bad("P, Q, F and cs must be (T, B, 4H), (T, B, H), (T, B, H) and (T, B, H) or empty");
  Forward a{T,
            B,
            I,
            H,
            xs.typed_data(),
            wx.typed_data(),
            b.typed_data(),
            w.typed_data(),
            has_peep ? peep.typed_data() : nullptr,
            h0.typed_data(),
            c0.typed_data(),
            valid.element_count() ? valid.typed_data() : nullptr,
            hs->typed_data(),
            hT->typed_data(),
            cT->typed_data(),
            save ? P->typed_data() : nullptr,
            save ? Q->typed_data() : nullptr,
            save ? F->typed_data() : nullptr,
            save && has_peep ? cs->typed_data() : nullptr,
            save};
  advise_results(hs, P, Q, F, cs);  // without save, P, Q, F and cs are hs
  if (B > 0) run_tasks<Forward, ForwardTask>(a, T, forward_step);  // an empty batch has nothing to compute
  return ffi::Error::Success();
}

// Inference: hs, h_T and c_T only. The training variant's extra results are unused here, so it is one handler
// with save=false and empty buffers for them.
ffi::Error ForwardInferImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w,
                            ffi::Buffer<ffi::F32> peep, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                            ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                            ffi::ResultBuffer<ffi::F32> cT) {
  return ForwardImpl(xs, wx, b, w, peep, valid, h0, c0, hs, hT, cT, hs, hs, hs, hs, false);
}

ffi::Error ForwardTrainImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w,
                            ffi::Buffer<ffi::F32> peep, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                            ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                            ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::F32> P,
                            ffi::ResultBuffer<ffi::F32> Q, ffi::ResultBuffer<ffi::F32> F,
                            ffi::ResultBuffer<ffi::F32> cs) {
  return ForwardImpl(xs, wx, b, w, peep, valid, h0, c0, hs, hT, cT, P, Q, F, cs, true);
}

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> P, ffi::Buffer<ffi::F32> Q,
                        ffi::Buffer<ffi::F32> F, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> dhs,
                        ffi::Buffer<ffi::F32> dhT, ffi::Buffer<ffi::F32> dcT, ffi::ResultBuffer<ffi::F32> dz,
                        ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0) {
  auto d = P.dimensions();
  if (d.size() != 3 || d[2] % 4 != 0) return bad("P must be (T, B, 4H)");
  const int64_t T = d[0], B = d[1], H = d[2] / 4;
  if (auto e = check_common(T, B, H, 4, w, valid); e.failure()) return e;
  const int64_t n = T * B * H;
  if (static_cast<int64_t>(Q.element_count()) != n || static_cast<int64_t>(F.element_count()) != n ||
      static_cast<int64_t>(dhs.element_count()) != n)
    return bad("Q, F and d_hs must be (T, B, H)");
  if (static_cast<int64_t>(dhT.element_count()) != B * H || static_cast<int64_t>(dcT.element_count()) != B * H)
    return bad("d_hT and d_cT must be (B, H)");
  Backward a{T,
             B,
             H,
             w.typed_data(),
             P.typed_data(),
             Q.typed_data(),
             F.typed_data(),
             dhs.typed_data(),
             dhT.typed_data(),
             dcT.typed_data(),
             valid.element_count() ? valid.typed_data() : nullptr,
             dz->typed_data(),
             dh0->typed_data(),
             dc0->typed_data()};
  advise_results(dz);  // P's buffer where XLA donated it (already touched), else fresh
  if (B > 0) run_tasks<Backward, BackwardTask>(a, T + 1, backward_step);
  return ffi::Error::Success();
}

// ---- The projected LSTM (proj_size): h = (o * tanh(c)) @ w_p -------------------------------------------------
//
// The loops of jaxlstm/_src/kernels/fused_norm.py for a projected LSTM without layer norm or peepholes. A step has
// two GEMMs, and the second needs all of the first's output, so it is two steps of the schedule: phase A, split
// over hidden units, z = h_{t-1} @ w_h and the gates, writing y = o * tanh(c); phase B, split over the P columns
// of the projection, h_t = y @ w_p. The backward pass runs the transposes in the opposite order: phase A over
// the P columns, g = d_hs[t] + dz_{t+1} @ w_h.T (the gradient reaching h_t), phase B over the units,
// gy = g @ w_p.T and the row update of the plain backward (with dh = gy, Q = R).
//
// Layout (time-major, row-major, float32): as above, with w_h (P, 4H), w_p (H, P), h0 (B, P), hs (T, B, P);
// saved P (T, B, 4H), F and R (T, B, H) (R is the plain path's Q, o * (1 - tanh(c)^2)), y (T, B, H).

struct ProjForward {
  static constexpr int64_t kGates = 4;
  int64_t T, B, I, H, Pd;
  const float *xs, *wx, *b, *w, *wp, *h0, *c0;
  const bool* valid;
  float *hs, *hT, *cT, *P, *F, *R, *ys;  // ys: y (T, B, H) with save, else one step's y (B, H)
  bool save;

  float* y_at(int64_t t) const { return save ? ys + t * B * H : ys; }
};

// A task of the projected forward: units [u0, u0 + hw) of the gates, columns [p0, p0 + pw) of the projection.
struct ProjForwardTask {
  int64_t u0 = 0, hw = 0, p0 = 0, pw = 0, tc = 1;
  Scratch scratch;
  Resident w, wp;  // w_h's gate columns of the task's units (P, 4hw); w_p's columns of its projection (H, pw)
  float *wx, *zx, *z;

  ProjForwardTask(const ProjForward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1, p1;
    units(a.H, ntask, j, &u0, &u1);
    units(a.Pd, ntask, j, &p0, &p1);
    hw = u1 - u0;
    pw = p1 - p0;
    tc = chunk_steps(a.T, a.B, 4 * hw);
    w = Resident(a.Pd, 4 * hw, scratch.take(Resident::size(a.Pd, 4 * hw)));
    wx = scratch.take(a.I * 4 * hw);
    wp = Resident(a.H, pw, scratch.take(Resident::size(a.H, pw)));
    zx = scratch.take(tc * a.B * 4 * hw);
    z = scratch.take(a.B * 4 * hw);
  }

  static size_t sizes(const ProjForward& a, int ntask, int j) {
    int64_t u0, u1, p0, p1;
    units(a.H, ntask, j, &u0, &u1);
    units(a.Pd, ntask, j, &p0, &p1);
    const int64_t n4 = 4 * (u1 - u0);
    return Scratch::size({Resident::size(a.Pd, n4), size_t(a.I * n4), Resident::size(a.H, p1 - p0),
                          size_t(chunk_steps(a.T, a.B, n4) * a.B * n4), size_t(a.B * n4)});
  }
};

// Phase A of step t (schedule step 2t): the gates of the task's units; h_{t-1} is complete.
void proj_forward_gates(const ProjForward& a, ProjForwardTask& task, int64_t t) {
  const int64_t B = a.B, I = a.I, H = a.H, Pd = a.Pd, u0 = task.u0, hw = task.hw, n4 = 4 * hw, tc = task.tc;
  const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
  if (t == 0) {
    if (hw > 0) {
      task.w.pack([&](int64_t k, float* out) { gate_columns_row(a.w, k, H, 4, u0, hw, out); });
      pack_columns(a.wx, I, H, 4, u0, hw, task.wx);
      for (int64_t r = 0; r < B; ++r) std::memcpy(a.cT + r * H + u0, a.c0 + r * H + u0, hw * sizeof(float));
    }
    if (task.pw > 0) task.wp.pack([&](int64_t k, float* out) { gate_columns_row(a.wp, k, Pd, 1, task.p0, task.pw, out); });
  }
  if (hw == 0) return;
  if (t % tc == 0) {
    const int64_t m = std::min(tc, a.T - t);
    if (I > 0)
      sgemm(kRowMajor, kNoTrans, kNoTrans, m * B, n4, I, 1.0f, a.xs + t * B * I, I, task.wx, n4, 0.0f,
            task.zx, n4);
    else
      std::fill(task.zx, task.zx + m * B * n4, 0.0f);
  }
  const float* hp = t == 0 ? a.h0 : a.hs + (t - 1) * B * Pd;
  task.w.gemm(B, hp, Pd, task.z, n4);
  float* y = a.y_at(t);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = t * B + r;
    float* zr = &task.z[r * n4];
    float* yr = y + r * H + u0;
    if (a.valid && !a.valid[row]) {
      // c stays; phase B keeps h. The saved factors are zero here (finite, for the weight gradients' GEMMs).
      std::memset(yr, 0, hw * sizeof(float));
      if (a.save) {
        for (int64_t g = 0; g < 4; ++g) std::memset(a.P + row * 4 * H + g * H + u0, 0, hw * sizeof(float));
        std::memset(a.F + row * H + u0, 0, hw * sizeof(float));
        std::memset(a.R + row * H + u0, 0, hw * sizeof(float));
      }
      continue;
    }
    float* c = a.cT + r * H + u0;
    const float* zxr = &task.zx[((t % tc) * B + r) * n4];
    if (a.save) {
      forward_row_plain_save(hw, H, zr, zxr, a.b + u0, nullptr, c, yr, a.R + row * H + u0, a.F + row * H + u0,
                             nullptr);
      scatter_row(hw, H, 4, zr, a.P + row * 4 * H + u0);
    } else {
      forward_row_plain(hw, H, zr, zxr, a.b + u0, nullptr, c, yr, nullptr, nullptr, nullptr);
    }
  }
}

// Phase B of step t (schedule step 2t + 1): h_t = y_t @ w_p for the task's columns; y_t is complete.
void proj_forward_project(const ProjForward& a, ProjForwardTask& task, int64_t t) {
  const int64_t B = a.B, H = a.H, Pd = a.Pd, p0 = task.p0, pw = task.pw;
  if (pw == 0) return;
  float* out = a.hs + t * B * Pd;
  task.wp.gemm(B, a.y_at(t), H, out + p0, Pd);
  const float* hp = t == 0 ? a.h0 : a.hs + (t - 1) * B * Pd;
  if (a.valid)
    for (int64_t r = 0; r < B; ++r)
      if (!a.valid[t * B + r]) std::memcpy(out + r * Pd + p0, hp + r * Pd + p0, pw * sizeof(float));
  if (t == a.T - 1)
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.hT + r * Pd + p0, out + r * Pd + p0, pw * sizeof(float));
}

void proj_forward_step(const ProjForward& a, ProjForwardTask& task, int64_t s) {
  if (s % 2 == 0)
    proj_forward_gates(a, task, s / 2);
  else
    proj_forward_project(a, task, s / 2);
}

struct ProjBackward {
  static constexpr int64_t kGates = 4;
  int64_t T, B, H, Pd;
  const float *w, *wp, *P, *F, *R, *dhs, *dhT, *dcT;
  const bool* valid;
  float *dz, *G, *dh0, *dc0;
};

// A task of the projected backward: its units (dc, gy, dz rows) and its projection columns (the skip term of g).
struct ProjBackwardTask {
  int64_t u0 = 0, hw = 0, p0 = 0, pw = 0;
  Scratch scratch;
  Resident wt, wpt;  // w_h[p0:p0 + pw, :].T (4H, pw); w_p[u0:u0 + hw, :].T (P, hw)
  float *dc, *gy, *zero, *dz, *skip, *g;

  ProjBackwardTask(const ProjBackward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1, p1;
    units(a.H, ntask, j, &u0, &u1);
    units(a.Pd, ntask, j, &p0, &p1);
    hw = u1 - u0;
    pw = p1 - p0;
    wt = Resident(4 * a.H, pw, scratch.take(Resident::size(4 * a.H, pw)));
    wpt = Resident(a.Pd, hw, scratch.take(Resident::size(a.Pd, hw)));
    dc = scratch.take(a.B * hw);
    gy = scratch.take(a.B * hw);
    zero = scratch.take(a.B * hw);
    dz = scratch.take(a.B * 4 * hw);
    skip = scratch.take(a.B * pw);
    g = scratch.take(a.B * pw);
  }

  static size_t sizes(const ProjBackward& a, int ntask, int j) {
    int64_t u0, u1, p0, p1;
    units(a.H, ntask, j, &u0, &u1);
    units(a.Pd, ntask, j, &p0, &p1);
    const size_t bh = a.B * (u1 - u0), bp = a.B * (p1 - p0);
    return Scratch::size({Resident::size(4 * a.H, p1 - p0), Resident::size(a.Pd, u1 - u0), bh, bh, bh, 4 * bh, bp, bp});
  }
};

// Phase A for time t (t = -1: dh0), over the task's columns: g = d_hs[t] + dz_{t+1} @ w_h.T + skip, where skip is
// g of t + 1 on a row invalid there (its state passed through). G[t] is g on valid rows and 0 elsewhere.
void proj_backward_g(const ProjBackward& a, ProjBackwardTask& task, int64_t t) {
  const int64_t T = a.T, B = a.B, H = a.H, Pd = a.Pd, p0 = task.p0, pw = task.pw;
  if (pw == 0) return;
  float *g = task.g, *skip = task.skip;
  if (t == T - 1) {
    for (int64_t r = 0; r < B; ++r) std::memcpy(g + r * pw, a.dhT + r * Pd + p0, pw * sizeof(float));
  } else {
    task.wt.gemm(B, a.dz + (t + 1) * B * 4 * H, 4 * H, g, pw);  // dz_{t+1} (B, 4H) @ w_h[p0:p0 + pw, :].T
    for (int64_t k = 0; k < B * pw; ++k) g[k] += skip[k];
  }
  if (t < 0) {
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.dh0 + r * Pd + p0, g + r * pw, pw * sizeof(float));
    return;
  }
  for (int64_t r = 0; r < B; ++r) {
    const float* dy = a.dhs + (t * B + r) * Pd + p0;
    float* gr = g + r * pw;
    float* out = a.G + (t * B + r) * Pd + p0;
    float* sk = skip + r * pw;
    const bool v = !a.valid || a.valid[t * B + r];
    for (int64_t k = 0; k < pw; ++k) {
      const float gv = gr[k] + dy[k];
      out[k] = v ? gv : 0.0f;
      sk[k] = v ? 0.0f : gv;
    }
  }
}

// Phase B for time t, over the task's units: gy = G[t] @ w_p.T, then the plain row update with dh = gy.
void proj_backward_rows(const ProjBackward& a, ProjBackwardTask& task, int64_t t) {
  const int64_t B = a.B, H = a.H, Pd = a.Pd, u0 = task.u0, hw = task.hw, n4 = 4 * hw;
  if (hw == 0) return;
  task.wpt.gemm(B, a.G + t * B * Pd, Pd, task.gy, hw);  // G[t] (B, P) @ w_p[u0:u0 + hw, :].T
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = t * B + r;
    float* dz = &task.dz[r * n4];
    if (a.valid && !a.valid[row]) {
      std::memset(dz, 0, n4 * sizeof(float));  // dc passes through
    } else {
      backward_row(hw, H, a.P + row * 4 * H + u0, a.R + row * H + u0, a.F + row * H + u0, task.gy + r * hw,
                   task.zero + r * hw, task.dc + r * hw, dz);
    }
    scatter_row(hw, H, 4, dz, a.dz + row * 4 * H + u0);  // over P (maybe one buffer): the row is read already
  }
  if (t == 0)
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.dc0 + r * H + u0, task.dc + r * hw, hw * sizeof(float));
}

// Schedule step s = 2i: phase A of time T - 1 - i (i = T: dh0); s = 2i + 1: phase B of time T - 1 - i.
void proj_backward_step(const ProjBackward& a, ProjBackwardTask& task, int64_t s) {
  const int64_t t = a.T - 1 - s / 2;
  if (s == 0) {  // the task's weights and running state: dc from d_cT, no skip term yet, the zero dh of backward_row
    task.wt.pack([&](int64_t k, float* out) { transposed_row(a.w, 4 * a.H, task.p0, task.pw, k, out); });
    task.wpt.pack([&](int64_t k, float* out) { transposed_row(a.wp, a.Pd, task.u0, task.hw, k, out); });
    for (int64_t r = 0; r < a.B; ++r)
      std::memcpy(task.dc + r * task.hw, a.dcT + r * a.H + task.u0, task.hw * sizeof(float));
    std::fill(task.skip, task.skip + a.B * task.pw, 0.0f);
    std::fill(task.zero, task.zero + a.B * task.hw, 0.0f);
  }
  if (s % 2 == 0)
    proj_backward_g(a, task, t);
  else
    proj_backward_rows(a, task, t);
}

ffi::Error ProjForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b,
                           ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::PRED> valid,
                           ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                           ffi::ResultBuffer<ffi::F32> hT, ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::F32> P,
                           ffi::ResultBuffer<ffi::F32> F, ffi::ResultBuffer<ffi::F32> R, ffi::ResultBuffer<ffi::F32> y,
                           bool save) {
  if (g_sgemm.load() == nullptr) return bad("no sgemm was set (jaxlstm_native_set_sgemm)");
  auto d = xs.dimensions();
  if (d.size() != 3) return bad("xs must be (T, B, I)");
  auto wpd = wp.dimensions();
  if (wpd.size() != 2) return bad("w_p must be (H, P)");
  const int64_t T = d[0], B = d[1], I = d[2], H = wpd[0], Pd = wpd[1];
  if (T < 1 || H < 1 || Pd < 1) return bad("T, H and P must be positive");
  auto wd = w.dimensions();
  if (wd.size() != 2 || wd[0] != Pd || wd[1] != 4 * H) return bad("w_h must be (P, 4H)");
  auto wxd = wx.dimensions();
  if (wxd.size() != 2 || wxd[0] != I || wxd[1] != 4 * H) return bad("w_x must be (I, 4H)");
  if (static_cast<int64_t>(b.element_count()) != 4 * H) return bad("b must be (4H,)");
  if (valid.element_count() != 0 && static_cast<int64_t>(valid.element_count()) != T * B)
    return bad("valid must be (T, B) or empty");
  if (static_cast<int64_t>(h0.element_count()) != B * Pd || static_cast<int64_t>(c0.element_count()) != B * H)
    return bad("h0 must be (B, P) and c0 (B, H)");
  const int64_t n = T * B * H;
  if (save && (static_cast<int64_t>(P->element_count()) != 4 * n || static_cast<int64_t>(F->element_count()) != n ||
               static_cast<int64_t>(R->element_count()) != n || static_cast<int64_t>(y->element_count()) != n))
    return bad("P, F, R and y must be (T, B, 4H), (T, B, H), (T, B, H) and (T, B, H)");
  if (B == 0) return ffi::Error::Success();  // an empty batch has nothing to compute
  Scratch y_step(save ? 0 : B * H);  // inference keeps only the current step's y
  ProjForward a{T,
                B,
                I,
                H,
                Pd,
                xs.typed_data(),
                wx.typed_data(),
                b.typed_data(),
                w.typed_data(),
                wp.typed_data(),
                h0.typed_data(),
                c0.typed_data(),
                valid.element_count() ? valid.typed_data() : nullptr,
                hs->typed_data(),
                hT->typed_data(),
                cT->typed_data(),
                save ? P->typed_data() : nullptr,
                save ? F->typed_data() : nullptr,
                save ? R->typed_data() : nullptr,
                save ? y->typed_data() : y_step.take(B * H),
                save};
  advise_results(hs, P, F, R, y);  // without save, P, F, R and y are hs
  run_tasks<ProjForward, ProjForwardTask>(a, 2 * T, proj_forward_step);
  return ffi::Error::Success();
}

ffi::Error ProjForwardInferImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b,
                                ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::PRED> valid,
                                ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                                ffi::ResultBuffer<ffi::F32> hT, ffi::ResultBuffer<ffi::F32> cT) {
  return ProjForwardImpl(xs, wx, b, w, wp, valid, h0, c0, hs, hT, cT, hs, hs, hs, hs, false);
}

ffi::Error ProjForwardTrainImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b,
                                ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::PRED> valid,
                                ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                                ffi::ResultBuffer<ffi::F32> hT, ffi::ResultBuffer<ffi::F32> cT,
                                ffi::ResultBuffer<ffi::F32> P, ffi::ResultBuffer<ffi::F32> F,
                                ffi::ResultBuffer<ffi::F32> R, ffi::ResultBuffer<ffi::F32> y) {
  return ProjForwardImpl(xs, wx, b, w, wp, valid, h0, c0, hs, hT, cT, P, F, R, y, true);
}

ffi::Error ProjBackwardImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> P,
                            ffi::Buffer<ffi::F32> F, ffi::Buffer<ffi::F32> R, ffi::Buffer<ffi::PRED> valid,
                            ffi::Buffer<ffi::F32> dhs, ffi::Buffer<ffi::F32> dhT, ffi::Buffer<ffi::F32> dcT,
                            ffi::ResultBuffer<ffi::F32> dz, ffi::ResultBuffer<ffi::F32> G,
                            ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0) {
  if (g_sgemm.load() == nullptr) return bad("no sgemm was set (jaxlstm_native_set_sgemm)");
  auto d = P.dimensions();
  if (d.size() != 3 || d[2] % 4 != 0) return bad("P must be (T, B, 4H)");
  auto wpd = wp.dimensions();
  if (wpd.size() != 2) return bad("w_p must be (H, P)");
  const int64_t T = d[0], B = d[1], H = d[2] / 4, Pd = wpd[1];
  if (T < 1 || H < 1 || Pd < 1 || wpd[0] != H) return bad("w_p must be (H, P) with P's H, and T, H, P positive");
  auto wd = w.dimensions();
  if (wd.size() != 2 || wd[0] != Pd || wd[1] != 4 * H) return bad("w_h must be (P, 4H)");
  if (valid.element_count() != 0 && static_cast<int64_t>(valid.element_count()) != T * B)
    return bad("valid must be (T, B) or empty");
  const int64_t n = T * B * H;
  if (static_cast<int64_t>(F.element_count()) != n || static_cast<int64_t>(R.element_count()) != n)
    return bad("F and R must be (T, B, H)");
  if (static_cast<int64_t>(dhs.element_count()) != T * B * Pd || static_cast<int64_t>(dhT.element_count()) != B * Pd ||
      static_cast<int64_t>(dcT.element_count()) != B * H)
    return bad("d_hs, d_hT and d_cT must be (T, B, P), (B, P) and (B, H)");
  if (B == 0) return ffi::Error::Success();
  ProjBackward a{T,
                 B,
                 H,
                 Pd,
                 w.typed_data(),
                 wp.typed_data(),
                 P.typed_data(),
                 F.typed_data(),
                 R.typed_data(),
                 dhs.typed_data(),
                 dhT.typed_data(),
                 dcT.typed_data(),
                 valid.element_count() ? valid.typed_data() : nullptr,
                 dz->typed_data(),
                 G->typed_data(),
                 dh0->typed_data(),
                 dc0->typed_data()};
  advise_results(dz, G);
  run_tasks<ProjBackward, ProjBackwardTask>(a, 2 * T + 1, proj_backward_step);
  return ffi::Error::Success();
}

}  // namespace

#define JAXLSTM_FORWARD_ARGS                                                                                    \
  ffi::Ffi::Bind()                                                                                              \
    .Arg<ffi::Buffer<ffi::F32>>()  /* xs */                                                                     \
    .Arg<ffi::Buffer<ffi::F32>>()  /* w_x */                                                                    \
    .Arg<ffi::Buffer<ffi::F32>>()  /* b */                                                                      \
    .Arg<ffi::Buffer<ffi::F32>>()  /* w_h */                                                                    \
    .Arg<ffi::Buffer<ffi::F32>>()  /* peep */                                                                   \
    .Arg<ffi::Buffer<ffi::PRED>>() /* valid */                                                                  \
    .Arg<ffi::Buffer<ffi::F32>>()  /* h0 */                                                                     \
    .Arg<ffi::Buffer<ffi::F32>>()  /* c0 */                                                                     \
    .Ret<ffi::Buffer<ffi::F32>>()  /* hs */                                                                     \
    .Ret<ffi::Buffer<ffi::F32>>()  /* h_T */                                                                    \
    .Ret<ffi::Buffer<ffi::F32>>()  /* c_T */

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_lstm_forward_infer, ForwardInferImpl, JAXLSTM_FORWARD_ARGS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_lstm_forward_train, ForwardTrainImpl,
                              JAXLSTM_FORWARD_ARGS.Ret<ffi::Buffer<ffi::F32>>()  // P
                                .Ret<ffi::Buffer<ffi::F32>>()                    // Q
                                .Ret<ffi::Buffer<ffi::F32>>()                    // F
                                .Ret<ffi::Buffer<ffi::F32>>());                  // cs

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_lstm_backward, BackwardImpl,
                              ffi::Ffi::Bind()
                                .Arg<ffi::Buffer<ffi::F32>>()   // w_h
                                .Arg<ffi::Buffer<ffi::F32>>()   // P
                                .Arg<ffi::Buffer<ffi::F32>>()   // Q
                                .Arg<ffi::Buffer<ffi::F32>>()   // F
                                .Arg<ffi::Buffer<ffi::PRED>>()  // valid
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_hs
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_hT
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_cT
                                .Ret<ffi::Buffer<ffi::F32>>()   // dz
                                .Ret<ffi::Buffer<ffi::F32>>()   // dh0
                                .Ret<ffi::Buffer<ffi::F32>>()); // dc0


// The projected forward takes the plain forward's operands, with w_h (P, 4H) and w_p (H, P) in the place of peep.
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_lstm_proj_forward_infer, ProjForwardInferImpl, JAXLSTM_FORWARD_ARGS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_lstm_proj_forward_train, ProjForwardTrainImpl,
                              JAXLSTM_FORWARD_ARGS.Ret<ffi::Buffer<ffi::F32>>()  // P
                                .Ret<ffi::Buffer<ffi::F32>>()                    // F
                                .Ret<ffi::Buffer<ffi::F32>>()                    // R
                                .Ret<ffi::Buffer<ffi::F32>>());                  // y

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_lstm_proj_backward, ProjBackwardImpl,
                              ffi::Ffi::Bind()
                                .Arg<ffi::Buffer<ffi::F32>>()   // w_h
                                .Arg<ffi::Buffer<ffi::F32>>()   // w_p
                                .Arg<ffi::Buffer<ffi::F32>>()   // P
                                .Arg<ffi::Buffer<ffi::F32>>()   // F
                                .Arg<ffi::Buffer<ffi::F32>>()   // R
                                .Arg<ffi::Buffer<ffi::PRED>>()  // valid
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_hs
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_hT
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_cT
                                .Ret<ffi::Buffer<ffi::F32>>()   // dz
                                .Ret<ffi::Buffer<ffi::F32>>()   // G
                                .Ret<ffi::Buffer<ffi::F32>>()   // dh0
                                .Ret<ffi::Buffer<ffi::F32>>()); // dc0
