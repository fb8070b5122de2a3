"""The embedded SmolLM2-135M Q4_1 GGUF on its default, quantized path: modules, dtypes, quality, GGUF index cache.

Quality is measured against the `smollm` fixture (the same file dequantized to fp32, dense): teacher-
forced top-1 agreement over 512 positions of a fixed text, asserted >= 0.95 (measured 0.992).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from agent_runtime.bench import PARAGRAPH
from engine import LLM, SamplingParams
from engine.kv_tensors import compute_dtype, resolve_kv_dtype
from engine.loader.conversion_cache import ConversionCache
from engine.loader.gguf_checkpoint import GgufCheckpoint
from engine.loader.gguf_index import GgufIndex
from engine.quant.embedding import Int8Embedding
from engine.quant.group_quant import GroupQuant
from engine.quant.linear import Int4Linear

LAYERS = 30
PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def quantized() -> LLM:
    return LLM(warmup=False, kv_cache_memory=64 * 2**20)


def test_q4_1_matrices_are_int4_and_the_q8_0_embedding_int8(quantized):
    module = quantized.loaded.module
    for layer in range(LAYERS):
        for name in PROJECTIONS:
            linear = module.get_submodule(f"model.layers.{layer}.{name}")
            assert isinstance(linear, Int4Linear) and linear.group == 32, f"layer {layer} {name}: {linear}"
    assert sum(isinstance(m, Int4Linear) for m in module.modules()) == LAYERS * len(PROJECTIONS)
    assert isinstance(module.model.embed_tokens, Int8Embedding)  # also the tied LM head
    assert not any(isinstance(m, (nn.Linear, nn.Embedding)) for m in module.modules())
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    # No float32 weights; only our int8 layout's scales are f32 (Q8_0's scale per 32 codes: 1/8 of their bytes).
    f32 = [n for n, t in tensors.items() if t.dtype == torch.float32]
    embed = module.model.embed_tokens
    allowed = ["model.embed_tokens.scale"] if embed.layout == "agent" else []
    assert f32 == allowed, f"float32 weights left: {f32}"
    if allowed:
        assert embed.scale.numel() * 4 <= embed.weight_int8.numel() / 8 and embed.group == 32
    dense_matrices = [n for n, t in tensors.items() if t.is_floating_point() and t.dim() == 2 and n not in allowed]
    assert all(n.startswith("rotary.") for n in dense_matrices), dense_matrices  # cos/sin tables only


def test_quantized_weights_run_in_bf16_with_a_bf16_kv_cache_and_f32_attention(quantized):
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # auto: bf16 for quantized weights where the CPU has it
    assert quantized.loaded.dtype == (torch.bfloat16 if bf16 else torch.float32)
    # auto KV = the model's dtype on CPU when bf16 (halves the bytes a decode step streams), else f32;
    # attention computes in f32 either way (the C++ kernel widens bf16 keys as it reads them).
    assert quantized.core.runner.kv.keys[0].dtype == quantized.loaded.dtype
    cpu = torch.device("cpu")
    assert resolve_kv_dtype("auto", torch.bfloat16, cpu) == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.float32, cpu) == torch.float32
    assert resolve_kv_dtype("bf16", torch.float32, cpu) == torch.bfloat16
    assert resolve_kv_dtype("auto", torch.bfloat16, torch.device("cuda")) == torch.bfloat16
    assert compute_dtype(torch.bfloat16, torch.bfloat16, cpu) == torch.float32
    assert compute_dtype(torch.float8_e4m3fn, torch.bfloat16, torch.device("cuda")) == torch.bfloat16
    assert resolve_kv_dtype("fp8", torch.float32, cpu) == torch.float8_e4m3fn
    with pytest.raises(ValueError, match="invalid kv_cache_dtype 'int4'"):
        resolve_kv_dtype("int4", torch.float32, cpu)


def test_isq_none_reference_is_dense(smollm):
    module = smollm.loaded.module
    assert smollm.loaded.dtype == torch.float32
    assert sum(type(m) is nn.Linear for m in module.modules()) == LAYERS * len(PROJECTIONS)
    assert not any(isinstance(m, (Int4Linear, Int8Embedding)) for m in module.modules())


def test_teacher_forced_top1_agreement_with_fp32_is_at_least_95_percent(quantized, smollm):
    ids = quantized.tokenizer.encode(PARAGRAPH * 40)[:513]
    assert len(ids) == 513
    ours = quantized.prompt_logits(ids)[:512]  # row t predicts token t + 1
    reference = smollm.prompt_logits(ids)[:512]
    agreement = (ours.argmax(-1) == reference.argmax(-1)).float().mean().item()
    print(f"quantized (Q4_1 int4, Q8_0 int8, bf16) vs fp32: top-1 agreement {agreement:.4f} over 512 positions")
    assert agreement >= 0.95


def test_greedy_answer_is_sensible(quantized):
    out = quantized.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))[0]
    assert "Paris" in out.text, out.text


def test_kept_quantized_tensors_equal_the_dense_loader(smollm_gguf_path):
    """keep_quantized yields GroupQuants (llama q/k rows un-permuted like the dense path) that dequantize
    to exactly the float32 tensors the dense loader yields."""
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight"]
    quantized = dict(GgufCheckpoint(smollm_gguf_path).tensors(names, keep_quantized=lambda name: True))
    dense = dict(GgufCheckpoint(smollm_gguf_path).tensors(names))
    assert sorted(quantized) == sorted(dense) == sorted(names)
    for name in names:
        assert isinstance(quantized[name], GroupQuant)
        assert torch.equal(quantized[name].dequantize(), dense[name]), name


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """One conversion cache for the index tests (the HF config is converted into it once, seconds)."""
    return tmp_path_factory.mktemp("agent-runtime-cache")


@pytest.fixture(scope="module")
def parsed_index(smollm_gguf_path) -> GgufIndex:
    return GgufIndex.read(smollm_gguf_path)


@pytest.fixture
def index_reads(monkeypatch, cache_root, parsed_index) -> list:
    """The paths GgufCheckpoint asks GgufIndex.read to parse, with the cache under cache_root. The spy
    answers with the module's one real parse of the same file (it takes seconds)."""
    monkeypatch.setenv("AGENT_RUNTIME_CACHE", str(cache_root))
    calls: list = []

    def read(cls, path):
        calls.append(path)
        return parsed_index

    monkeypatch.setattr(GgufIndex, "read", classmethod(read))
    return calls


