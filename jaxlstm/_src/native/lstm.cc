// The native CPU LSTM loops of jaxlstm: the forward recurrence and the backward (dh, dc) recursion of one layer,
// as XLA FFI handlers (jaxlstm/_src/kernels/native.py calls them through jax.ffi.ffi_call).
//
// What this file computes is exactly the two loops of jaxlstm/_src/kernels/fused.py (`_forward` and the loop of
// `_layer_bwd`); the input GEMM before the loop and the weight GEMMs after it stay in XLA. It exists because XLA's
// CPU while loop pays microseconds per fusion, per small GEMM and per thread hand-off on every step; here a step
// costs one small GEMM per worker, one pass over the gates and one barrier.
//
// Layout (time-major, row-major, float32):
//   zx (T, B, 4H) the input projection xs @ w_x, bias not added; gates i, f, g, o in blocks of H columns
//   b (4H), w_h (H, 4H), peep (3, H) or empty, valid (T, B) bool or empty, h0 and c0 (B, H)
//   hs (T, B, H) the carried h after each step (frozen where invalid); h_T, c_T (B, H)
//   P (T, B, 4H), Q and F (T, B, H): the backward factors of fused.py's _backward_factors; cs (T, B, H), the carried
//   c, for the peephole gradient only (empty without peepholes)
//
// Threads: the hidden units are split over the workers; a worker owns the columns of all four gates of its units, so
// the gate math of a step reads nothing another worker writes, and the only hand-off is one barrier per step (the
// next step's GEMM reads all of h, or in the backward pass all of dz). The workers are this library's own persistent
// threads, with the calling thread as worker 0. XLA FFI's intra-op thread pool was not used: a barrier needs all
// workers running at once, which a shared pool that may be busy with other ops cannot promise (a deadlock risk).
//
// The per-step GEMM is OpenBLAS's sgemm (the scipy-openblas32 wheel, DYNAMIC_ARCH: it picks its kernels for the CPU
// at run time), called single-threaded from each worker on its own columns. native.py loads that library and hands
// its cblas_sgemm to jaxlstm_native_set_sgemm, so this file links against no BLAS. The gate loops are plain C++,
// compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at load time (target_clones): never -march=native,
// so a wheel built here runs on older CPUs.

#include <Python.h>  // only for PyInit__lstm below
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define JAXLSTM_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define JAXLSTM_CLONES
#endif

namespace {

// cblas_sgemm with 32-bit integers (CBLAS's enums are ints).
using SgemmFn = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
std::atomic<SgemmFn> g_sgemm{nullptr};
std::atomic<int> g_threads{0};  // 0: automatic; n > 0: exactly min(n, H) workers (tests and benchmarks)
std::atomic<int> g_single_calls{0};  // calls left to run on one thread after an oversubscribed one (automatic mode)

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spin a little, then yield: a step's barrier is usually met within a microsecond, but on a loaded machine the other
// worker may be descheduled, and spinning on then would only keep it off the core.
template <class Done>
void spin_wait(Done done) {
  for (int i = 0; i < 4000; ++i) {
    if (done()) return;
    cpu_relax();
  }
  while (!done()) std::this_thread::yield();
}

// A sense-reversing barrier for the n workers of one job; count and phase on their own cache lines.
struct Barrier {
  alignas(64) std::atomic<int> count{0};
  alignas(64) std::atomic<int> phase{0};
  alignas(64) std::atomic<int64_t> waited_ns{0};  // the workers' time spent waiting here, summed at their end
  int n = 1;

  // Waits for the other workers; adds the time it waited to *waited (nanoseconds).
  void wait(int64_t* waited) {
    if (n == 1) return;
    const int p = phase.load(std::memory_order_acquire);  // the phase cannot move before this worker arrives
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      phase.store(p + 1, std::memory_order_release);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      spin_wait([&] { return phase.load(std::memory_order_acquire) != p; });
      *waited += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    }
  }
};

