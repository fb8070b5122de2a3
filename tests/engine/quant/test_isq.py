"""In-situ quantization (engine/quant/isq.py) and the `isq` option on tiny random safetensors models.

Quantizer bounds are exact up to float32 rounding (slack 1e-5 relative). Model checks, measured on
64 teacher-forced positions of tiny random Llama / Qwen3 models (fixed seeds):
- isq with dtype=f32 equals the dense model whose weights were quantized and dequantized in place
  (max |logit difference| / max |logit| <= 1e-4; measured <= 4e-6): the assembly (fused q/k/v and
  gate/up parts, row order, LM head, embedding) changes nothing but the weights' rounding;
- int8 in the default bf16 against the dense fp32 model: logits correlation > 0.99 (measured 0.998
  Llama, 0.999 Qwen3), top-1 agreement >= 0.8 (measured 0.89, 0.89);
- int4 in bf16 against that fake-quantized model: top-1 >= 0.85 (measured 0.94, 0.98), correlation > 0.99
  (measured 0.9995, 0.9998). int4 against the dense model is only checked loosely (correlation > 0.75;
  measured 0.85, 0.93; top-1 0.33, 0.59): these random weights (init std 0.2) are chaotic, and
  group-32 int4 moves each weight by ~8% of its std.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoConfig

from agent_runtime.cli import build_parser, engine_options
from engine import LLM, EngineConfig
from engine.loader import load_model
from engine.loader.quantized import QuantizedAssembly
from engine.models import DecoderModel, native_builder
from engine.quant.embedding import Int8Embedding
from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_int4, quantize_int8
from engine.quant.linear import Int4Linear, Int8Linear
from tests.engine.tiny_models import BOS, save_tiny_model

FP32_SLACK = 1e-5
TEXT = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs."
IDS = [BOS, *TEXT.encode()][:64]
QUIET = dict(warmup=False, kv_cache_memory=16 * 2**20)
# dtype="auto" with quantized weights: bf16 where the CPU has it (the int4/int8 kernels' fast path).
AUTO_DTYPE = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def random_weight(rows: int = 96, cols: int = 256) -> torch.Tensor:
    """Rows spanning four decades of magnitude, a constant group and an all-zero row."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(rows, cols, generator=g) * torch.logspace(-3, 1, rows)[:, None]
    w[3, :128] = 0.7
    w[5] = 0.0
    return w


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_error_is_at_most_half_a_step_per_group(group):
    w = random_weight()
    gq = quantize_int4(w, group=group)
    assert (gq.bits, gq.group, gq.codes.dtype) == (4, group, torch.uint8)
    assert gq.codes.max() <= 15 and gq.scale.shape == gq.offset.shape == (96, 256 // group)
    err = (gq.dequantize() - w).abs().view(96, -1, group)
    half_step = gq.scale[:, :, None] / 2
    assert (err <= half_step * (1 + FP32_SLACK) + 1e-7).all()
    assert err[3, 0].max() == 0 and err[5].max() == 0  # constant groups are exact (scale 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_int8_error_is_at_most_half_a_step_per_row(dtype):
    w = random_weight().to(dtype)
    gq = quantize_int8(w)
    assert (gq.bits, gq.group, gq.offset, gq.codes.dtype) == (8, 256, None, torch.int8)
    assert gq.codes.abs().max() <= 127 and gq.scale.shape == (96, 1)
    exact = w.float()
    rowmax = exact.abs().amax(-1, keepdim=True)
    err = (gq.dequantize() - exact).abs()
    assert (err <= rowmax / 254 * (1 + FP32_SLACK)).all()
    assert err[5].max() == 0


@pytest.mark.parametrize("chunk_rows", [1, 7, 96, 4096])
def test_chunked_int8_equals_unchunked(chunk_rows):
    w = random_weight()
    whole = quantize_int8(w)
    chunked = quantize_int8(w, chunk_rows=chunk_rows)
    assert torch.equal(chunked.codes, whole.codes) and torch.equal(chunked.scale, whole.scale)
    # A GroupQuant input is requantized chunk by chunk, as if its dequantized weight were given.
    gq = quantize_int4(w)
    from_gq = quantize_int8(gq, chunk_rows=chunk_rows)
    from_dense = quantize_int8(gq.dequantize())
    assert torch.equal(from_gq.codes, from_dense.codes) and torch.equal(from_gq.scale, from_dense.scale)


# --- the isq option on tiny random models -------------------------------------------------------------


def fake_quantized(directory, isq: str) -> LLM:
    """The dense fp32 model with every matrix replaced by its quantize-dequantize round trip (what
    isq computes with); row-wise quantizers, so a fused q/k/v or gate/up equals its parts."""
    llm = LLM(str(directory), dtype="f32", **QUIET)
    quantize = quantize_int4 if isq == "int4" else quantize_int8
    with torch.no_grad():
        for module in llm.loaded.module.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(quantize(module.weight).dequantize())
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(quantize_int8(module.weight).dequantize())
    return llm


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1].item()


def top1(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(-1) == b.argmax(-1)).float().mean().item()


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def tiny(request, tmp_path_factory):
    directory = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, directory, LLM(str(directory), dtype="f32", **QUIET).prompt_logits(IDS)