def test_gguf_index_is_read_once_then_loaded_from_the_cache(smollm_gguf_path, index_reads, cache_root):
    cached = ConversionCache(smollm_gguf_path).directory / "gguf-index.json"
    assert cached.is_relative_to(cache_root)
    cached.unlink(missing_ok=True)
    first = GgufCheckpoint(smollm_gguf_path)
    assert index_reads == [smollm_gguf_path] and cached.is_file()
    second = GgufCheckpoint(smollm_gguf_path)
    assert index_reads == [smollm_gguf_path], "the second checkpoint parsed the file again"
    assert second.index == first.index and second.architecture == "llama"
    assert len(second.index.tensors) == 272 and second.quantized


def test_a_corrupt_index_cache_is_ignored_and_rewritten(smollm_gguf_path, index_reads, parsed_index):
    cached = ConversionCache(smollm_gguf_path).directory / "gguf-index.json"
    for corruption in ("", "{not json", "[]", "null", '{"version": 0}', '{"version": 1, "tensors": 3}',
                       '{"version": 1, "tensors": [{"name": "x"}]}'):
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(corruption)
        reads = len(index_reads)
        checkpoint = GgufCheckpoint(smollm_gguf_path)
        assert len(index_reads) == reads + 1, f"a corrupt cache ({corruption!r}) was trusted"
        assert checkpoint.index == parsed_index
        assert json.loads(cached.read_text())["version"] == 1, "the cache was not rewritten"
        GgufCheckpoint(smollm_gguf_path)
        assert len(index_reads) == reads + 1
