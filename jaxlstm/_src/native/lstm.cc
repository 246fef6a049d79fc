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
// Threads: the hidden units are split into tasks; a task owns the columns of all four gates of its units, so the gate
// math of a step reads nothing another task writes, and a step of one task can start once every task has finished
// the step before (the next step's GEMM reads all of h, or in the backward pass all of dz). The threads are this
// library's own persistent ones, with the calling thread as the first, and they claim the tasks' steps rather than
// meet at a barrier: each keeps to its own task while it can (its columns stay hot in its core's cache), and takes
// over a task whose thread lags. A thread that the OS has not scheduled (on a shared machine, or while XLA's pool
// threads are still spinning after a parallel op of the same executable) then slows the loop to the threads that do
// run, instead of stalling every step, and the caller alone finishes a call that no other thread joined. XLA FFI's
// intra-op thread pool was not used: measured, its tasks started too late to share the steps.
//
// The per-step GEMM is OpenBLAS's sgemm (the scipy-openblas32 wheel, DYNAMIC_ARCH: it picks its kernels for the CPU
// at run time), called single-threaded by each task on its own columns. native.py loads that library and hands
// its cblas_sgemm to jaxlstm_native_set_sgemm, so this file links against no BLAS. The gate loops are plain C++,
// compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at load time (target_clones): never -march=native,
// so a wheel built here runs on older CPUs.

#include <Python.h>  // only for PyInit__lstm below
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <new>
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
std::atomic<int> g_threads{0};  // 0: automatic; n > 0: min(n, H) tasks and threads (tests and benchmarks)

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spin a little, then yield: a wait between threads usually ends within a microsecond, but on a loaded machine the
// other thread may be descheduled, and spinning on then would only keep it off the core.
template <class Done>
void spin_wait(Done done) {
  for (int i = 0; i < 4000; ++i) {
    if (done()) return;
    cpu_relax();
  }
  while (!done()) std::this_thread::yield();
}

