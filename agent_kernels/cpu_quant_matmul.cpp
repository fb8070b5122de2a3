#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>
#define AGENT_QUANT_BF16 1
#endif

// Weight-only int4 and int8 matmuls for bf16 activations on CPUs with AVX512-BF16.
//
// int4: y = x W^T, with W[n, k] = q[n, k] * scale[g, n] + offset[g, n] for the group g = k / group,
// scales and offsets f16 [K / group, 2, N]: GGUF Q4_0 / Q4_1 store exactly these (d and m, or -8d)
// in f16, so the weight is the file's bit for bit (PyTorch's kernel takes bf16 scales: 3 bits fewer).
//
// Why not PyTorch's kernel: it dequantizes to fp32 and multiplies with fp32 FMAs, once per block of
// 4 rows, so 8 decode rows cost 2.6x one row. Here each 16-column tile of codes is widened to bf16
// once (a table lookup, exact: codes are 0..15) and shared by up to 8 rows, and the products run on
// vdpbf16ps (two multiply-adds a lane, fp32 accumulation): per group
//   y += scale * sum_k x_k q_k + offset * sum_k x_k,
// the same value as the dequantized weight's up to fp32 rounding (not bit-equal to PyTorch's kernel).
//
// Packed layout (cpu_quant_matmul.py packs it): [N / 16, K / 4, 32] uint8. For the 16-column tile t and
// the four input columns k = 4c .. 4c+3, byte 2n + j (n the column in the tile, j = 0, 1) holds
// q[16t + n, 4c + j] in its low nibble and q[16t + n, 4c + 2 + j] in its high nibble: zero-extending
// the 32 bytes to 16-bit lanes and masking (or shifting) gives the two [16 columns x 2 k] pairs that
// vdpbf16ps multiplies with a broadcast pair of x.

namespace {

using bf16 = c10::BFloat16;

#ifdef AGENT_QUANT_BF16

// Rows [0, rows) of x (rows <= MB) times the tiles [t0, t0 + tiles) (tiles <= NT).
template <int MB, int NT>
void tile_block(const bf16* x, int64_t ldx, const float* xsum, int64_t groups, const uint8_t* w, int64_t K,
                const at::Half* so, int64_t N, int64_t t0, int64_t tiles, int64_t rows, int64_t group, bf16* out,
                int64_t ldo) {
  alignas(64) uint16_t table_words[32];
  for (int i = 0; i < 32; ++i) {
    const bf16 v(static_cast<float>(i & 15));
    std::memcpy(&table_words[i], &v, 2);
  }
  const __m512i table = _mm512_load_si512(table_words);
  const __m512i low = _mm512_set1_epi16(0x0F);
  const int64_t quads = group / 4;
  const int64_t tile_bytes = K * 8;
  __m512 acc[MB][NT];
  for (int m = 0; m < MB; ++m)
    for (int t = 0; t < NT; ++t) acc[m][t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 part[MB][NT];
    for (int m = 0; m < MB; ++m)
      for (int t = 0; t < NT; ++t) part[m][t] = _mm512_setzero_ps();
    for (int64_t c = 0; c < quads; ++c) {
      const int64_t quad = g * quads + c;
      __m512bh wl[NT], wh[NT];
      for (int t = 0; t < NT; ++t) {
        if (t >= tiles) break;
        const __m256i bytes =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (t0 + t) * tile_bytes + quad * 32));
        const __m512i words = _mm512_cvtepu8_epi16(bytes);
        wl[t] = (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(words, low), table);
        wh[t] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(words, 4), table);
      }
      for (int m = 0; m < MB; ++m) {
        if (m >= rows) break;
        int32_t pair_lo, pair_hi;
        std::memcpy(&pair_lo, x + m * ldx + quad * 4, 4);
        std::memcpy(&pair_hi, x + m * ldx + quad * 4 + 2, 4);
        const __m512bh xl = (__m512bh)_mm512_set1_epi32(pair_lo);
        const __m512bh xh = (__m512bh)_mm512_set1_epi32(pair_hi);
        for (int t = 0; t < NT; ++t) {
          if (t >= tiles) break;
          part[m][t] = _mm512_dpbf16_ps(part[m][t], xl, wl[t]);
          part[m][t] = _mm512_dpbf16_ps(part[m][t], xh, wh[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      if (t >= tiles) break;
      // 16 f16 scales, then (N columns further) their 16 offsets.
      const at::Half* group_so = so + g * 2 * N + (t0 + t) * 16;
      const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group_so)));
      const __m512 offset = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group_so + N)));
      for (int m = 0; m < MB; ++m) {
        if (m >= rows) break;
        acc[m][t] = _mm512_fmadd_ps(part[m][t], scale, acc[m][t]);
        acc[m][t] = _mm512_fmadd_ps(_mm512_set1_ps(xsum[m * groups + g]), offset, acc[m][t]);
      }
    }
  }
  for (int m = 0; m < MB; ++m) {
    if (m >= rows) break;
    for (int t = 0; t < NT; ++t) {
      if (t >= tiles) break;
      const __m256bh v = _mm512_cvtneps_pbh(acc[m][t]);  // round to nearest even, as a bf16 cast
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * ldo + (t0 + t) * 16), (__m256i)v);
    }
  }
}