int cpu_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Persistent worker threads; the caller is worker 0. One job at a time (a mutex), and every pool thread acknowledges
// every job, so a job's description is never read after the next one has replaced it.
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();  // never destroyed: its threads outlive static destruction at exit
    return *pool;
  }

  void run(int n, const std::function<void(int)>& fn) {
    if (n <= 1) {
      fn(0);
      return;
    }
    std::lock_guard<std::mutex> call(call_mu_);
    while (static_cast<int>(threads_.size()) < n - 1) {
      const int id = static_cast<int>(threads_.size()) + 1;
      threads_.emplace_back([this, id] { loop(id); });
      threads_.back().detach();
    }
    fn_ = &fn;
    n_ = n;
    pending_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    spin_wait([&] { return pending_.load(std::memory_order_acquire) == 0; });
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      // Between the calls of one training step (layer after layer) a short spin catches the next job; after that
      // the thread sleeps, so an idle jaxlstm keeps no core busy.
      bool ready = false;
      for (int i = 0; i < 20000 && !ready; ++i) {
        ready = gen_.load(std::memory_order_acquire) != seen;
        if (!ready) cpu_relax();
      }
      if (!ready) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return gen_.load(std::memory_order_acquire) != seen; });
      }
      seen = gen_.load(std::memory_order_acquire);
      if (id < n_) (*fn_)(id);
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* fn_ = nullptr;
  int n_ = 0;
};

// How many workers a layer of batch B and H units gets. A barrier costs about a microsecond, so steps of under
// ~32k multiply-adds run on one thread; each worker keeps at least 16 units (whole cache lines of each gate).
int choose_threads(int64_t B, int64_t H) {
  const int forced = g_threads.load(std::memory_order_relaxed);
  if (forced > 0) return static_cast<int>(std::min<int64_t>(forced, std::max<int64_t>(H, 1)));
  if (B * H * 4 * H < 32768) return 1;
  static const int cpus = [] {
    const char* env = std::getenv("JAXLSTM_NATIVE_THREADS");
    const int n = env ? std::atoi(env) : 0;
    return n > 0 ? n : cpu_count();
  }();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cpus, H / 16)));
}

// Worker k's units [u0, u1): equal shares, in multiples of 16 units where H allows.
void units(int64_t H, int nt, int k, int64_t* u0, int64_t* u1) {
  int64_t chunk = (H + nt - 1) / nt;
  if (H >= 16 * nt) chunk = (chunk + 15) / 16 * 16;
  *u0 = std::min<int64_t>(H, k * chunk);
  *u1 = std::min<int64_t>(H, *u0 + chunk);
}

// tanh as XLA's CPU backend computes it (Eigen's rational approximation, float32): branch-free, so the gate loops
// vectorize, and the native kernel agrees with the XLA kernels to float32 rounding.
inline float tanh_f(float x) {
  const float clamp = 7.90531110763549805f;
  const float ax = x < 0 ? -x : x;
  float y = x > clamp ? clamp : x;
  y = y < -clamp ? -clamp : y;
  const float y2 = y * y;
  float p = y2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * y2 + -8.60467152213735e-11f;
  p = p * y2 + 5.12229709037114e-08f;
  p = p * y2 + 1.48572235717979e-05f;
  p = p * y2 + 6.37261928875436e-04f;
  p = p * y2 + 4.89352455891786e-03f;
  p = p * y;
  float q = y2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * y2 + 2.26843463243900e-03f;
  q = q * y2 + 4.89352518554385e-03f;
  return ax < 0.0004f ? x : p / q;
}

inline float sigmoid_f(float x) { return 0.5f * tanh_f(0.5f * x) + 0.5f; }

// One row of one step of the forward pass over a worker's hw units. z holds the row's h_prev @ w_h for the worker's
// columns (4 blocks of hw) and, with save, receives P's four blocks; zx, bias and the outputs point at the worker's
// first unit. restrict holds: P, which may share memory with zx, is written from z after this loop (see below).
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
    float af = z[hw + j] + zx[H + j] + bias[H + j];
    const float ag = z[2 * hw + j] + zx[2 * H + j] + bias[2 * H + j];
    float ao = z[3 * hw + j] + zx[3 * H + j] + bias[3 * H + j];
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
// invalid row passes (dh, dc) through and has dz = 0. dz (4 blocks of hw) is the worker's scratch; dh is left as
// the skip term (0 for a valid row), to which the caller adds dz @ w_h.T after the barrier.
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

