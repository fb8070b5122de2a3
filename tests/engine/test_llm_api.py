"""The public Python API on the embedded model: generate, chat, stream, seeds, stops, logprobs."""

from __future__ import annotations

import pytest

from engine import LLM, RequestOutput, SamplingParams, StreamChunk

GREEDY = SamplingParams(temperature=0, max_tokens=24)


def test_generate_returns_one_output_per_prompt_in_order(smollm: LLM):
    single = smollm.generate("The capital of France is", GREEDY)
    assert len(single) == 1 and isinstance(single[0], RequestOutput)
    assert "Paris" in single[0].text
    outs = smollm.generate(["The capital of France is", "One, two, three,"], GREEDY)
    assert [o.text for o in outs][0] == single[0].text
    assert outs[1].text != outs[0].text and outs[1].token_ids
    assert outs[0].prompt_token_ids == smollm.tokenizer.encode("The capital of France is")


def test_chat_uses_the_template_and_stops_at_eos(smollm: LLM):
    out = smollm.chat([{"role": "user", "content": "What is the capital of France?"}],
                      SamplingParams(temperature=0, max_tokens=64))[0]
    assert "Paris" in out.text
    assert out.finish_reason == "stop" and out.stop_reason is None
    assert out.token_ids[-1] in smollm.tokenizer.eos_token_ids
    assert "<|im_end|>" not in out.text


def test_chat_template_receives_tools_and_extra_arguments(smollm: LLM, tmp_path):
    template = tmp_path / "tpl.jinja"
    template.write_text(
        "{% for t in tools or [] %}TOOL {{ t['function']['name'] }}\n{% endfor %}"
        "thinking={{ enable_thinking }}\n{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    )
    from engine.tokenizer import Tokenizer

    tok = Tokenizer(smollm.tokenizer.hf, list(smollm.tokenizer.eos_token_ids), str(template))
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    text = tok.render_chat([{"role": "user", "content": "hi"}], tools=tools, enable_thinking=False)
    assert text == "TOOL get_time\nthinking=False\nhi\n"


def test_streaming_equals_generate(smollm: LLM):
    params = SamplingParams(temperature=0.8, seed=7, max_tokens=40)
    chunks = list(smollm.stream("Once upon a time", params))
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert [c.finished for c in chunks] == [False] * (len(chunks) - 1) + [True]
    full = smollm.generate("Once upon a time", params)[0]
    assert "".join(c.text for c in chunks) == full.text
    assert [t for c in chunks for t in c.token_ids] == full.token_ids


@pytest.mark.parametrize("prompt", ["東京は日本の首都です。京都は", "Emoji story: 🐉🔥🏰 then 🧙‍♂️✨", "中文：我爱北京天安门，"])
def test_streamed_multibyte_text_is_byte_identical(smollm: LLM, prompt: str):
    params = SamplingParams(temperature=0.9, seed=1, max_tokens=40)
    full = smollm.generate(prompt, params)[0]
    assert sum(ord(c) > 127 for c in full.text) >= 3, "the sample should contain multi-byte characters"
    deltas = [c.text for c in smollm.stream(prompt, params)]
    assert "".join(deltas).encode() == full.text.encode()
    assert full.text == smollm.tokenizer.decode(full.token_ids)
    # No delta may end inside a character: each one is valid text on its own.
    assert all("\ufffd" not in d for d in deltas if "\ufffd" not in full.text)


def test_seeded_sampling_is_reproducible(smollm: LLM):
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=32)
    first = smollm.generate("Write a sentence about cats.", params)[0].token_ids
    assert smollm.generate("Write a sentence about cats.", params)[0].token_ids == first
    # Same seed inside a batch with other requests gives the same tokens.
    other = SamplingParams(temperature=1.0, max_tokens=20)
    batch = smollm.generate(["Hello there", "Write a sentence about cats.", "Dogs are"], [other, params, other])
    assert batch[1].token_ids == first
    different = SamplingParams(temperature=1.0, top_p=0.95, seed=4321, max_tokens=32)
    assert smollm.generate("Write a sentence about cats.", different)[0].token_ids != first


def test_top_k_one_equals_greedy(smollm: LLM):
    greedy = smollm.generate("The best thing about Paris is", GREEDY)[0].token_ids
    topk1 = SamplingParams(temperature=1.3, top_k=1, max_tokens=24)
    assert smollm.generate("The best thing about Paris is", topk1)[0].token_ids == greedy


def test_stop_string_spanning_two_tokens_is_cut_exactly(smollm: LLM):
    prompt = "The capital of France is"
    free = smollm.generate(prompt, GREEDY)[0]
    tok = smollm.tokenizer
    # Choose a stop string made of the end of token 3 and the start of token 4 of the free output.
    head = tok.decode(free.token_ids[:4])
    nxt = tok.decode(free.token_ids[:5])[len(head):]
    assert len(head) >= 2 and len(nxt) >= 2
    stop = head[-2:] + nxt[:2]
    cut = (head + nxt).index(stop)
    assert cut == len(head) - 2, "the stop string must not occur earlier"
    chunks = list(smollm.stream(prompt, SamplingParams(temperature=0, max_tokens=24, stop=[stop])))
    streamed = "".join(c.text for c in chunks)
    assert streamed == head[:-2]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].stop_reason == stop
    out = smollm.generate(prompt, SamplingParams(temperature=0, max_tokens=24, stop=[stop]))[0]
    assert out.text == head[:-2] and out.stop_reason == stop


def test_stop_token_ids_and_length(smollm: LLM):
    free = smollm.generate("Count: 1, 2, 3,", GREEDY)[0]
    stop_id = free.token_ids[3]
    out = smollm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=24,
                                                            stop_token_ids=[stop_id]))[0]
    assert out.token_ids == free.token_ids[: free.token_ids.index(stop_id) + 1]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop_id)
    short = smollm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=5))[0]
    assert short.token_ids == free.token_ids[:5] and short.finish_reason == "length"


def test_logprobs_are_returned_per_token(smollm: LLM):
    out = smollm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=6, logprobs=3))[0]
    assert len(out.logprobs) == 6
    for token, lp in zip(out.token_ids, out.logprobs, strict=True):
        assert lp.token_id == token and len(lp.top) == 3
        assert lp.top[0][0] == token  # greedy: the chosen token is the most likely
        assert lp.logprob <= 0 and lp.logprob == pytest.approx(lp.top[0][1])
