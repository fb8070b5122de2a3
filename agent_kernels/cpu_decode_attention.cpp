#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

// Decode attention over a paged KV cache, read in place (no gather, no per-sequence Python loop):
// q [B, H, D] f32; caches [blocks, BS, KVH, D] f32 or bf16 (widened to f32 as read: half the bytes
// streamed, the same f32 arithmetic); table [B, MB] int64; lens [B] int64.
// Sequence b attends to its positions max(0, lens[b] - window) .. lens[b] - 1 (window <= 0: all);
// scores are tanh-capped when softcap > 0. One task per (sequence, chunk of <= 128 keys) over all
// heads, so a task streams through its cache blocks in memory order (a token's KVH x D keys are
// contiguous); the chunks' partial softmax states are merged at the end (flash-decoding), so a
// single long sequence still uses every thread. Head sizes 64, 128 and 256 take an AVX-512 path
// where the compiler targets it (-march=native); others, and other CPUs, a portable loop. The plain-torch reference and the dispatch are in
// agent_kernels/cpu_decode_attention.py.
// A token's keys or values (n = KVH x D) as f32: f32 caches are used in place; a bf16 row is widened
// once into `out` (a 16-bit shift per value, on the raw bits so the loop vectorizes).
static inline const float* token_row(const float* row, int64_t, float*) { return row; }
static inline const float* token_row(const at::BFloat16* row, int64_t n, float* out) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(row);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t wide = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(out + i, &wide, sizeof(float));
  }
  return out;
}

// One task's keys: positions from..to-1 of one sequence (its block table `blocks`), all heads.
// Writes m (running max), l (sum of exp) and acc (unnormalised sum of p x v) for each query head.
struct Task {
  const float* q;         // [H, D] this sequence's queries
  const int64_t* blocks;  // this sequence's block table
  int64_t from, to;
  float* m;
  float* l;
  float* acc;             // [H, D]
};
struct Shape {
  int64_t H, D, BS, KVH, G, chunk;
  double scale, softcap;
};

// Portable path: any head size, any ISA (the compiler vectorises the D loops).
template <typename cache_t>
static void run_task_generic(const Task& tk, const Shape& sh, const cache_t* kp, const cache_t* vp, float* scores,
                             float* widened) {
  const int64_t H = sh.H, D = sh.D, BS = sh.BS, KVH = sh.KVH, G = sh.G, CH = sh.chunk, n = tk.to - tk.from;
  for (int64_t t = tk.from; t < tk.to; ++t) {
    const float* row = token_row(kp + (tk.blocks[t / BS] * BS + t % BS) * KVH * D, KVH * D, widened);
    for (int64_t hq = 0; hq < H; ++hq) {
      const float* k = row + (hq / G) * D;
      const float* qh = tk.q + hq * D;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += qh[d] * k[d];
      s *= sh.scale;
      if (sh.softcap > 0) s = std::tanh(s / sh.softcap) * sh.softcap;
      scores[hq * CH + (t - tk.from)] = s;
    }
  }
  for (int64_t hq = 0; hq < H; ++hq) {
    float* srow = scores + hq * CH;
    tk.m[hq] = *std::max_element(srow, srow + n);
    float total = 0.f;
    for (int64_t i = 0; i < n; ++i) { srow[i] = std::exp(srow[i] - tk.m[hq]); total += srow[i]; }
    tk.l[hq] = total;
  }
  for (int64_t t = tk.from; t < tk.to; ++t) {
    const float* row = token_row(vp + (tk.blocks[t / BS] * BS + t % BS) * KVH * D, KVH * D, widened);
    for (int64_t hq = 0; hq < H; ++hq) {
      const float* v = row + (hq / G) * D;
      const float p = scores[hq * CH + (t - tk.from)];
      float* a = tk.acc + hq * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) a[d] += p * v[d];
    }
  }
}