// Copies a worker's 4 blocks of hw columns from its scratch row (contiguous) into a (4H)-wide row at its units.
inline void scatter_row(int64_t hw, int64_t H, const float* src, float* dst) {
  for (int g = 0; g < 4; ++g) std::memcpy(dst + g * H, src + g * hw, hw * sizeof(float));
}

struct Forward {
  int64_t T, B, H;
  const float *zx, *b, *w, *peep, *h0, *c0;
  const bool* valid;
  float *hs, *hT, *cT, *P, *Q, *F, *cs;
  bool save;
};

void forward_worker(const Forward& a, int nt, int k, Barrier& barrier, int64_t* waited_ns) {
  const int64_t T = a.T, B = a.B, H = a.H;
  int64_t u0, u1;
  units(H, nt, k, &u0, &u1);
  const int64_t hw = u1 - u0, n4 = 4 * hw;
  const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
  // The worker's columns of w_h, packed once per call into a (H, 4hw) block that stays hot in its core's cache, and
  // a scratch row block for the gates: all allocation is here, before the loop.
  std::vector<float> w(H * n4), z(B * n4);
  for (int64_t r = 0; r < H; ++r)
    for (int g = 0; g < 4; ++g) std::memcpy(&w[r * n4 + g * hw], a.w + r * 4 * H + g * H + u0, hw * sizeof(float));
  for (int64_t r = 0; r < B; ++r) std::memcpy(a.cT + r * H + u0, a.c0 + r * H + u0, hw * sizeof(float));
  const float* peep = a.peep ? a.peep + u0 : nullptr;
  const ForwardRow row_fn = peep ? (a.save ? forward_row_peep_save : forward_row_peep)
                                 : (a.save ? forward_row_plain_save : forward_row_plain);
  for (int64_t t = 0; t < T; ++t) {
    const float* hp = t == 0 ? a.h0 : a.hs + (t - 1) * B * H;
    if (hw > 0) {
      sgemm(kRowMajor, kNoTrans, kNoTrans, B, n4, H, 1.0f, hp, H, w.data(), n4, 0.0f, z.data(), n4);
      for (int64_t r = 0; r < B; ++r) {
        const int64_t row = t * B + r;
        float* zr = &z[r * n4];
        float* c = a.cT + r * H + u0;
        float* h = a.hs + row * H + u0;
        float* cs = a.cs ? a.cs + row * H + u0 : nullptr;
        if (a.valid && !a.valid[row]) {
          // The state stays as it was. P, Q and F are left as they are: the backward pass never reads them here.
          std::memcpy(h, hp + r * H + u0, hw * sizeof(float));
          if (cs) std::memcpy(cs, c, hw * sizeof(float));
          continue;
        }
        row_fn(hw, H, zr, a.zx + row * 4 * H + u0, a.b + u0, peep, c, h, a.save ? a.Q + row * H + u0 : nullptr,
               a.save ? a.F + row * H + u0 : nullptr, cs);
        // P over zx (they may be one buffer): only after the row's zx has been read.
        if (a.save) scatter_row(hw, H, zr, a.P + row * 4 * H + u0);
      }
    }
    barrier.wait(waited_ns);  // h of step t is complete: the next step's GEMM reads all of it
  }
  for (int64_t r = 0; r < B; ++r) std::memcpy(a.hT + r * H + u0, a.hs + ((T - 1) * B + r) * H + u0, hw * sizeof(float));
}

struct Backward {
  int64_t T, B, H;
  const float *w, *P, *Q, *F, *dhs, *dhT, *dcT;
  const bool* valid;
  float *dz, *dh0, *dc0;
};

