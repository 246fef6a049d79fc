// The runtime that jaxlstm's native CPU loops share (lstm.cc, gru.cc): the library's persistent threads, the
// step-claiming schedule, scratch memory kept between calls, the split of hidden units into tasks, and the float32
// tanh that XLA's CPU backend computes. Everything here is inline (C++17 inline variables included), so that the
// files of the one extension share one thread pool and one sgemm pointer.
//
// Threads: the hidden units are split into tasks; a task owns the columns of all its gates for its units, so the gate
// math of a step reads nothing another task writes, and a step of one task can start once every task has finished
// the step before (the next step's GEMM reads all of h, or in the backward pass all of the gate gradients). The
// threads are this library's own persistent ones, with the calling thread as the first, and they claim the tasks'
// steps rather than meet at a barrier: each keeps to its own task while it can (its columns stay hot in its core's
// cache), and takes over a task whose thread lags. A thread that the OS has not scheduled (on a shared machine, or
// while XLA's pool threads are still spinning after a parallel op of the same executable) then slows the loop to the
// threads that do run, instead of stalling every step, and the caller alone finishes a call that no other thread
// joined. XLA FFI's intra-op thread pool was not used: measured, its tasks started too late to share the steps.
//
// The GEMMs are OpenBLAS's sgemm (the scipy-openblas32 wheel, DYNAMIC_ARCH: it picks its kernels for the CPU at run
// time), called single-threaded by each task on its own columns, except the per-step GEMMs on the recurrent weights
// where the CPU suits panels.h's kernel. native.py loads that library and hands its cblas_sgemm to
// jaxlstm_native_set_sgemm (module.cc), so the extension links against no BLAS. The gate loops
// are plain C++, compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at load time (target_clones): never
// -march=native, so a wheel built here runs on older CPUs.

#ifndef JAXLSTM_NATIVE_RUNTIME_H_
#define JAXLSTM_NATIVE_RUNTIME_H_

#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define JAXLSTM_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define JAXLSTM_CLONES
#endif

namespace jaxlstm_native {

namespace ffi = xla::ffi;

// cblas_sgemm with 32-bit integers (CBLAS's enums are ints).
using SgemmFn = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
inline std::atomic<SgemmFn> g_sgemm{nullptr};
inline std::atomic<int> g_threads{0};  // 0: automatic; n > 0: min(n, H) tasks and threads (tests and benchmarks)

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
inline void spin_wait(Done done) {
  for (int i = 0; i < 4000; ++i) {
    if (done()) return;
    cpu_relax();
  }
  while (!done()) std::this_thread::yield();
}

inline int cpu_count() {
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

// How many tasks (and threads) a layer of batch B, H units and G gates gets. A hand-off between threads costs about a
// microsecond, so steps of under ~32k multiply-adds run on one thread; each task keeps at least 16 units (whole cache
// lines of each gate).
inline int choose_threads(int64_t B, int64_t H, int64_t G) {
  const int forced = g_threads.load(std::memory_order_relaxed);
  if (forced > 0) return static_cast<int>(std::min<int64_t>(forced, std::max<int64_t>(H, 1)));
  if (B * H * G * H < 32768) return 1;
  static const int cpus = [] {
    const char* env = std::getenv("JAXLSTM_NATIVE_THREADS");
    const int n = env ? std::atoi(env) : 0;
    return n > 0 ? n : cpu_count();
  }();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cpus, H / 16)));
}

// Task k's units [u0, u1): equal shares, in multiples of 16 units where H allows.
inline void units(int64_t H, int nt, int k, int64_t* u0, int64_t* u1) {
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

// Steps per chunk of a task's input projection: its rows (B, n) for a chunk fill about 256 KB, a quarter of a
// typical L2, so that they are still there when the steps read them, and a chunk's GEMM has rows enough to run fast.
inline int64_t chunk_steps(int64_t T, int64_t B, int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(T, 65536 / std::max<int64_t>(1, B * n)));
}