// Rows of one m-block: tile counts per call chosen so that 16-24 accumulators stay in registers.
void rows_block(const bf16* x, int64_t ldx, const float* xsum, int64_t groups, const uint8_t* w, int64_t K,
                const at::Half* sz, int64_t N, int64_t t0, int64_t t1, int64_t rows, int64_t group, bf16* out) {
  const int64_t nt = rows <= 2 ? 4 : rows <= 4 ? 2 : 1;
  for (int64_t t = t0; t < t1; t += nt) {
    const int64_t tiles = std::min(nt, t1 - t);
    if (rows == 1)
      tile_block<1, 4>(x, ldx, xsum, groups, w, K, sz, N, t, tiles, rows, group, out, N);
    else if (rows == 2)
      tile_block<2, 4>(x, ldx, xsum, groups, w, K, sz, N, t, tiles, rows, group, out, N);
    else if (rows <= 4)
      tile_block<4, 2>(x, ldx, xsum, groups, w, K, sz, N, t, tiles, rows, group, out, N);
    else
      tile_block<8, 1>(x, ldx, xsum, groups, w, K, sz, N, t, tiles, rows, group, out, N);
  }
}


// int8: y[n] = sum over groups g of scale[g, n] * (x q^T) over the group's input columns (one group
// of K columns: a scale per row). Packed [N / 16, K / 2, 32] int8: for tile t and input columns 2p,
// 2p+1, byte 2n + j holds q[16t + n, 2p + j] (one [16 columns x 2 k] pair of vdpbf16ps per 32 bytes).
template <int MB, int NT>
void int8_block(const bf16* x, int64_t ldx, const int8_t* w, int64_t K, const float* scale, int64_t N, int64_t group,
                int64_t t0, int64_t tiles, int64_t rows, bf16* out, int64_t ldo) {
  const int64_t tile_bytes = K * 16;
  __m512 acc[MB][NT];
  for (int m = 0; m < MB; ++m)
    for (int t = 0; t < NT; ++t) acc[m][t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < K / group; ++g) {
    __m512 part[MB][NT];
    for (int m = 0; m < MB; ++m)
      for (int t = 0; t < NT; ++t) part[m][t] = _mm512_setzero_ps();
    for (int64_t p = g * group / 2; p < (g + 1) * group / 2; ++p) {
      __m512bh wv[NT];
      for (int t = 0; t < NT; ++t) {
        if (t >= tiles) break;
        const int8_t* src = w + (t0 + t) * tile_bytes + p * 32;
        // int8 -> fp32 -> bf16 is exact (|q| <= 128 needs 8 significant bits).
        const __m512 lo =
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src))));
        const __m512 hi =
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16))));
        wv[t] = _mm512_cvtne2ps_pbh(hi, lo);
      }
      for (int m = 0; m < MB; ++m) {
        if (m >= rows) break;
        int32_t pair;
        std::memcpy(&pair, x + m * ldx + p * 2, 4);
        const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
        for (int t = 0; t < NT; ++t) {
          if (t >= tiles) break;
          part[m][t] = _mm512_dpbf16_ps(part[m][t], xv, wv[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      if (t >= tiles) break;
      const __m512 s = _mm512_loadu_ps(scale + g * N + (t0 + t) * 16);
      for (int m = 0; m < MB; ++m) {
        if (m >= rows) break;
        acc[m][t] = _mm512_fmadd_ps(part[m][t], s, acc[m][t]);
      }
    }
  }
  for (int m = 0; m < MB; ++m) {
    if (m >= rows) break;
    for (int t = 0; t < NT; ++t) {
      if (t >= tiles) break;
      const __m256bh v = _mm512_cvtneps_pbh(acc[m][t]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * ldo + (t0 + t) * 16), (__m256i)v);
    }
  }
}