void backward_worker(const Backward& a, int nt, int k, Barrier& barrier, int64_t* waited_ns) {
  const int64_t T = a.T, B = a.B, H = a.H;
  int64_t u0, u1;
  units(H, nt, k, &u0, &u1);
  const int64_t hw = u1 - u0, n4 = 4 * hw;
  const SgemmFn sgemm = g_sgemm.load(std::memory_order_acquire);
  std::vector<float> dh(B * hw), dc(B * hw), g(B * hw), dz(B * n4);
  for (int64_t r = 0; r < B; ++r) {
    std::memcpy(&dh[r * hw], a.dhT + r * H + u0, hw * sizeof(float));
    std::memcpy(&dc[r * hw], a.dcT + r * H + u0, hw * sizeof(float));
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t r = 0; r < B && hw > 0; ++r) {
      const int64_t row = t * B + r;
      if (a.valid && !a.valid[row])
        backward_row_invalid(hw, a.dhs + row * H + u0, &dh[r * hw], &dz[r * n4]);
      else
        backward_row(hw, H, a.P + row * 4 * H + u0, a.Q + row * H + u0, a.F + row * H + u0, a.dhs + row * H + u0,
                     &dh[r * hw], &dc[r * hw], &dz[r * n4]);
      scatter_row(hw, H, &dz[r * n4], a.dz + row * 4 * H + u0);  // dz over P (maybe one buffer): row read already
    }
    barrier.wait(waited_ns);  // dz of step t is complete: every worker's dh_prev reads all of its columns
    if (hw > 0) {
      // dh_prev for the worker's units: dz[t] (B, 4H) @ w_h[u0:u1, :].T; rows of w_h are contiguous, so no packing.
      sgemm(kRowMajor, kNoTrans, kTrans, B, hw, 4 * H, 1.0f, a.dz + t * B * 4 * H, 4 * H, a.w + u0 * 4 * H, 4 * H,
            0.0f, g.data(), hw);
      for (int64_t i = 0; i < B * hw; ++i) dh[i] += g[i];  // an invalid row's dz is 0, so g adds nothing there
    }
  }
  for (int64_t r = 0; r < B; ++r) {
    std::memcpy(a.dh0 + r * H + u0, &dh[r * hw], hw * sizeof(float));
    std::memcpy(a.dc0 + r * H + u0, &dc[r * hw], hw * sizeof(float));
  }
}

// Runs worker(args, nt, k, barrier) on nt threads. On a machine shared with other jobs the workers are not always
// running at once, and a barrier per step then waits for whole scheduler time slices: where the workers of a call
// spent over half their time waiting, the next calls run on one thread, and then the split is tried again.
template <class Args, class Worker>
void run_workers(const Args& args, int64_t B, int64_t H, Worker worker) {
  int nt = choose_threads(B, H);
  const bool automatic = g_threads.load(std::memory_order_relaxed) == 0;
  if (nt > 1 && automatic && g_single_calls.load(std::memory_order_relaxed) > 0) {
    g_single_calls.fetch_sub(1, std::memory_order_relaxed);
    nt = 1;
  }
  Barrier barrier;
  barrier.n = nt;
  std::function<void(int)> fn = [&](int k) {
    int64_t waited = 0;
    worker(args, nt, k, barrier, &waited);
    barrier.waited_ns.fetch_add(waited, std::memory_order_relaxed);
  };
  const auto t0 = std::chrono::steady_clock::now();
  Pool::get().run(nt, fn);
  if (nt > 1 && automatic) {
    const double total = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    if (barrier.waited_ns.load() > 0.5 * nt * total) g_single_calls.store(32, std::memory_order_relaxed);
  }
}

