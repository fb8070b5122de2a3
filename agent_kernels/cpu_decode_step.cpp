#include <torch/extension.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cmath>
#include <vector>

// Every decoder layer of a decode step (one new token per sequence) in one C++ call, for Llama-style
// models (pre-norm RMSNorm weight * x, fused QKV, rotary in the half-split layout, GQA attention over
// the paged cache, fused gate/up SiLU MLP) whose linears are PyTorch's packed int4 or int8 CPU
// weights and whose activations are bf16. The matmuls and the attention are the same kernels the eager
// path calls (cpu_quant_matmul.cpp's int4/int8 or aten::_weight_int4pack_mm_for_cpu / aten::_weight_int8pack_mm,
// and decode_attention of
// cpu_decode_attention.cpp); the small element-wise work between them (norms, rotary, residuals,
// x up, the KV write) is plain loops here, each rounding to bf16 where the eager path's torch ops do,
// with the norm's sum of squares and SiLU left to ATen (their summation order and exp), so the step
// computes the eager layers' values bit for bit. What this removes is the per-op cost of Python, the
// dispatcher and torch.compile's guards and wrapper: ~40 small ops a layer become one call a step.
// engine/native_decode.py checks a model fits and flattens its weights for this call.

at::Tensor agent_int4_mm(const at::Tensor& x, const at::Tensor& packed, int64_t group, const at::Tensor& scales_zeros);
at::Tensor agent_int8_mm(const at::Tensor& x, const at::Tensor& packed, int64_t group, const at::Tensor& scale);
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& kc, const at::Tensor& vc, const at::Tensor& table,
                            const at::Tensor& lens, double scale, int64_t window, double softcap);

namespace {

using bf16 = c10::BFloat16;

inline float round_bf16(float v) { return static_cast<float>(static_cast<bf16>(v)); }

enum Kind : int64_t { INT4 = 0, INT8 = 1, INT4_AGENT = 2, INT8_AGENT = 3 };

// One linear of a layer: y = x W^T (+ bias), x [B, in] bf16 contiguous.
at::Tensor linear(const at::Tensor& x, int64_t kind, int64_t group, const at::Tensor& weight, const at::Tensor& scales,
                  const at::Tensor& bias) {
  at::Tensor out = kind == INT4         ? at::_weight_int4pack_mm_for_cpu(x, weight, group, scales)
                   : kind == INT4_AGENT ? agent_int4_mm(x, weight, group, scales)
                   : kind == INT8_AGENT ? agent_int8_mm(x, weight, group, scales)
                                        : at::_weight_int8pack_mm(x, weight, scales);
  if (bias.numel() > 0) out.add_(bias);  // eager: out + bias, in bf16 (one rounding either way)
  return out;
}

// out = weight * bf16(x * rsqrt(mean(x^2) + eps)), row by row (the eager RMSNorm, Llama convention).
// The mean of squares is ATen's sum (its summation order: the eager norm's rounding, bit for bit);
// the element-wise parts are single IEEE operations either way. `squares` is a [rows, n] f32 buffer.
void rms_norm(const bf16* x, const bf16* weight, bf16* out, at::Tensor& squares, int64_t rows, int64_t n,
              float eps) {
  float* sq = squares.data_ptr<float>();
  for (int64_t i = 0; i < rows * n; ++i) {
    const float v = static_cast<float>(x[i]);
    sq[i] = v * v;
  }
  const at::Tensor sums = at::sum(squares, {-1});
  const float* sp = sums.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const bf16* xr = x + r * n;
    const float inv = 1.f / std::sqrt(sp[r] / static_cast<float>(n) + eps);
    bf16* o = out + r * n;
    for (int64_t i = 0; i < n; ++i)
      o[i] = static_cast<bf16>(static_cast<float>(weight[i]) * round_bf16(static_cast<float>(xr[i]) * inv));
  }
}