#if defined(__AVX512F__)
#include <immintrin.h>
// 16 cache values as f32 (a bf16 value is the high half of its f32: zero-extend, shift by 16).
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const at::BFloat16* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// exp(x) for x <= 0 (scores minus their max), ~1 ulp: n = round(x / ln 2), r = x - n ln 2 split in two
// constants (Cody-Waite), a degree-7 Taylor polynomial for e^r on |r| <= ln(2)/2 (error < 1e-8), times
// 2^n by scalef. Inputs below -87 (e^x < 1.7e-38, and -inf) are clamped there: the result is ~0, never NaN.
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// AVX-512 path for head sizes of DV x 16: a token's key row of one KV head is widened into DV
// registers once and dotted with its G query heads; the softmax exponentials run 16 at a time.
template <int DV, typename cache_t>
static void run_task_avx512(const Task& tk, const Shape& sh, const cache_t* kp, const cache_t* vp, float* scores) {
  constexpr int64_t D = DV * 16;
  const int64_t H = sh.H, BS = sh.BS, KVH = sh.KVH, G = sh.G, CH = sh.chunk, n = tk.to - tk.from;
  const float scale = static_cast<float>(sh.scale);
  for (int64_t t = tk.from; t < tk.to; ++t) {
    const cache_t* row = kp + (tk.blocks[t / BS] * BS + t % BS) * KVH * D;
    for (int64_t kh = 0; kh < KVH; ++kh) {
      __m512 k[DV];
      for (int j = 0; j < DV; ++j) k[j] = load16(row + kh * D + 16 * j);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = kh * G + g;
        const float* qh = tk.q + hq * D;
        __m512 dot = _mm512_mul_ps(_mm512_loadu_ps(qh), k[0]);
        for (int j = 1; j < DV; ++j) dot = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * j), k[j], dot);
        float s = _mm512_reduce_add_ps(dot) * scale;
        if (sh.softcap > 0) s = static_cast<float>(std::tanh(s / sh.softcap) * sh.softcap);
        scores[hq * CH + (t - tk.from)] = s;
      }
    }
  }
  for (int64_t hq = 0; hq < H; ++hq) {
    float* srow = scores + hq * CH;
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 mask = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
      top = _mm512_max_ps(top, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), mask, srow + i));
    }
    const float mx = _mm512_reduce_max_ps(top);
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 total = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 mask = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, srow + i), vmx));
      _mm512_mask_storeu_ps(srow + i, mask, e);
      total = _mm512_add_ps(total, _mm512_maskz_mov_ps(mask, e));
    }
    tk.m[hq] = mx;
    tk.l[hq] = _mm512_reduce_add_ps(total);
  }
  for (int64_t t = tk.from; t < tk.to; ++t) {
    const cache_t* row = vp + (tk.blocks[t / BS] * BS + t % BS) * KVH * D;
    for (int64_t kh = 0; kh < KVH; ++kh) {
      __m512 v[DV];
      for (int j = 0; j < DV; ++j) v[j] = load16(row + kh * D + 16 * j);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = kh * G + g;
        const __m512 p = _mm512_set1_ps(scores[hq * CH + (t - tk.from)]);
        float* a = tk.acc + hq * D;
        for (int j = 0; j < DV; ++j) _mm512_storeu_ps(a + 16 * j, _mm512_fmadd_ps(p, v[j], _mm512_loadu_ps(a + 16 * j)));
      }
    }
  }
}
#endif

template <typename cache_t>
static void run_task(const Task& tk, const Shape& sh, const cache_t* kp, const cache_t* vp, float* scores,
                     float* widened) {
#if defined(__AVX512F__)
  switch (sh.D) {
    case 64: return run_task_avx512<4>(tk, sh, kp, vp, scores);
    case 128: return run_task_avx512<8>(tk, sh, kp, vp, scores);
    case 256: return run_task_avx512<16>(tk, sh, kp, vp, scores);
    default: break;
  }
#endif
  run_task_generic(tk, sh, kp, vp, scores, widened);
}