// Packs the columns [u0, u0 + hw) of the G gate blocks of a (rows, G*H) matrix into a (rows, G*hw) block.
inline void pack_columns(const float* src, int64_t rows, int64_t H, int64_t G, int64_t u0, int64_t hw, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < G; ++g)
      std::memcpy(dst + (r * G + g) * hw, src + r * G * H + g * H + u0, hw * sizeof(float));
}

// Copies a task's G blocks of hw columns from its scratch row (contiguous) into a (G*H)-wide row at its units.
inline void scatter_row(int64_t hw, int64_t H, int64_t G, const float* src, float* dst) {
  for (int64_t g = 0; g < G; ++g) std::memcpy(dst + g * H, src + g * hw, hw * sizeof(float));
}

// Runs steps [0, steps) of the tasks of one loop (Args::kGates gates), on as many threads as choose_threads gives and
// join in time.
template <class Args, class Task, class Step>
void run_tasks(const Args& a, int64_t steps, Step step) {
  const int nt = choose_threads(a.B, a.H, Args::kGates);
  std::vector<std::unique_ptr<Task>> tasks;
  for (int j = 0; j < nt; ++j) tasks.push_back(std::make_unique<Task>(a, nt, j));
  Steps schedule(steps, nt);
  std::function<void(int)> fn = [&](int k) { schedule.work(k, [&](int j, int64_t s) { step(a, *tasks[j], s); }); };
  Pool::get().run(nt, fn);
}

// Transparent huge pages for the large results a call writes (hs, the saved factors, the gate gradients). XLA
// hands a jitted step's buffers out of one block that glibc maps afresh on every call when it is large, so each 4 KiB
// page of them faults on its first write; on this project's VMs a fault costs ~2.3 us, about the time a step of a
// small layer's loop takes for 8 rows. Where the system leaves huge pages to madvise (the common default), advising
// the 2 MiB-aligned interior of each buffer before the loop writes it makes one fault of 512 pages' worth: 64 MiB
// touched fresh took 37 ms in 4 KiB pages and 7 ms in huge pages. Only memory the call is about to overwrite is
// advised, so nothing else in the process changes; a region already backed, or a kernel without THP, ignores it.
inline std::atomic<bool> g_huge_pages{[] {
  const char* env = std::getenv("JAXLSTM_NATIVE_HUGE_PAGES");
  return env == nullptr || std::atoi(env) != 0;
}()};

inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < 2 * kHuge || !g_huge_pages.load(std::memory_order_relaxed)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice: errors are moot
#else
  (void)p;
  (void)bytes;
#endif
}

// advise_huge_pages for each of a handler's results.
template <class... Results>
inline void advise_results(Results&... results) {
  (advise_huge_pages(results->untyped_data(), results->size_bytes()), ...);
}

inline ffi::Error bad(const std::string& what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jaxlstm native: " + what);
}

// The checks every handler makes: an sgemm is set, w_h is (H, G*H), valid is (T, B) or empty.
inline ffi::Error check_common(int64_t T, int64_t B, int64_t H, int64_t G, ffi::Buffer<ffi::F32>& w,
                               ffi::Buffer<ffi::PRED>& valid) {
  if (g_sgemm.load() == nullptr) return bad("no sgemm was set (jaxlstm_native_set_sgemm)");
  auto wd = w.dimensions();
  if (wd.size() != 2 || wd[0] != H || wd[1] != G * H) return bad("w_h must be (H, " + std::to_string(G) + "H)");
  if (valid.element_count() != 0 && static_cast<int64_t>(valid.element_count()) != T * B)
    return bad("valid must be (T, B) or empty");
  if (T < 1 || H < 1) return bad("T and H must be positive");
  return ffi::Error::Success();
}

}  // namespace jaxlstm_native

#endif  // JAXLSTM_NATIVE_RUNTIME_H_
