"""The native decode step (engine/native_decode.py, agent_kernels/cpu_decode_step.cpp) against the
eager layers it replaces.

The C++ step rounds to bf16 wherever the eager torch ops do and leaves RMSNorm's sum and SiLU to
ATen, so on the embedded model its logits equal eager's bit for bit at every decode step (printed),
and greedy tokens are identical, batched or not.
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import cpu_decode_step
from engine import LLM, SamplingParams
from engine.forward_batch import ForwardBatch
from engine.native_decode import NativeDecode, unfit_reason
from tests.engine.tiny_models import save_tiny_model

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
QUIET = dict(kv_cache_memory=32 * 2**20, warmup=False)


@pytest.fixture(scope="module")
def embedded() -> LLM:
    return LLM(**QUIET)


def _greedy(llm: LLM, native: bool, prompts, n: int = 32) -> list[list[int]]:
    llm.core.runner.native = llm.core.native if native else None
    try:
        return [out.token_ids for out in llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n,
                                                                              ignore_eos=True))]
    finally:
        llm.core.runner.native = llm.core.native


def test_the_embedded_model_decodes_natively_without_torch_compile(embedded: LLM):
    assert embedded.core.native is not None
    assert embedded.core.compiled is None  # the native step replaces torch.compile: nothing compiles


def test_greedy_tokens_equal_eager_on_the_embedded_model(embedded: LLM):
    long = embedded.tokenizer.encode("The old lighthouse keeper climbed the stairs to light the lamp. " * 25)[:300]
    prompts = [*PROMPTS, long]  # batched decode (4 sequences), one of them over many blocks
    assert _greedy(embedded, True, prompts) == _greedy(embedded, False, prompts)


def test_the_native_step_runs_every_decode_batch(embedded: LLM, monkeypatch):
    calls = []
    step = embedded.core.native.step
    monkeypatch.setattr(embedded.core.native, "step", lambda *a: calls.append(1) or step(*a))
    embedded.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert len(calls) == 3  # 3 decode steps after the prefill, one native call each (all layers)


def _step_diffs(llm: LLM, prompt: list[int], steps: int):
    """Per decode step on the same KV state: (max |eager - native| logits, argmax equal count)."""
    model, kv, native = llm.loaded.module, llm.core.runner.kv, llm.core.native
    tokens = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True))[0].token_ids
    size = llm.core.config.block_size
    table = list(range(1, 2 + (len(prompt) + steps) // size))  # blocks no request holds now (the engine is idle)
    cpu = torch.device("cpu")
    diffs, same = [], 0
    with torch.inference_mode():
        model(ForwardBatch.build([prompt], [0], [table], size, [True], ["t"], cpu), kv)
        seq = list(prompt)
        for token in tokens:
            batch = ForwardBatch.build([[seq[-1]]], [len(seq) - 1], [table], size, [True], ["t"], cpu)
            eager = model(batch, kv)
            ours = model(batch, kv, layers_step=native.step)
            diffs.append((eager - ours).abs().max().item())
            same += int(eager.argmax() == ours.argmax())
            seq.append(token)
    return diffs, same, tokens


def test_decode_step_logits_match_eager_on_the_embedded_model(embedded: LLM):
    diffs, same, tokens = _step_diffs(embedded, embedded.tokenizer.encode(PROMPTS[2]), 48)
    print(f"native vs eager over {len(tokens)} decode steps: max |logit diff| {max(diffs):.3f}, "
          f"{sum(d == 0 for d in diffs)} steps bit-identical, argmax equal in {same}")
    assert max(diffs) == 0.0
    assert same == len(tokens)


# Llama (untied), Llama 3 rope scaling (tied), Mistral (sliding window), Qwen2 (QKV bias, windows on some
# layers only); int4 and int8 linears.
@pytest.mark.parametrize("family", ["llama", "llama3-rope", "mistral", "qwen2"])
@pytest.mark.parametrize("isq", ["int4", "int8"])
def test_tiny_llama_style_models_decode_natively_as_eager(tmp_path, family, isq):
    llm = LLM(str(save_tiny_model(family, tmp_path)), isq=isq, **QUIET)
    assert llm.core.native is not None, unfit_reason(llm.loaded.module, torch.bfloat16)
    prompt = list(b"The quick brown fox jumps over the lazy dog")
    diffs, same, tokens = _step_diffs(llm, prompt, 24)  # 43 + 24 positions: past the 12-token windows
    assert max(diffs) <= 0.1 * max(1.0, llm.prompt_logits(prompt).abs().max().item()), diffs
    assert same >= len(tokens) - 1, (same, diffs)


@pytest.mark.parametrize("family, isq, dtype, reason", [
    ("qwen3", "int4", "auto", "q/k norms"),
    ("gemma3", "int4", "auto", "Gemma"),
    ("llama", "none", "bf16", "not a packed int4/int8 weight"),
    ("llama", "int4", "f32", "activations are not bf16"),
])
def test_models_it_does_not_fit_keep_the_other_paths(tmp_path, family, isq, dtype, reason):
    llm = LLM(str(save_tiny_model(family, tmp_path)), isq=isq, dtype=dtype, **QUIET)
    assert llm.core.native is None
    assert reason in unfit_reason(llm.loaded.module, torch.bfloat16)


def test_turned_off_by_the_config(tmp_path):
    llm = LLM(str(save_tiny_model("llama", tmp_path)), isq="int4", native_decode=False, compile=False, **QUIET)
    assert llm.core.native is None


def test_a_failing_native_step_falls_back_to_eager_without_failing_the_request(tmp_path):
    llm = LLM(str(save_tiny_model("llama", tmp_path)), isq="int4", **QUIET)
    native = llm.core.native
    expected = _greedy(llm, False, ["abc"], n=6)

    def broken(*args):
        raise RuntimeError("injected")

    native.step = broken
    assert _greedy(llm, True, ["abc"], n=6) == expected
    assert isinstance(native.failed, RuntimeError)


def test_the_op_refuses_bad_inputs_with_a_message(embedded: LLM):
    native: NativeDecode = embedded.core.native
    kv = embedded.core.runner.kv
    spec = native.spec
    x = torch.zeros(1, spec.hidden_size)  # f32, not bf16
    cos = sin = torch.zeros(1, spec.head_dim, dtype=torch.bfloat16)
    args = (native.norms, native.kinds, native.groups, native.weights, native.scales, native.biases,
            native.windows, cos, sin, kv.keys, kv.values, torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), spec.num_heads,
            spec.num_kv_heads, spec.head_dim, spec.rms_norm_eps, spec.scale)
    with pytest.raises(RuntimeError, match="bf16 \\[B, hidden\\] input expected"):
        cpu_decode_step.decode_layers(x, *args)
    short = (native.norms[:2], *args[1:])
    with pytest.raises(RuntimeError, match="mismatched lengths"):
        cpu_decode_step.decode_layers(x.bfloat16(), *short)
