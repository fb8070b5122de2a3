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
// scores are tanh-capped when softcap > 0. One task per (sequence, chunk of 128 keys) over all heads,
// so a task streams through its cache blocks in memory order (a token's KVH x D keys are contiguous);
// the chunks' partial softmax states are merged at the end (flash-decoding), so a single long
// sequence still uses every thread. The plain-torch reference and the dispatch are in
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
  const int64_t BS = kc.size(1), KVH = kc.size(2), G = H / KVH, MB = tc.size(1);
  const float* qp = qc.data_ptr<float>();
  const cache_t* kp = kc.data_ptr<cache_t>();
  const cache_t* vp = vc.data_ptr<cache_t>();
  const int64_t* tp = tc.data_ptr<int64_t>();
  const int64_t* lp = lc.data_ptr<int64_t>();
  int64_t longest = 1;
  for (int64_t b = 0; b < B; ++b) longest = std::max(longest, lp[b]);
  // Split each sequence's keys into chunks (flash-decoding): tasks = (sequence, KV head, chunk), so one
  // long sequence still keeps every thread busy; partial softmax states are merged at the end.
  const int64_t CHUNK = 128, C = (longest + CHUNK - 1) / CHUNK;
  // Partial states live in a buffer the calling thread keeps between calls (30 calls a decode step).
  thread_local std::vector<float> partials;
  partials.resize(static_cast<size_t>(B * C * H * (2 + D)));
  float* pm = partials.data();
  float* pl = pm + B * C * H;
  float* pa = pl + B * C * H;
  // One task per (sequence, chunk of keys), all heads: a token's keys (KVH x D floats) are contiguous,
  // so a task streams through its blocks in memory order.
  at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(H * CHUNK);
    std::vector<float> widened(KVH * D);  // one bf16 token row as f32 (read once, used by its G query heads)
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / C, c = task % C;
      const int64_t L = lp[b], lo = window > 0 ? std::max<int64_t>(0, L - window) : 0;
      const int64_t from = lo + c * CHUNK, to = std::min(L, from + CHUNK), n = to - from;
      float* m = pm + task * H;
      float* l = pl + task * H;
      float* acc = pa + task * H * D;
      std::fill(acc, acc + H * D, 0.f);
      if (n <= 0) {
        for (int64_t hq = 0; hq < H; ++hq) { m[hq] = -INFINITY; l[hq] = 0.f; }
        continue;
      }
      const float* qb = qp + b * H * D;
      for (int64_t t = from; t < to; ++t) {
        const float* row = token_row(kp + (tp[b * MB + t / BS] * BS + t % BS) * KVH * D, KVH * D, widened.data());
        for (int64_t hq = 0; hq < H; ++hq) {
          const float* k = row + (hq / G) * D;
          const float* qh = qb + hq * D;
          float s = 0.f;
#pragma omp simd reduction(+ : s)
          for (int64_t d = 0; d < D; ++d) s += qh[d] * k[d];
          s *= scale;
          if (softcap > 0) s = std::tanh(s / softcap) * softcap;
          scores[hq * CHUNK + (t - from)] = s;
        }
      }
      for (int64_t hq = 0; hq < H; ++hq) {
        float* srow = scores.data() + hq * CHUNK;
        m[hq] = *std::max_element(srow, srow + n);
        float total = 0.f;
        for (int64_t i = 0; i < n; ++i) { srow[i] = std::exp(srow[i] - m[hq]); total += srow[i]; }
        l[hq] = total;
      }
      for (int64_t t = from; t < to; ++t) {
        const float* row = token_row(vp + (tp[b * MB + t / BS] * BS + t % BS) * KVH * D, KVH * D, widened.data());
        for (int64_t hq = 0; hq < H; ++hq) {
          const float* v = row + (hq / G) * D;
          const float p = scores[hq * CHUNK + (t - from)];
          float* a = acc + hq * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += p * v[d];
        }
      }
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
