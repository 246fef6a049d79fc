// The native CPU GRU loops of jaxlstm: the forward recurrence and the backward dh recursion of one layer, as XLA FFI
// handlers (jaxlstm/_src/kernels/native_gru.py calls them through jax.ffi.ffi_call).
//
// What this file computes is exactly the two loops of jaxlstm/_src/kernels/fused_gru.py (`_forward` and
// `_backward`, without resets), PyTorch's GRU (gates r, z, n; b_hn inside the reset product), and the forward's input
// projection; the weight GEMMs after the backward loop stay in XLA. It is organized as lstm.cc is, on runtime.h's
// threads: a task owns the r, z and n columns of its units, computes its columns of xs @ w_x a chunk of steps at a
// time, and per step runs one small GEMM (h_prev @ its columns of w_h) and one pass over its gates.
//
// Layout (time-major, row-major, float32):
//   xs (T, B, I) the inputs in processing order, w_x (I, 3H); gates r, z, n in blocks of H columns
//   b (3H), w_h (H, 3H), b_hn (H), valid (T, B) bool or empty, h0 (B, H)
//   hs (T, B, H) the carried h after each step (frozen where invalid); h_T (B, H)
//   F3 (T, B, 3H) = [P_r, P_z, Q], P_n and Z (T, B, H): the backward factors of fused_gru.py's module docstring
//   backward: g (T, B, 3H) the gradient of h W_h + b (over F3), g_n (T, B, H) that of n's input side (over P_n)

#include <cstdint>
#include <cstring>

#include "panels.h"
#include "runtime.h"

namespace ffi = xla::ffi;

namespace {

using namespace jaxlstm_native;  // NOLINT: this file's loops are written on the runtime's names

// One row of one step of the forward pass over a task's hw units. z holds the row's h_prev @ w_h for the task's
// columns (3 blocks of hw) and, with save, receives F3's three blocks; zx holds the row's input projection for the
// same columns; hp is the row's h_prev, bias, bhn and the outputs point at the task's first unit.
template <bool kSave>
__attribute__((always_inline)) inline void gru_row_body(int64_t hw, int64_t H, float* __restrict z,
                                                        const float* __restrict zx, const float* __restrict bias,
                                                        const float* __restrict bhn, const float* __restrict hp,
                                                        float* __restrict h, float* __restrict Pn,
                                                        float* __restrict Z) {
  for (int64_t j = 0; j < hw; ++j) {
    const float r = sigmoid_f(z[j] + zx[j] + bias[j]);
    const float u = sigmoid_f(z[hw + j] + zx[hw + j] + bias[H + j]);
    const float hn = z[2 * hw + j] + bhn[j];
    const float n = tanh_f(zx[2 * hw + j] + bias[2 * H + j] + r * hn);
    const float hpv = hp[j];
    if (kSave) {
      const float p_n = (1 - u) * (1 - n * n);
      z[j] = p_n * hn * (r - r * r);
      z[hw + j] = (hpv - n) * (u - u * u);
      z[2 * hw + j] = p_n * r;
      Pn[j] = p_n;
      Z[j] = u;
    }
    h[j] = n + u * (hpv - n);
  }
}

JAXLSTM_CLONES void gru_row(int64_t hw, int64_t H, float* z, const float* zx, const float* bias, const float* bhn,
                            const float* hp, float* h, float* Pn, float* Z) {
  gru_row_body<false>(hw, H, z, zx, bias, bhn, hp, h, Pn, Z);
}

JAXLSTM_CLONES void gru_row_save(int64_t hw, int64_t H, float* z, const float* zx, const float* bias,
                                 const float* bhn, const float* hp, float* h, float* Pn, float* Z) {
  gru_row_body<true>(hw, H, z, zx, bias, bhn, hp, h, Pn, Z);
}

// One row of one step of the backward pass: dh += d_hs[t]; g = F3 * [dh, dh, dh]; g_n = P_n * dh; dh = Z * dh, the
// skip term to which the next step adds g @ w_h.T once every task has written its g. An invalid row passes dh
// through and has g = g_n = 0.
JAXLSTM_CLONES void gru_backward_row(int64_t hw, int64_t H, const float* __restrict F3, const float* __restrict Pn,
                                     const float* __restrict Z, const float* __restrict dy, float* __restrict dh,
                                     float* __restrict g, float* gn) {  // gn may be Pn's buffer
  for (int64_t j = 0; j < hw; ++j) {
    const float d = dh[j] + dy[j];
    g[j] = F3[j] * d;
    g[hw + j] = F3[H + j] * d;
    g[2 * hw + j] = F3[2 * H + j] * d;
    gn[j] = Pn[j] * d;
    dh[j] = Z[j] * d;
  }
}

struct Forward {
  static constexpr int64_t kGates = 3;
  int64_t T, B, I, H;
  const float *xs, *wx, *b, *w, *bhn, *h0;
  const bool* valid;
  float *hs, *hT, *F3, *Pn, *Z;
  bool save;
};

// A forward task: its units [u0, u0 + hw), its columns of w_h and w_x packed into (H, 3hw) and (I, 3hw) blocks that
// stay hot in the cache of the core that runs it, a chunk of its input projections, and a scratch row block for the
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
    tc = chunk_steps(a.T, a.B, 3 * hw);
    w = Resident(a.H, 3 * hw, scratch.take(Resident::size(a.H, 3 * hw)));
    wx = scratch.take(a.I * 3 * hw);
    zx = scratch.take(tc * a.B * 3 * hw);
    z = scratch.take(a.B * 3 * hw);
  }

  static size_t sizes(const Forward& a, int ntask, int j) {
    int64_t u0, u1;
    units(a.H, ntask, j, &u0, &u1);
    const int64_t n3 = 3 * (u1 - u0);
    return Scratch::size({Resident::size(a.H, n3), size_t(a.I * n3), size_t(chunk_steps(a.T, a.B, n3) * a.B * n3),
                          size_t(a.B * n3)});
  }
};