template <typename cache_t>
static at::Tensor decode_attention_impl(const at::Tensor& q, const at::Tensor& kc, const at::Tensor& vc,
                                        const at::Tensor& table, const at::Tensor& lens, double scale,
                                        int64_t window, double softcap) {
  TORCH_CHECK(table.scalar_type() == at::kLong && lens.scalar_type() == at::kLong,
              "decode_attention: int64 block table and lengths expected");
  auto qc = q.contiguous();
  auto tc = table.contiguous();
  auto lc = lens.contiguous();
  const int64_t B = qc.size(0), H = qc.size(1), D = qc.size(2);
  const int64_t BS = kc.size(1), KVH = kc.size(2), MB = tc.size(1);
  const float* qp = qc.data_ptr<float>();
  const cache_t* kp = kc.data_ptr<cache_t>();
  const cache_t* vp = vc.data_ptr<cache_t>();
  const int64_t* tp = tc.data_ptr<int64_t>();
  const int64_t* lp = lc.data_ptr<int64_t>();
  int64_t longest = 1;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = lp[b], lo = window > 0 ? std::max<int64_t>(0, L - window) : 0;
    longest = std::max(longest, L - lo);
  }
  // Split each sequence's keys into C chunks (flash-decoding): tasks = (sequence, chunk), so one long
  // sequence still keeps every thread busy; partial softmax states are merged at the end. Chunks of
  // up to 128 keys, and with fewer sequences than threads a multiple of the thread count of them (5
  // chunks on 2 threads would leave one thread a chunk behind).
  const int64_t threads = at::get_num_threads();
  int64_t C = (longest + 127) / 128;
  if (B < threads) C = (C + threads - 1) / threads * threads;
  C = std::max<int64_t>(1, std::min(C, longest));
  const int64_t chunk = (longest + C - 1) / C;
  const Shape sh{H, D, BS, KVH, H / KVH, chunk, scale, softcap};
  // Partial states live in a buffer the calling thread keeps between calls (30 calls a decode step).
  thread_local std::vector<float> partials;
  partials.resize(static_cast<size_t>(B * C * H * (2 + D)));
  float* pm = partials.data();
  float* pl = pm + B * C * H;
  float* pa = pl + B * C * H;
  at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores, widened;  // per worker thread, kept between calls
    scores.resize(static_cast<size_t>(H * chunk));
    widened.resize(static_cast<size_t>(KVH * D));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / C, c = task % C;
      const int64_t L = lp[b], lo = window > 0 ? std::max<int64_t>(0, L - window) : 0;
      const int64_t from = lo + c * chunk, to = std::min(L, from + chunk);
      Task tk{qp + b * H * D, tp + b * MB, from, to, pm + task * H, pl + task * H, pa + task * H * D};
      std::fill(tk.acc, tk.acc + H * D, 0.f);
      if (to <= from) {
        for (int64_t hq = 0; hq < H; ++hq) { tk.m[hq] = -INFINITY; tk.l[hq] = 0.f; }
        continue;
      }
      run_task(tk, sh, kp, vp, scores.data(), widened.data());
    }
  });
  auto out = at::empty_like(qc);
  float* op = out.data_ptr<float>();
  // The merge is small (C x D per row): below ~16k multiply-adds it runs on the calling thread.
  const int64_t merge_grain = std::max<int64_t>(1, 16384 / (C * D));
  at::parallel_for(0, B * H, merge_grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, hq = row % H;
      float top = -INFINITY;
      for (int64_t c = 0; c < C; ++c) top = std::max(top, pm[(b * C + c) * H + hq]);
      float denom = 0.f;
      float* o = op + row * D;
      std::fill(o, o + D, 0.f);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (b * C + c) * H + hq;
        if (pl[i] == 0.f) continue;
        const float w = std::exp(pm[i] - top);
        denom += pl[i] * w;
        const float* a = pa + i * D;
        for (int64_t d = 0; d < D; ++d) o[d] += a[d] * w;
      }
      for (int64_t d = 0; d < D; ++d) o[d] /= denom;
    }
  });
  return out;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& kc, const at::Tensor& vc, const at::Tensor& table,
                            const at::Tensor& lens, double scale, int64_t window, double softcap) {
  TORCH_CHECK(q.scalar_type() == at::kFloat, "decode_attention: float32 queries expected");
  TORCH_CHECK(kc.scalar_type() == vc.scalar_type() &&
                  (kc.scalar_type() == at::kFloat || kc.scalar_type() == at::kBFloat16),
              "decode_attention: float32 or bfloat16 caches expected");
  TORCH_CHECK(kc.is_contiguous() && vc.is_contiguous(), "decode_attention: contiguous caches expected");
  if (kc.scalar_type() == at::kBFloat16)
    return decode_attention_impl<at::BFloat16>(q, kc, vc, table, lens, scale, window, softcap);
  return decode_attention_impl<float>(q, kc, vc, table, lens, scale, window, softcap);
}

TORCH_LIBRARY(agent_runtime_cpu, m) {
  m.def("decode_attention(Tensor q, Tensor cache_k, Tensor cache_v, Tensor block_table, Tensor seq_lens, float scale, int window, float softcap) -> Tensor");
}
TORCH_LIBRARY_IMPL(agent_runtime_cpu, CPU, m) { m.impl("decode_attention", decode_attention); }
