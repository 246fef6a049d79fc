// The per-step GEMM of the native loops on weights that stay resident in a task's cache: C (M, N) = A (M, K) @ W
// (K, N), where W is a task's slice of a recurrent weight matrix, packed once per call and read at every step.
//
// Why not OpenBLAS's sgemm for it: sgemm packs its B operand on every call, and here B is the same weight slice at
// every step. At the S model's shape (M = 32, K = 128, N = 256 per task) that repacking made sgemm take 28-42 us
// where the FMAs need 23 us; with the slice packed once into 16-column panels, a register-blocked AVX2 kernel of
// 6 x 16 outputs ran at 88-92 GFLOP/s on one core of this AMD EPYC (sgemm: 50-74), 13 % faster than sgemm at M
// (64, 256, 512) and 5 % at L (128, 512, 1024). The panel loop is outermost, so a 16-column panel (K x 16 floats)
// stays in L1 while every row of A passes over it.
//
// Where it runs: x86-64 CPUs with AVX2 and FMA, chosen at run time (__builtin_cpu_supports), never at compile time.
// On CPUs with AVX-512F, whose wider FMAs OpenBLAS's kernels use and this one does not, the loops keep sgemm (the
// kernel was not measured against it there); jaxlstm_native_set_panels(2) forces the panels on any AVX2 CPU, for the
// tests. Elsewhere (another architecture, older x86) the loops use sgemm on a row-major copy of the slice.

#ifndef JAXLSTM_NATIVE_PANELS_H_
#define JAXLSTM_NATIVE_PANELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define JAXLSTM_PANELS_X86 1
#endif

#include "runtime.h"

namespace jaxlstm_native {

// 0: sgemm throughout; 1: the panels where the CPU has AVX2 and FMA and no AVX-512F (the default); 2: the panels on
// any CPU with AVX2 and FMA (tests).
inline std::atomic<int> g_panels{1};

inline bool panels_here() {
#ifdef JAXLSTM_PANELS_X86
  const int mode = g_panels.load(std::memory_order_relaxed);
  if (mode == 0 || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
  return mode == 2 || !__builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

constexpr int64_t kPanel = 16;  // columns per panel: two AVX2 registers

#ifdef JAXLSTM_PANELS_X86
// R rows of A against one panel: R x 16 accumulators in registers (R <= 6: 12 accumulators, 2 loads of the panel and
// one broadcast of A leave one of AVX2's 16 registers spare).
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void panel_block(int64_t K, const float* a, int64_t lda,
                                                                            const float* bp, float* c, int64_t ldc) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bp + k * kPanel), b1 = _mm256_loadu_ps(bp + k * kPanel + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + k);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_storeu_ps(c + i * ldc, c0[i]);
    _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
  }
}

template <int R>
__attribute__((target("avx2,fma"))) inline void panel_rows(int64_t K, int64_t nj, const float* a, int64_t lda,
                                                           const float* bp, float* c, int64_t ldc) {
  if (nj == kPanel) return panel_block<R>(K, a, lda, bp, c, ldc);
  float tmp[R * kPanel];  // the last, partial panel: its zero-padded columns go to a buffer, not past C's row
  panel_block<R>(K, a, lda, bp, tmp, kPanel);
  for (int i = 0; i < R; ++i) std::memcpy(c + i * ldc, tmp + i * kPanel, nj * sizeof(float));
}