// Step t of a forward task: h of step t - 1 is complete.
void forward_step(const Forward& a, ForwardTask& task, int64_t t) {
  const int64_t B = a.B, I = a.I, H = a.H, u0 = task.u0, hw = task.hw, n3 = 3 * hw, tc = task.tc;
  if (hw == 0) return;
  const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
  if (t == 0) {
    task.w.pack([&](int64_t k, float* out) { gate_columns_row(a.w, k, H, 3, u0, hw, out); });
    pack_columns(a.wx, I, H, 3, u0, hw, task.wx);
  }
  if (t % tc == 0) {
    // The input projections of steps [t, t + m) for the task's columns: xs's rows are contiguous in time.
    const int64_t m = std::min(tc, a.T - t);
    if (I > 0)
      sgemm(kRowMajor, kNoTrans, kNoTrans, m * B, n3, I, 1.0f, a.xs + t * B * I, I, task.wx, n3, 0.0f, task.zx, n3);
    else
      std::fill(task.zx, task.zx + m * B * n3, 0.0f);
  }
  const float* hp = t == 0 ? a.h0 : a.hs + (t - 1) * B * H;
  task.w.gemm(B, hp, H, task.z, n3);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = t * B + r;
    float* zr = &task.z[r * n3];
    float* h = a.hs + row * H + u0;
    const float* hpr = hp + r * H + u0;
    if (a.valid && !a.valid[row]) {
      // The state stays as it was. F3, P_n and Z are left as they are: the backward pass never reads them here.
      std::memcpy(h, hpr, hw * sizeof(float));
      continue;
    }
    const float* zxr = &task.zx[((t % tc) * B + r) * n3];
    if (a.save) {
      gru_row_save(hw, H, zr, zxr, a.b + u0, a.bhn + u0, hpr, h, a.Pn + row * H + u0, a.Z + row * H + u0);
      scatter_row(hw, H, 3, zr, a.F3 + row * 3 * H + u0);
    } else {
      gru_row(hw, H, zr, zxr, a.b + u0, a.bhn + u0, hpr, h, nullptr, nullptr);
    }
  }
  if (t == a.T - 1)
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.hT + r * H + u0, a.hs + (t * B + r) * H + u0, hw * sizeof(float));
}

struct Backward {
  static constexpr int64_t kGates = 3;
  int64_t T, B, H;
  const float *w, *F3, *Pn, *Z, *dhs, *dhT;
  const bool* valid;
  float *g, *gn, *dh0;
};

// A backward task: its units, the running dh of its units, and scratch rows.
struct BackwardTask {
  int64_t u0 = 0, hw = 0;
  Scratch scratch;
  Resident wt;  // w_h[u0:u0 + hw, :].T, (3H, hw)
  float *dh, *mm, *g;

  BackwardTask(const Backward& a, int ntask, int j) : scratch(sizes(a, ntask, j)) {
    int64_t u1;
    units(a.H, ntask, j, &u0, &u1);
    hw = u1 - u0;
    wt = Resident(3 * a.H, hw, scratch.take(Resident::size(3 * a.H, hw)));
    dh = scratch.take(a.B * hw);
    mm = scratch.take(a.B * hw);
    g = scratch.take(a.B * 3 * hw);
  }