void int8_rows_block(const bf16* x, int64_t ldx, const int8_t* w, int64_t K, const float* scale, int64_t N,
                     int64_t group, int64_t t0, int64_t t1, int64_t rows, bf16* out) {
  const int64_t nt = rows <= 2 ? 4 : 2;
  for (int64_t t = t0; t < t1; t += nt) {
    const int64_t tiles = std::min(nt, t1 - t);
    if (rows == 1)
      int8_block<1, 4>(x, ldx, w, K, scale, N, group, t, tiles, rows, out, N);
    else if (rows == 2)
      int8_block<2, 4>(x, ldx, w, K, scale, N, group, t, tiles, rows, out, N);
    else if (rows <= 4)
      int8_block<4, 2>(x, ldx, w, K, scale, N, group, t, tiles, rows, out, N);
    else
      int8_block<8, 2>(x, ldx, w, K, scale, N, group, t, tiles, rows, out, N);
  }
}

#endif  // AGENT_QUANT_BF16

// The work of one matmul across threads: items of (block of up to 8 rows, run of 4 column tiles),
// runs keeping a thread's codes contiguous; fn(m0, rows, t0, t1) computes one.
template <typename Fn>
void for_each_block(int64_t M, int64_t tiles, const Fn& fn) {
  constexpr int64_t MB = 8, RUN = 4;
  const int64_t mblocks = (M + MB - 1) / MB, runs = (tiles + RUN - 1) / RUN;
  at::parallel_for(0, mblocks * runs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t m0 = item / runs * MB, t0 = item % runs * RUN;
      fn(m0, std::min(MB, M - m0), t0, std::min(tiles, t0 + RUN));
    }
  });
}

bool bf16_supported() {
#ifdef AGENT_QUANT_BF16
  return true;
#else
  return false;
#endif
}

}  // namespace