// x += h (bf16 + bf16, rounded once), then out = rms_norm(x).
void add_rms_norm(bf16* x, const bf16* h, const bf16* weight, bf16* out, at::Tensor& squares, int64_t rows,
                  int64_t n, float eps) {
  for (int64_t i = 0; i < rows * n; ++i) x[i] = static_cast<bf16>(static_cast<float>(x[i]) + static_cast<float>(h[i]));
  rms_norm(x, weight, out, squares, rows, n, eps);
}

// One head of D values rotated in place: x*cos + roll(x, D/2)*sin, each product and the sum rounded
// to bf16 as the eager ops do (`sin` carries rotate_half's sign in its first half).
void rotate(bf16* x, const bf16* cos, const bf16* sin, int64_t D, float* scratch) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < D; ++i) {
    const float other = static_cast<float>(x[i < half ? i + half : i - half]);
    const float a = round_bf16(static_cast<float>(x[i]) * static_cast<float>(cos[i]));
    const float b = round_bf16(other * static_cast<float>(sin[i]));
    scratch[i] = a + b;
  }
  for (int64_t i = 0; i < D; ++i) x[i] = static_cast<bf16>(scratch[i]);
}

template <typename cache_t>
void store(cache_t* dst, const bf16* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<cache_t>(static_cast<float>(src[i]));
}

}  // namespace

