"""Bad input is refused with an error that names the problem."""

from __future__ import annotations

import shutil

import pytest
from tiny_models import save_tiny_model

from engine import (
    LLM,
    ContextLengthError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    SamplingParams,
    SamplingParamsError,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny"))


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        LLM(str(missing))


def test_directory_without_weights_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        LLM(str(tmp_path))


def test_uncached_hub_id_offline_says_so():
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        LLM("nobody-here/not-a-real-model-7")


def test_truncated_gguf_is_rejected(smollm_gguf_path, tmp_path):
    broken = tmp_path / "broken.gguf"
    with open(smollm_gguf_path, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(smollm_gguf_path.stat().st_size // 2))
    with pytest.raises(ModelLoadError, match=r"truncated.*broken\.gguf|broken\.gguf.*truncated"):
        LLM(str(broken))


def test_garbage_gguf_is_rejected(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file at all" * 100)
    with pytest.raises(ModelLoadError, match="garbage.gguf"):
        LLM(str(garbage))


def test_truncated_safetensors_is_rejected(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        LLM(str(broken))


def test_corrupt_safetensors_header_is_rejected(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelLoadError, match="corrupt or truncated safetensors"):
        LLM(str(broken))


def test_missing_tensor_is_named(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing tensors: model\.layers\.1\.mlp\.down_proj\.weight"):
        LLM(str(broken))


def test_prompt_longer_than_context_is_refused(tiny_dir):
    llm = LLM(str(tiny_dir))
    with pytest.raises(ContextLengthError, match="600 tokens.*512"):
        llm.generate([5] * 600, SamplingParams(max_tokens=1))
    with pytest.raises(ContextLengthError, match="max_tokens is 100"):
        llm.generate([5] * 450, SamplingParams(max_tokens=100))
    # max_tokens=None fills the rest of the window and stops with "length".
    out = llm.generate([5] * 500, SamplingParams(temperature=0, max_tokens=None, ignore_eos=True))[0]
    assert (len(out.token_ids), out.finish_reason) == (12, "length")


def test_bad_prompts_are_refused(tiny_dir):
    llm = LLM(str(tiny_dir))
    with pytest.raises(InvalidRequestError, match="empty"):
        llm.generate("", SamplingParams())
    with pytest.raises(InvalidRequestError, match=r"token ids must be in \[0, 384\)"):
        llm.generate([1, 999], SamplingParams())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.5}, "temperature=-0.5"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_k": -3}, "top_k=-3"),
        ({"min_p": 2.0}, "min_p=2.0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty=0.0"),
        ({"presence_penalty": 3.0}, "presence_penalty=3.0"),
        ({"frequency_penalty": -2.5}, "frequency_penalty=-2.5"),
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"logprobs": 50}, "logprobs=50"),
        ({"logit_bias": {5: 500.0}}, r"logit_bias\[5\]=500.0"),
        ({"stop": ["ok", ""]}, "stop="),
        ({"temperature": float("nan")}, "temperature=nan"),
    ],
)
def test_invalid_sampling_values_are_named(kwargs, message):
    with pytest.raises(SamplingParamsError, match=message):
        SamplingParams(**kwargs)
