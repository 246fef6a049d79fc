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
// The threads, the schedule and the scratch memory are runtime.h's.

#include <cstdint>
#include <cstring>

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
  float *w, *wx, *zx, *z;

  ForwardTask(const Forward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1;
    units(a.H, ntask, j, &u0, &u1);
    hw = u1 - u0;
    tc = chunk_steps(a.T, a.B, 4 * hw);
    w = scratch.take(a.H * 4 * hw);
    wx = scratch.take(a.I * 4 * hw);
    zx = scratch.take(tc * a.B * 4 * hw);
    z = scratch.take(a.B * 4 * hw);
  }

  static size_t sizes(const Forward& a, int ntask, int j) {
    int64_t u0, u1;
    units(a.H, ntask, j, &u0, &u1);
    const int64_t n4 = 4 * (u1 - u0);
    return Scratch::size({size_t(a.H * n4), size_t(a.I * n4), size_t(chunk_steps(a.T, a.B, n4) * a.B * n4),
                          size_t(a.B * n4)});
  }
};

// Step t of a forward task: h of step t - 1 is complete.
void forward_step(const Forward& a, ForwardTask& task, int64_t t) {
  const int64_t B = a.B, I = a.I, H = a.H, u0 = task.u0, hw = task.hw, n4 = 4 * hw, tc = task.tc;
  if (hw == 0) return;
  const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
  if (t == 0) {
    pack_columns(a.w, H, H, 4, u0, hw, task.w);
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
  sgemm(kRowMajor, kNoTrans, kNoTrans, B, n4, H, 1.0f, hp, H, task.w, n4, 0.0f, task.z, n4);
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
  float *dh, *dc, *g, *dz;

  BackwardTask(const Backward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1;
    units(a.H, ntask, j, &u0, &u1);
    hw = u1 - u0;
    dh = scratch.take(a.B * hw);
    dc = scratch.take(a.B * hw);
    g = scratch.take(a.B * hw);
    dz = scratch.take(a.B * 4 * hw);
  }

  static size_t sizes(const Backward& a, int ntask, int j) {
    int64_t u0, u1;
    units(a.H, ntask, j, &u0, &u1);
    const size_t bh = a.B * (u1 - u0);
    return Scratch::size({bh, bh, bh, 4 * bh});
  }
};

// Step i of a backward task, i = 0 .. T: dh_prev from dz of time T - i (complete), then the rows of time T - 1 - i.
void backward_step(const Backward& a, BackwardTask& task, int64_t i) {
  const int64_t T = a.T, B = a.B, H = a.H, u0 = task.u0, hw = task.hw, n4 = 4 * hw;
  if (hw == 0) return;
  float *dh = task.dh, *dc = task.dc;
  if (i == 0) {
    for (int64_t r = 0; r < B; ++r) {
      std::memcpy(dh + r * hw, a.dhT + r * H + u0, hw * sizeof(float));
      std::memcpy(dc + r * hw, a.dcT + r * H + u0, hw * sizeof(float));
    }
  } else {
    // dh_prev for the task's units: dz (B, 4H) @ w_h[u0:u0 + hw, :].T; rows of w_h are contiguous, so no packing.
    const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
    sgemm(kRowMajor, kNoTrans, kTrans, B, hw, 4 * H, 1.0f, a.dz + (T - i) * B * 4 * H, 4 * H, a.w + u0 * 4 * H, 4 * H,
          0.0f, task.g, hw);
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
  if (B > 0) run_tasks<Backward, BackwardTask>(a, T + 1, backward_step);
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