// x [B, hidden] bf16: the embedded tokens; returns the hidden states after the last layer.
// Per layer l: norms[2l], norms[2l+1] (input, post-attention); linears l*4 + {0 qkv, 1 o, 2 gate_up,
// 3 down}, each as kinds[j], groups[j], weights[j], scales[j], biases[j] (numel 0: no bias);
// windows[l] (0: full attention); keys[l], values[l] the paged caches [blocks, BS, KVH, D].
at::Tensor decode_layers(const at::Tensor& x_in, at::TensorList norms, at::IntArrayRef kinds, at::IntArrayRef groups,
                         at::TensorList weights, at::TensorList scales, at::TensorList biases, at::IntArrayRef windows,
                         const at::Tensor& cos, const at::Tensor& sin, at::TensorList keys, at::TensorList values,
                         const at::Tensor& slots, const at::Tensor& table, const at::Tensor& lens, int64_t heads,
                         int64_t kv_heads, int64_t head_dim, double eps, double scale) {
  TORCH_CHECK(x_in.scalar_type() == at::kBFloat16 && x_in.dim() == 2, "decode_layers: bf16 [B, hidden] input expected");
  TORCH_CHECK(cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16,
              "decode_layers: bf16 rotary tables expected");
  TORCH_CHECK(slots.scalar_type() == at::kLong, "decode_layers: int64 slot mapping expected");
  const int64_t L = static_cast<int64_t>(keys.size());
  TORCH_CHECK(L > 0 && static_cast<int64_t>(values.size()) == L && static_cast<int64_t>(norms.size()) == 2 * L &&
                  static_cast<int64_t>(windows.size()) == L && static_cast<int64_t>(kinds.size()) == 4 * L &&
                  static_cast<int64_t>(groups.size()) == 4 * L && static_cast<int64_t>(weights.size()) == 4 * L &&
                  static_cast<int64_t>(scales.size()) == 4 * L && static_cast<int64_t>(biases.size()) == 4 * L,
              "decode_layers: per-layer lists of mismatched lengths");
  const int64_t B = x_in.size(0), hidden = x_in.size(1), H = heads, KVH = kv_heads, D = head_dim;
  TORCH_CHECK(cos.size(0) == B && cos.size(1) == D && sin.sizes() == cos.sizes(), "decode_layers: rotary rows [B, D]");
  at::Tensor x = x_in.clone();  // the residual stream, updated in place
  at::Tensor h = at::empty_like(x);
  at::Tensor q = at::empty({B, H, D}, x.options().dtype(at::kFloat));
  at::Tensor squares = at::empty({B, hidden}, x.options().dtype(at::kFloat));
  std::vector<float> scratch(static_cast<size_t>(D));
  const int64_t* sp = slots.contiguous().data_ptr<int64_t>();
  at::Tensor cosc = cos.contiguous(), sinc = sin.contiguous();
  const bf16* cp = cosc.data_ptr<bf16>();
  const bf16* snp = sinc.data_ptr<bf16>();
  const int64_t qkv_width = (H + 2 * KVH) * D;
  for (int64_t l = 0; l < L; ++l) {
    bf16* xp = x.data_ptr<bf16>();
    rms_norm(xp, norms[2 * l].data_ptr<bf16>(), h.data_ptr<bf16>(), squares, B, hidden, static_cast<float>(eps));
    const int64_t j = 4 * l;
    at::Tensor qkv = linear(h, kinds[j], groups[j], weights[j], scales[j], biases[j]);
    TORCH_CHECK(qkv.size(1) == qkv_width, "decode_layers: QKV width ", qkv.size(1), " != ", qkv_width);
    bf16* qkvp = qkv.data_ptr<bf16>();
    const at::Tensor& kc = keys[l];
    const at::Tensor& vc = values[l];
    float* qp = q.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      bf16* row = qkvp + b * qkv_width;
      for (int64_t hd = 0; hd < H + KVH; ++hd) rotate(row + hd * D, cp + b * D, snp + b * D, D, scratch.data());
      for (int64_t i = 0; i < H * D; ++i) qp[b * H * D + i] = static_cast<float>(row[i]);
      const int64_t off = sp[b] * KVH * D;
      if (kc.scalar_type() == at::kBFloat16) {
        store(kc.data_ptr<bf16>() + off, row + H * D, KVH * D);
        store(vc.data_ptr<bf16>() + off, row + (H + KVH) * D, KVH * D);
      } else {
        store(kc.data_ptr<float>() + off, row + H * D, KVH * D);
        store(vc.data_ptr<float>() + off, row + (H + KVH) * D, KVH * D);
      }
    }
    at::Tensor att = decode_attention(q, kc, vc, table, lens, scale, windows[l], 0.0)
                         .to(at::kBFloat16).view({B, H * D});
    at::Tensor o = linear(att, kinds[j + 1], groups[j + 1], weights[j + 1], scales[j + 1], biases[j + 1]);
    add_rms_norm(xp, o.data_ptr<bf16>(), norms[2 * l + 1].data_ptr<bf16>(), h.data_ptr<bf16>(), squares, B, hidden,
                 static_cast<float>(eps));
    at::Tensor gu = linear(h, kinds[j + 2], groups[j + 2], weights[j + 2], scales[j + 2], biases[j + 2]);
    const int64_t inter = gu.size(1) / 2;
    // SiLU through ATen (its vectorised exp: the eager rounding), x up in place of the gate's result.
    at::Tensor act = at::silu(gu.narrow(1, 0, inter));
    const bf16* gp = gu.data_ptr<bf16>();
    bf16* ap = act.data_ptr<bf16>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < inter; ++i)
        ap[b * inter + i] = static_cast<bf16>(static_cast<float>(ap[b * inter + i]) *
                                              static_cast<float>(gp[b * 2 * inter + inter + i]));
    at::Tensor d = linear(act, kinds[j + 3], groups[j + 3], weights[j + 3], scales[j + 3], biases[j + 3]);
    const bf16* dp = d.data_ptr<bf16>();
    for (int64_t i = 0; i < B * hidden; ++i) xp[i] = static_cast<bf16>(static_cast<float>(xp[i]) + static_cast<float>(dp[i]));
  }
  return x;
}

TORCH_LIBRARY_FRAGMENT(agent_runtime_cpu, m) {
  m.def("decode_layers(Tensor x, Tensor[] norms, int[] kinds, int[] groups, Tensor[] weights, Tensor[] scales, "
        "Tensor[] biases, int[] windows, Tensor cos, Tensor sin, Tensor[] keys, Tensor[] values, Tensor slots, "
        "Tensor block_table, Tensor seq_lens, int heads, int kv_heads, int head_dim, float eps, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(agent_runtime_cpu, CPU, m) { m.impl("decode_layers", decode_layers); }