  static size_t sizes(const Backward& a, int ntask, int j) {
    int64_t u0, u1;
    units(a.H, ntask, j, &u0, &u1);
    const size_t bh = a.B * (u1 - u0);
    return Scratch::size({Resident::size(3 * a.H, u1 - u0), bh, bh, 3 * bh});
  }
};

// Step i of a backward task, i = 0 .. T: dh_prev from g of time T - i (complete), then the rows of time T - 1 - i.
void backward_step(const Backward& a, BackwardTask& task, int64_t i) {
  const int64_t T = a.T, B = a.B, H = a.H, u0 = task.u0, hw = task.hw, n3 = 3 * hw;
  if (hw == 0) return;
  float* dh = task.dh;
  if (i == 0) {
    task.wt.pack([&](int64_t k, float* out) { transposed_row(a.w, 3 * H, u0, hw, k, out); });
    for (int64_t r = 0; r < B; ++r) std::memcpy(dh + r * hw, a.dhT + r * H + u0, hw * sizeof(float));
  } else {
    // dh_prev for the task's units: g (B, 3H) @ w_h[u0:u0 + hw, :].T.
    task.wt.gemm(B, a.g + (T - i) * B * 3 * H, 3 * H, task.mm, hw);
    for (int64_t k = 0; k < B * hw; ++k) dh[k] += task.mm[k];  // an invalid row's g is 0, so mm adds nothing there
  }
  if (i == T) {
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.dh0 + r * H + u0, dh + r * hw, hw * sizeof(float));
    return;
  }
  const int64_t t = T - 1 - i;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = t * B + r;
    float* g = &task.g[r * n3];
    float* dhr = dh + r * hw;
    const float* dy = a.dhs + row * H + u0;
    if (a.valid && !a.valid[row]) {
      for (int64_t j = 0; j < hw; ++j) dhr[j] += dy[j];
      std::memset(g, 0, n3 * sizeof(float));
      std::memset(a.gn + row * H + u0, 0, hw * sizeof(float));
    } else {
      gru_backward_row(hw, H, a.F3 + row * 3 * H + u0, a.Pn + row * H + u0, a.Z + row * H + u0, dy, dhr, g,
                       a.gn + row * H + u0);
    }
    scatter_row(hw, H, 3, g, a.g + row * 3 * H + u0);  // g over F3 (maybe one buffer): the row is read already
  }
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b,
                       ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> bhn, ffi::Buffer<ffi::PRED> valid,
                       ffi::Buffer<ffi::F32> h0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                       ffi::ResultBuffer<ffi::F32> F3, ffi::ResultBuffer<ffi::F32> Pn, ffi::ResultBuffer<ffi::F32> Z,
                       bool save) {
  auto d = xs.dimensions();
  if (d.size() != 3) return bad("xs must be (T, B, I)");
  auto wd = w.dimensions();
  if (wd.size() != 2) return bad("w_h must be (H, 3H)");
  const int64_t T = d[0], B = d[1], I = d[2], H = wd[0];
  if (auto e = check_common(T, B, H, 3, w, valid); e.failure()) return e;
  auto wxd = wx.dimensions();
  if (wxd.size() != 2 || wxd[0] != I || wxd[1] != 3 * H) return bad("w_x must be (I, 3H)");
  if (static_cast<int64_t>(b.element_count()) != 3 * H) return bad("b must be (3H,)");
  if (static_cast<int64_t>(bhn.element_count()) != H) return bad("b_hn must be (H,)");
  if (static_cast<int64_t>(h0.element_count()) != B * H) return bad("h0 must be (B, H)");
  if (save && (static_cast<int64_t>(F3->element_count()) != T * B * 3 * H ||
               static_cast<int64_t>(Pn->element_count()) != T * B * H ||
               static_cast<int64_t>(Z->element_count()) != T * B * H))
    return bad("F3, P_n and Z must be (T, B, 3H), (T, B, H) and (T, B, H)");
  Forward a{T,
            B,
            I,
            H,
            xs.typed_data(),
            wx.typed_data(),
            b.typed_data(),
            w.typed_data(),
            bhn.typed_data(),
            h0.typed_data(),
            valid.element_count() ? valid.typed_data() : nullptr,
            hs->typed_data(),
            hT->typed_data(),
            save ? F3->typed_data() : nullptr,
            save ? Pn->typed_data() : nullptr,
            save ? Z->typed_data() : nullptr,
            save};
  advise_results(hs, F3, Pn, Z);  // without save, F3, P_n and Z are hs
  if (B > 0) run_tasks<Forward, ForwardTask>(a, T, forward_step);  // an empty batch has nothing to compute
  return ffi::Error::Success();
}