// Also called by cpu_decode_step.cpp.
at::Tensor agent_int4_mm(const at::Tensor& x, const at::Tensor& packed, int64_t group, const at::Tensor& scales_offsets) {
  TORCH_CHECK(bf16_supported(), "int4_mm: this build has no AVX512-BF16 (use aten::_weight_int4pack_mm_for_cpu)");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.device().is_cpu(),
              "int4_mm: x must be a contiguous 2-D bf16 CPU tensor, got ", x.sizes(), " ", x.scalar_type());
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.size(2) == 32 && packed.is_contiguous(),
              "int4_mm: packed weight must be uint8 [N/16, K/4, 32], got ", packed.sizes(), " ", packed.scalar_type());
  const int64_t M = x.size(0), K = x.size(1), N = packed.size(0) * 16;
  TORCH_CHECK(packed.size(1) * 4 == K, "int4_mm: packed weight covers ", packed.size(1) * 4, " input columns, x has ", K);
  TORCH_CHECK(group % 4 == 0 && group > 0 && K % group == 0, "int4_mm: group ", group, " must divide K=", K,
              " and be a multiple of 4");
  const int64_t groups = K / group;
  TORCH_CHECK(scales_offsets.scalar_type() == at::kHalf && scales_offsets.is_contiguous() &&
                  scales_offsets.dim() == 3 && scales_offsets.size(0) == groups && scales_offsets.size(1) == 2 &&
                  scales_offsets.size(2) == N,
              "int4_mm: scales_offsets must be contiguous f16 [", groups, ", 2, ", N, "], got ",
              scales_offsets.sizes(), " ", scales_offsets.scalar_type());
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
#ifdef AGENT_QUANT_BF16
  // Per row and group, the sum of x (fp32) for the zero term.
  std::vector<float> xsum(M * groups);
  const bf16* xp = x.data_ptr<bf16>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.f;
      for (int64_t k = g * group; k < (g + 1) * group; ++k) s += static_cast<float>(xp[m * K + k]);
      xsum[m * groups + g] = s;
    }
  const uint8_t* w = packed.data_ptr<uint8_t>();
  const at::Half* sz = scales_offsets.data_ptr<at::Half>();
  bf16* op = out.data_ptr<bf16>();
  for_each_block(M, N / 16, [&](int64_t m0, int64_t rows, int64_t t0, int64_t t1) {
    rows_block(xp + m0 * K, K, xsum.data() + m0 * groups, groups, w, K, sz, N, t0, t1, rows, group, op + m0 * N);
  });
#endif
  return out;
}

// Also called by cpu_decode_step.cpp.
at::Tensor agent_int8_mm(const at::Tensor& x, const at::Tensor& packed, int64_t group, const at::Tensor& scale) {
  TORCH_CHECK(bf16_supported(), "int8_mm: this build has no AVX512-BF16 (use aten::_weight_int8pack_mm)");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.device().is_cpu(),
              "int8_mm: x must be a contiguous 2-D bf16 CPU tensor, got ", x.sizes(), " ", x.scalar_type());
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kChar && packed.size(2) == 32 && packed.is_contiguous(),
              "int8_mm: packed weight must be int8 [N/16, K/2, 32], got ", packed.sizes(), " ", packed.scalar_type());
  const int64_t M = x.size(0), K = x.size(1), N = packed.size(0) * 16;
  TORCH_CHECK(packed.size(1) * 2 == K, "int8_mm: packed weight covers ", packed.size(1) * 2, " input columns, x has ", K);
  TORCH_CHECK(group > 0 && group % 2 == 0 && K % group == 0, "int8_mm: group ", group, " must be even and divide K=", K);
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.dim() == 2 &&
                  scale.size(0) == K / group && scale.size(1) == N,
              "int8_mm: scale must be contiguous f32 [", K / group, ", ", N, "], got ", scale.sizes(), " ",
              scale.scalar_type());
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
#ifdef AGENT_QUANT_BF16
  const bf16* xp = x.data_ptr<bf16>();
  const int8_t* w = packed.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  bf16* op = out.data_ptr<bf16>();
  for_each_block(M, N / 16, [&](int64_t m0, int64_t rows, int64_t t0, int64_t t1) {
    int8_rows_block(xp + m0 * K, K, w, K, sp, N, group, t0, t1, rows, op + m0 * N);
  });
#endif
  return out;
}

TORCH_LIBRARY_FRAGMENT(agent_runtime_cpu, m) {
  m.def("int4_mm(Tensor x, Tensor packed, int group, Tensor scales_offsets) -> Tensor");
  m.def("int8_mm(Tensor x, Tensor packed, int group, Tensor scale) -> Tensor");
  m.def("bf16_matmul_supported() -> bool", &bf16_supported);
}

TORCH_LIBRARY_IMPL(agent_runtime_cpu, CPU, m) {
  m.impl("int4_mm", &agent_int4_mm);
  m.impl("int8_mm", &agent_int8_mm);
}