int cpu_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Persistent threads; the caller is thread 0. One job at a time (a mutex). A pool thread joins a job only while it is
// open, so the caller never waits for a thread that the OS has not scheduled yet: once the job's work is done it
// closes the job and waits only for the threads that joined it, which have nothing left to do.
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();  // never destroyed: its threads outlive static destruction at exit
    return *pool;
  }

  // Runs fn(k) on the caller (k = 0) and on up to n - 1 pool threads (k = 1, 2, ...), those that join in time; fn
  // must finish the job with any number of them, the caller alone included.
  void run(int n, const std::function<void(int)>& fn) {
    if (n <= 1) {
      fn(0);
      return;
    }
    std::lock_guard<std::mutex> call(call_mu_);
    while (static_cast<int>(threads_.size()) < n - 1) {
      threads_.emplace_back([this] { loop(); });
      threads_.back().detach();
    }
    fn_.store(&fn, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    finished_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      // A new generation, open, no one joined; release: a thread that sees it also sees fn_ and n_.
      const uint64_t gen = (state_.load(std::memory_order_relaxed) >> kGenShift) + 1;
      state_.store(gen << kGenShift, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    const uint64_t st = state_.fetch_or(kClosed, std::memory_order_acq_rel);
    const int joined = static_cast<int>(st & kJoinedMask);
    spin_wait([&] { return finished_.load(std::memory_order_acquire) == joined; });
  }

 private:
  static constexpr int kGenShift = 32;
  static constexpr uint64_t kClosed = uint64_t{1} << 31, kJoinedMask = 0xffff;

  void loop() {
    uint64_t seen = 0;  // the last generation this thread looked at
    auto fresh = [&] { return (state_.load(std::memory_order_acquire) >> kGenShift) != seen; };
    for (;;) {
      // Between the calls of one training step (layer after layer) a short spin catches the next job; after that
      // the thread sleeps, so an idle jaxlstm keeps no core busy.
      bool ready = false;
      for (int i = 0; i < 20000 && !ready; ++i) {
        ready = fresh();
        if (!ready) cpu_relax();
      }
      if (!ready) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, fresh);
      }
      uint64_t st = state_.load(std::memory_order_acquire);
      seen = st >> kGenShift;
      // Join: one more thread on this generation, while it is open and short of threads. A failed exchange reloads
      // st; a new generation or a closed job ends the attempt.
      while (!(st & kClosed) && (st >> kGenShift) == seen &&
             static_cast<int>(st & kJoinedMask) < n_.load(std::memory_order_relaxed) - 1) {
        if (state_.compare_exchange_weak(st, st + 1, std::memory_order_acq_rel)) {
          (*fn_.load(std::memory_order_relaxed))(static_cast<int>(st & kJoinedMask) + 1);
          finished_.fetch_add(1, std::memory_order_release);
          break;
        }
      }
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> state_{0};  // generation << 32 | closed << 31 | threads joined
  std::atomic<int> finished_{0}, n_{0};
  std::atomic<const std::function<void(int)>*> fn_{nullptr};
};

// Steps [0, steps) of each of ntask tasks, claimed by the threads of one job. Task j's step s may run once every
// task has finished step s - 1; a thread tries its own task first, then the others, so that no step waits for a
// thread that is not running.
class Steps {
 public:
  Steps(int64_t steps, int ntask) : steps_(steps), slots_(ntask) {}

  // The claiming loop of thread k: run(j, s) for every step it claims, until every step is claimed.
  template <class Run>
  void work(int k, Run run) {
    const int n = static_cast<int>(slots_.size());
    int idle = 0;
    for (;;) {
      bool left = false, ran = false;
      for (int d = 0; d < n && !ran; ++d) {
        const int j = (k + d) % n;
        Slot& slot = slots_[j];
        int64_t s = slot.claimed.load(std::memory_order_acquire);
        if (s >= steps_) continue;
        left = true;
        if (!finished(s) || !slot.claimed.compare_exchange_strong(s, s + 1, std::memory_order_acq_rel)) continue;
        run(j, s);
        slot.done.store(s + 1, std::memory_order_release);  // release: the next step's readers see this one's writes
        ran = true;
      }
      if (!left) return;
      if (ran) {
        idle = 0;
      } else if (++idle < 4000) {
        cpu_relax();
      } else {
        std::this_thread::yield();  // the thread we wait for may be descheduled: spinning would keep it off the core
      }
    }
  }

 private:
  struct alignas(64) Slot {
    std::atomic<int64_t> claimed{0}, done{0};
  };

  bool finished(int64_t s) const {  // every task has finished step s - 1
    for (const Slot& slot : slots_)
      if (slot.done.load(std::memory_order_acquire) < s) return false;
    return true;
  }

  int64_t steps_;
  std::vector<Slot> slots_;
};

// Scratch memory for the tasks of a call, kept from call to call. A fresh allocation of this size would be fresh pages
// from the OS on every call (glibc maps large blocks and unmaps them when freed), and their page faults cost about as
// much as a small layer's loop. Blocks are reused smallest-fit; there are never more than calls have run at once.
class Scratch {
 public:
  explicit Scratch(size_t n) : n_(std::max<size_t>(n, 16)) {
    {
      std::lock_guard<std::mutex> lock(mu());
      auto& free = blocks();
      auto best = free.end();
      for (auto it = free.begin(); it != free.end(); ++it)
        if (it->first >= n_ && (best == free.end() || it->first < best->first)) best = it;
      if (best != free.end()) {
        n_ = best->first;
        p_ = best->second;
        free.erase(best);
        return;
      }
      if (!free.empty()) {  // none fits: drop one, so that the count stays bounded
        std::free(free.back().second);
        free.pop_back();
      }
    }
    p_ = static_cast<float*>(std::aligned_alloc(64, (n_ * sizeof(float) + 63) / 64 * 64));
    if (p_ == nullptr) throw std::bad_alloc();
  }
  ~Scratch() {
    std::lock_guard<std::mutex> lock(mu());
    blocks().emplace_back(n_, p_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // Hands out the next n floats, 64-byte aligned.
  float* take(size_t n) {
    float* p = p_ + used_;
    used_ += (n + 15) / 16 * 16;
    return p;
  }

  // The floats that take() of these sizes needs in all.
  static size_t size(std::initializer_list<size_t> ns) {
    size_t total = 0;
    for (size_t n : ns) total += (n + 15) / 16 * 16;
    return total;
  }

 private:
  static std::mutex& mu() {
    static std::mutex* m = new std::mutex();
    return *m;
  }
  static std::vector<std::pair<size_t, float*>>& blocks() {
    static auto* b = new std::vector<std::pair<size_t, float*>>();
    return *b;
  }
  size_t n_, used_ = 0;
  float* p_ = nullptr;
};

// How many tasks (and threads) a layer of batch B and H units gets. A hand-off between threads costs about a
// microsecond, so steps of under ~32k multiply-adds run on one thread; each task keeps at least 16 units (whole cache
// lines of each gate).
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

// Task k's units [u0, u1): equal shares, in multiples of 16 units where H allows.
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
inline void scatter_row(int64_t hw, int64_t H, const float* src, float* dst) {
  for (int g = 0; g < 4; ++g) std::memcpy(dst + g * H, src + g * hw, hw * sizeof(float));
}

struct Forward {
  int64_t T, B, I, H;
  const float *xs, *wx, *b, *w, *peep, *h0, *c0;
  const bool* valid;
  float *hs, *hT, *cT, *P, *Q, *F, *cs;
  bool save;
};

// Steps per chunk of a task's input projection: its rows (B, 4hw) for a chunk fill about 256 KB, a quarter of a
// typical L2, so that they are still there when the steps read them, and a chunk's GEMM has rows enough to run fast.
int64_t chunk_steps(int64_t T, int64_t B, int64_t n4) {
  return std::max<int64_t>(1, std::min<int64_t>(T, 65536 / std::max<int64_t>(1, B * n4)));
}

// Packs the columns [u0, u0 + hw) of the four gate blocks of a (rows, 4H) matrix into a (rows, 4hw) block.
void pack_columns(const float* src, int64_t rows, int64_t H, int64_t u0, int64_t hw, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int g = 0; g < 4; ++g) std::memcpy(dst + r * 4 * hw + g * hw, src + r * 4 * H + g * H + u0, hw * sizeof(float));
}

// A forward task: its units [u0, u0 + hw), its columns of w_h and w_x packed into (H, 4hw) and (I, 4hw) blocks that
// stay hot in the cache of the core that runs it, a chunk of its input projections, and a scratch row block for the
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
    pack_columns(a.w, H, H, u0, hw, task.w);
    pack_columns(a.wx, I, H, u0, hw, task.wx);
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
    if (a.save) scatter_row(hw, H, zr, a.P + row * 4 * H + u0);
  }
  if (t == a.T - 1)
    for (int64_t r = 0; r < B; ++r) std::memcpy(a.hT + r * H + u0, a.hs + (t * B + r) * H + u0, hw * sizeof(float));
}