__attribute__((target("avx2,fma"))) inline void panel_gemm(int64_t M, int64_t N, int64_t K, const float* a,
                                                           int64_t lda, const float* w, float* c, int64_t ldc) {
  for (int64_t p = 0; p * kPanel < N; ++p) {
    const float* bp = w + p * K * kPanel;
    const int64_t nj = std::min(kPanel, N - p * kPanel);
    float* cp = c + p * kPanel;
    int64_t r = 0;
    for (; r + 6 <= M; r += 6) panel_rows<6>(K, nj, a + r * lda, lda, bp, cp + r * ldc, ldc);
    const float* ar = a + r * lda;
    float* cr = cp + r * ldc;
    switch (M - r) {
      case 5: panel_rows<5>(K, nj, ar, lda, bp, cr, ldc); break;
      case 4: panel_rows<4>(K, nj, ar, lda, bp, cr, ldc); break;
      case 3: panel_rows<3>(K, nj, ar, lda, bp, cr, ldc); break;
      case 2: panel_rows<2>(K, nj, ar, lda, bp, cr, ldc); break;
      case 1: panel_rows<1>(K, nj, ar, lda, bp, cr, ldc); break;
      default: break;
    }
  }
}
#endif

// A task's slice W (K, N) of a weight matrix, the B operand of its per-step GEMMs: in panels of 16 columns (each
// K x 16, row-major, zero-padded past N) where panels_here(), else row-major (K, N) for sgemm. The layout is fixed
// when the task is made, so one call never mixes them.
class Resident {
 public:
  // Floats of scratch that a slice of (K, N) needs: the packed slice and one row of N for packing.
  static size_t size(int64_t K, int64_t N) {
    const int64_t np = (N + kPanel - 1) / kPanel * kPanel;
    return size_t(K * np + np);
  }

  Resident() = default;
  Resident(int64_t K, int64_t N, float* storage) : K_(K), N_(N), w_(storage), panels_(panels_here()) {}

  // Packs W once per call; row(k, out) writes W's row k (N floats) to out.
  template <class Row>
  void pack(Row row) {
    if (!panels_) {
      for (int64_t k = 0; k < K_; ++k) row(k, w_ + k * N_);
      return;
    }
    const int64_t np = (N_ + kPanel - 1) / kPanel;
    float* tmp = w_ + K_ * np * kPanel;
    for (int64_t k = 0; k < K_; ++k) {
      std::fill(tmp, tmp + np * kPanel, 0.0f);
      row(k, tmp);
      for (int64_t p = 0; p < np; ++p) std::memcpy(w_ + (p * K_ + k) * kPanel, tmp + p * kPanel, kPanel * sizeof(float));
    }
  }

  // C (M, N) = A (M, K) @ W, with row strides lda and ldc.
  void gemm(int64_t M, const float* a, int64_t lda, float* c, int64_t ldc) const {
    if (M == 0 || N_ == 0) return;
#ifdef JAXLSTM_PANELS_X86
    if (panels_) return panel_gemm(M, N_, K_, a, lda, w_, c, ldc);
#endif
    if (K_ == 0) {
      for (int64_t r = 0; r < M; ++r) std::fill(c + r * ldc, c + r * ldc + N_, 0.0f);
      return;
    }
    g_sgemm.load(std::memory_order_acquire)(kRowMajor, kNoTrans, kNoTrans, int(M), int(N_), int(K_), 1.0f, a,
                                            int(lda), w_, int(N_), 0.0f, c, int(ldc));
  }

 private:
  int64_t K_ = 0, N_ = 0;
  float* w_ = nullptr;
  bool panels_ = false;
};

// The row k of the (K, G*hw) slice of a (K, G*H) matrix at the units [u0, u0 + hw) of each of its G gate blocks.
inline void gate_columns_row(const float* src, int64_t k, int64_t H, int64_t G, int64_t u0, int64_t hw, float* out) {
  for (int64_t g = 0; g < G; ++g) std::memcpy(out + g * hw, src + k * G * H + g * H + u0, hw * sizeof(float));
}

// The row k of the (N, n) slice of src (n, N) transposed, at src's rows [r0, r0 + n): out[j] = src[r0 + j][k].
inline void transposed_row(const float* src, int64_t N, int64_t r0, int64_t n, int64_t k, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = src[(r0 + j) * N + k];
}

}  // namespace jaxlstm_native

#endif  // JAXLSTM_NATIVE_PANELS_H_