ffi::Error bad(const std::string& what) { return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jaxlstm native: " + what); }

ffi::Error check_common(int64_t T, int64_t B, int64_t H, ffi::Buffer<ffi::F32>& w, ffi::Buffer<ffi::PRED>& valid) {
  if (g_sgemm.load() == nullptr) return bad("no sgemm was set (jaxlstm_native_set_sgemm)");
  auto wd = w.dimensions();
  if (wd.size() != 2 || wd[0] != H || wd[1] != 4 * H) return bad("w_h must be (H, 4H)");
  if (valid.element_count() != 0 && static_cast<int64_t>(valid.element_count()) != T * B)
    return bad("valid must be (T, B) or empty");
  if (T < 1 || H < 1) return bad("T and H must be positive");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> zx, ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::F32> peep, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                       ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::F32> P, ffi::ResultBuffer<ffi::F32> Q,
                       ffi::ResultBuffer<ffi::F32> F, ffi::ResultBuffer<ffi::F32> cs, bool save) {
  auto d = zx.dimensions();
  if (d.size() != 3 || d[2] % 4 != 0) return bad("zx must be (T, B, 4H)");
  const int64_t T = d[0], B = d[1], H = d[2] / 4;
  if (auto e = check_common(T, B, H, w, valid); e.failure()) return e;
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
            H,
            zx.typed_data(),
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
  if (B > 0) run_workers(a, B, H, forward_worker);  // an empty batch has nothing to compute
  return ffi::Error::Success();
}

// Inference: hs, h_T and c_T only. The training variant's extra results are unused here, so it is one handler
// with save=false and empty buffers for them.
ffi::Error ForwardInferImpl(ffi::Buffer<ffi::F32> zx, ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w,
                            ffi::Buffer<ffi::F32> peep, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                            ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                            ffi::ResultBuffer<ffi::F32> cT) {
  return ForwardImpl(zx, b, w, peep, valid, h0, c0, hs, hT, cT, hs, hs, hs, hs, false);
}

ffi::Error ForwardTrainImpl(ffi::Buffer<ffi::F32> zx, ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w,
                            ffi::Buffer<ffi::F32> peep, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> h0,
                            ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> hT,
                            ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::F32> P,
                            ffi::ResultBuffer<ffi::F32> Q, ffi::ResultBuffer<ffi::F32> F,
                            ffi::ResultBuffer<ffi::F32> cs) {
  return ForwardImpl(zx, b, w, peep, valid, h0, c0, hs, hT, cT, P, Q, F, cs, true);
}

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> P, ffi::Buffer<ffi::F32> Q,
                        ffi::Buffer<ffi::F32> F, ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> dhs,
                        ffi::Buffer<ffi::F32> dhT, ffi::Buffer<ffi::F32> dcT, ffi::ResultBuffer<ffi::F32> dz,
                        ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0) {
  auto d = P.dimensions();
  if (d.size() != 3 || d[2] % 4 != 0) return bad("P must be (T, B, 4H)");
  const int64_t T = d[0], B = d[1], H = d[2] / 4;
  if (auto e = check_common(T, B, H, w, valid); e.failure()) return e;
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
  if (B > 0) run_workers(a, B, H, backward_worker);
  return ffi::Error::Success();
}

}  // namespace

#define JAXLSTM_FORWARD_ARGS                                                                                    \
  ffi::Ffi::Bind()                                                                                              \
    .Arg<ffi::Buffer<ffi::F32>>()  /* zx */                                                                     \
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

extern "C" {

// The cblas_sgemm the loops call (OpenBLAS's, from native.py); it must run single-threaded.
void jaxlstm_native_set_sgemm(void* fn) { g_sgemm.store(reinterpret_cast<SgemmFn>(fn), std::memory_order_release); }

// 0: choose the number of workers per call (the default); n > 0: use min(n, H) workers, whatever the size.
void jaxlstm_native_set_threads(int n) { g_threads.store(n < 0 ? 0 : n, std::memory_order_relaxed); }

// The number of workers a layer of batch B and H hidden units runs on.
int jaxlstm_native_threads(int64_t B, int64_t H) { return choose_threads(B, H); }

}  // extern "C"

// A Python module of no content, so that importing jaxlstm._src.native._lstm (as module discovery does) works; the
// library is used through ctypes and the FFI targets above.
static PyModuleDef lstm_module = {PyModuleDef_HEAD_INIT, "_lstm", nullptr, -1, nullptr, nullptr, nullptr, nullptr,
                                  nullptr};
PyMODINIT_FUNC PyInit__lstm(void) { return PyModule_Create(&lstm_module); }