struct Backward {
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
    scatter_row(hw, H, dz, a.dz + row * 4 * H + u0);  // dz over P (maybe one buffer): the row is read already
  }
}

// Runs steps [0, steps) of the tasks of one loop, on as many threads as choose_threads gives and join in time.
template <class Args, class Task, class Step>
void run_tasks(const Args& a, int64_t steps, Step step) {
  const int nt = choose_threads(a.B, a.H);
  std::vector<std::unique_ptr<Task>> tasks;
  for (int j = 0; j < nt; ++j) tasks.push_back(std::make_unique<Task>(a, nt, j));
  Steps schedule(steps, nt);
  std::function<void(int)> fn = [&](int k) { schedule.work(k, [&](int j, int64_t s) { step(a, *tasks[j], s); }); };
  Pool::get().run(nt, fn);
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
  if (auto e = check_common(T, B, H, w, valid); e.failure()) return e;
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

extern "C" {

// The cblas_sgemm the loops call (OpenBLAS's, from native.py); it must run single-threaded.
void jaxlstm_native_set_sgemm(void* fn) { g_sgemm.store(reinterpret_cast<SgemmFn>(fn), std::memory_order_release); }

// 0: choose the number of tasks and threads per call (the default); n > 0: use min(n, H), whatever the size.
void jaxlstm_native_set_threads(int n) { g_threads.store(n < 0 ? 0 : n, std::memory_order_relaxed); }

// The number of tasks (and threads at most) a layer of batch B and H hidden units runs on.
int jaxlstm_native_threads(int64_t B, int64_t H) { return choose_threads(B, H); }

}  // extern "C"

// A Python module of no content, so that importing jaxlstm._src.native._lstm (as module discovery does) works; the
// library is used through ctypes and the FFI targets above.
static PyModuleDef lstm_module = {PyModuleDef_HEAD_INIT, "_lstm", nullptr, -1, nullptr, nullptr, nullptr, nullptr,
                                  nullptr};
PyMODINIT_FUNC PyInit__lstm(void) { return PyModule_Create(&lstm_module); }