// Inference: hs and h_T only (one handler with save=false; the training results are not there).
ffi::Error ForwardInferImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b,
                            ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> bhn, ffi::Buffer<ffi::PRED> valid,
                            ffi::Buffer<ffi::F32> h0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT) {
  return ForwardImpl(xs, wx, b, w, bhn, valid, h0, hs, hT, hs, hs, hs, false);
}

ffi::Error ForwardTrainImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> wx, ffi::Buffer<ffi::F32> b,
                            ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> bhn, ffi::Buffer<ffi::PRED> valid,
                            ffi::Buffer<ffi::F32> h0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                            ffi::ResultBuffer<ffi::F32> F3, ffi::ResultBuffer<ffi::F32> Pn,
                            ffi::ResultBuffer<ffi::F32> Z) {
  return ForwardImpl(xs, wx, b, w, bhn, valid, h0, hs, hT, F3, Pn, Z, true);
}

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> F3, ffi::Buffer<ffi::F32> Pn,
                        ffi::Buffer<ffi::F32> Z, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> dhs,
                        ffi::Buffer<ffi::F32> dhT, ffi::ResultBuffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> gn,
                        ffi::ResultBuffer<ffi::F32> dh0) {
  auto d = F3.dimensions();
  if (d.size() != 3 || d[2] % 3 != 0) return bad("F3 must be (T, B, 3H)");
  const int64_t T = d[0], B = d[1], H = d[2] / 3;
  if (auto e = check_common(T, B, H, 3, w, valid); e.failure()) return e;
  const int64_t n = T * B * H;
  if (static_cast<int64_t>(Pn.element_count()) != n || static_cast<int64_t>(Z.element_count()) != n ||
      static_cast<int64_t>(dhs.element_count()) != n)
    return bad("P_n, Z and d_hs must be (T, B, H)");
  if (static_cast<int64_t>(dhT.element_count()) != B * H) return bad("d_hT must be (B, H)");
  Backward a{T,
             B,
             H,
             w.typed_data(),
             F3.typed_data(),
             Pn.typed_data(),
             Z.typed_data(),
             dhs.typed_data(),
             dhT.typed_data(),
             valid.element_count() ? valid.typed_data() : nullptr,
             g->typed_data(),
             gn->typed_data(),
             dh0->typed_data()};
  advise_results(g, gn);
  if (B > 0) run_tasks<Backward, BackwardTask>(a, T + 1, backward_step);
  return ffi::Error::Success();
}

}  // namespace

#define JAXLSTM_GRU_FORWARD_ARGS                                                                                \
  ffi::Ffi::Bind()                                                                                              \
    .Arg<ffi::Buffer<ffi::F32>>()  /* xs */                                                                     \
    .Arg<ffi::Buffer<ffi::F32>>()  /* w_x */                                                                    \
    .Arg<ffi::Buffer<ffi::F32>>()  /* b */                                                                      \
    .Arg<ffi::Buffer<ffi::F32>>()  /* w_h */                                                                    \
    .Arg<ffi::Buffer<ffi::F32>>()  /* b_hn */                                                                   \
    .Arg<ffi::Buffer<ffi::PRED>>() /* valid */                                                                  \
    .Arg<ffi::Buffer<ffi::F32>>()  /* h0 */                                                                     \
    .Ret<ffi::Buffer<ffi::F32>>()  /* hs */                                                                     \
    .Ret<ffi::Buffer<ffi::F32>>()  /* h_T */

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_gru_forward_infer, ForwardInferImpl, JAXLSTM_GRU_FORWARD_ARGS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_gru_forward_train, ForwardTrainImpl,
                              JAXLSTM_GRU_FORWARD_ARGS.Ret<ffi::Buffer<ffi::F32>>()  // F3
                                .Ret<ffi::Buffer<ffi::F32>>()                        // P_n
                                .Ret<ffi::Buffer<ffi::F32>>());                      // Z

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxlstm_gru_backward, BackwardImpl,
                              ffi::Ffi::Bind()
                                .Arg<ffi::Buffer<ffi::F32>>()   // w_h
                                .Arg<ffi::Buffer<ffi::F32>>()   // F3
                                .Arg<ffi::Buffer<ffi::F32>>()   // P_n
                                .Arg<ffi::Buffer<ffi::F32>>()   // Z
                                .Arg<ffi::Buffer<ffi::PRED>>()  // valid
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_hs
                                .Arg<ffi::Buffer<ffi::F32>>()   // d_hT
                                .Ret<ffi::Buffer<ffi::F32>>()   // g
                                .Ret<ffi::Buffer<ffi::F32>>()   // g_n
                                .Ret<ffi::Buffer<ffi::F32>>()); // dh0