@pytest.mark.parametrize("isq", ["int8", "int4"])
def test_isq_loads_quantized_modules_and_follows_the_dense_model(tiny, isq):
    family, directory, dense = tiny
    llm = LLM(str(directory), isq=isq, **QUIET)
    assert llm.loaded.native and llm.loaded.dtype == AUTO_DTYPE
    modules = list(llm.loaded.module.modules())
    assert not any(type(m) in (nn.Linear, nn.Embedding) for m in modules), "a dense matrix was left"
    linear = Int4Linear if isq == "int4" else Int8Linear
    # 3 layers x (qkv, o, gate_up, down) + the untied LM head; the embedding is int8 rows in every mode.
    assert sum(isinstance(m, linear) for m in modules) == 13
    assert sum(isinstance(m, Int8Embedding) for m in modules) == 1
    logits = llm.prompt_logits(IDS)
    fake = fake_quantized(directory, isq).prompt_logits(IDS)
    exact = LLM(str(directory), isq=isq, dtype="f32", **QUIET).prompt_logits(IDS)
    drift = ((exact - fake).abs().max() / fake.abs().max()).item()
    numbers = (f"{family} {isq}: f32 isq vs fake-quantized {drift:.1e}; bf16 vs dense: corr "
               f"{correlation(logits, dense):.4f} top-1 {top1(logits, dense):.3f}; bf16 vs fake-quantized: corr "
               f"{correlation(logits, fake):.4f} top-1 {top1(logits, fake):.3f}")
    print(numbers)
    assert drift <= 1e-4, numbers
    if isq == "int8":
        assert correlation(logits, dense) > 0.99 and top1(logits, dense) >= 0.8, numbers
    else:
        assert correlation(logits, fake) > 0.99 and top1(logits, fake) >= 0.85, numbers
        assert correlation(logits, dense) > 0.75, numbers


@pytest.mark.parametrize("isq, kind", [(None, Int8Linear), ("int4", Int4Linear), ("int8", Int8Linear)])
def test_fused_parts_in_different_formats_still_load(tmp_path, isq, kind):
    """A GGUF may store one part of a fused projection in another type (a Q8_0 attn_v beside Q4 q/k).
    They cannot be one int4 weight as they are: the default keeps the projection as int8, isq="int4"
    requantizes it to int4; either way the module's weight is the parts' weight, requantized."""
    config = AutoConfig.from_pretrained(save_tiny_model("llama", tmp_path))
    spec = native_builder(config)(config)
    with torch.device("meta"):
        model = DecoderModel(spec)
    assembly = QuantizedAssembly(model, isq, torch.float32)
    g = torch.Generator().manual_seed(7)
    dense = {name: torch.randn(rows, 64, generator=g) for name, rows in (("q", 64), ("k", 32), ("v", 32))}
    v_scale = dense["v"].abs().view(32, 2, 32).amax(-1) / 127  # Q8_0: symmetric int8, one scale per 32 columns
    v_codes = (dense["v"].view(32, 2, 32) / v_scale[:, :, None]).round().to(torch.int8).view(32, 64)
    parts = {"q": quantize_int4(dense["q"]), "k": quantize_int4(dense["k"]),
             "v": GroupQuant(v_codes, v_scale, None, 32, 8)}
    for name, part in parts.items():
        assembly.add(f"model.layers.0.self_attn.{name}_proj.weight", part)
    module = model.get_submodule("model.layers.0.self_attn.qkv_proj")
    assert type(module) is kind and (module.out_features, module.in_features) == (128, 64)
    whole = torch.cat([part.dequantize() for part in parts.values()])
    expected = (quantize_int4 if kind is Int4Linear else quantize_int8)(whole).dequantize()
    assert torch.allclose(module.dequantize(), expected, rtol=0, atol=1e-6)


def test_invalid_isq_is_named():
    with pytest.raises(ValueError, match="invalid isq='int3'"):
        EngineConfig(isq="int3")
    with pytest.raises(ValueError, match="invalid isq='int3'"):
        LLM(isq="int3")
    with pytest.raises(ValueError, match="invalid isq 'int3'"):
        load_model(isq="int3")


def test_cli_accepts_isq_modes_and_refuses_int3(capsys):
    args = build_parser().parse_args(["generate", "--isq", "int8", "hi"])
    assert EngineConfig(**engine_options(args)).isq == "int8"
    assert build_parser().parse_args(["generate", "hi"]).isq is None
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["generate", "--isq", "int3", "hi"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int3'" in capsys.readouterr().err


@pytest.mark.parametrize("isq, kind", [("int8", "TritonInt8Linear"), ("int4", "TritonInt4Linear"),
                                       ("fp8", "TritonFp8Linear"), (None, "TritonInt4Linear")])
def test_off_the_cpu_the_assembly_builds_triton_modules_and_keeps_the_embedding_dense(tmp_path, isq, kind):
    """A GPU layer gets the Triton weight-only modules (engine/quant/triton_linear.py); checked here with
    the meta device standing in for CUDA (the module types depend only on "not the CPU")."""
    config = AutoConfig.from_pretrained(save_tiny_model("llama", tmp_path))
    spec = native_builder(config)(config)
    with torch.device("meta"):
        model = DecoderModel(spec)
    meta = torch.device("meta")
    assembly = QuantizedAssembly(model, isq, torch.bfloat16, meta, [meta] * spec.num_layers)
    assert not assembly.wants("model.embed_tokens.weight")  # dense on a GPU
    g = torch.Generator().manual_seed(3)
    for name, rows in (("q", 64), ("k", 32), ("v", 32)):
        w = torch.randn(rows, 64, generator=g)
        assembly.add(f"model.layers.0.self_attn.{name}_proj.weight", quantize_int4(w) if isq is None else w)
    module = model.get_submodule("model.layers.0.self_attn.qkv_proj")
    assert type(module).__name__ == kind
    assert assembly.kinds["model.layers.0.self_attn.qkv_proj"] == kind.removeprefix("Triton").removesuffix(
        "Linear").lower()
    assert next(module.buffers()).device.type == "meta"
