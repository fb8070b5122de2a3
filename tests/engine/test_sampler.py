"""Tests for engine.sampler: each masking rule against a plain loop reference, then the draw."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from engine.sampler import (
    Sampler,
    SamplingState,
    apply_penalties,
    apply_truncation,
    compute_logprobs,
)
from engine.sampling_params import SamplingParams

VOCAB = 32
NEG_INF = float("-inf")


def random_logits(batch: int, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch, vocab) * 3


def state(
    prompt: list[int] | None = None,
    output: list[int] | None = None,
    eos: tuple[int, ...] = (),
    **params: object,
) -> SamplingState:
    return SamplingState(
        params=SamplingParams(**params),
        prompt_token_ids=list(prompt or []),
        eos_token_ids=eos,
        output_token_ids=list(output or []),
    )


# Plain references: one row at a time, Python loops over numpy float64 arrays.


def ref_logit_bias(row: np.ndarray, bias: dict[int, float]) -> np.ndarray:
    row = row.copy()
    for token, value in bias.items():
        if token < len(row):
            row[token] += value
    return row


def ref_repetition(row: np.ndarray, tokens: list[int], penalty: float) -> np.ndarray:
    row = row.copy()
    for token in set(tokens):
        row[token] = row[token] / penalty if row[token] > 0 else row[token] * penalty
    return row


def ref_presence_frequency(
    row: np.ndarray, output: list[int], presence: float, frequency: float
) -> np.ndarray:
    row = row.copy()
    for token, count in Counter(output).items():
        row[token] -= frequency * count + presence
    return row


def ref_min_tokens(row: np.ndarray, n_out: int, min_tokens: int, banned: list[int]) -> np.ndarray:
    row = row.copy()
    if n_out < min_tokens:
        for token in banned:
            if token < len(row):
                row[token] = -np.inf
    return row


def ref_softmax(row: np.ndarray) -> np.ndarray:
    e = np.exp(row - row.max())
    return e / e.sum()


def ref_top_k(row: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return row.copy()
    kth = sorted(row.tolist(), reverse=True)[min(k, len(row)) - 1]
    return np.array([v if v >= kth else -np.inf for v in row])


def ref_top_p(row: np.ndarray, p: float) -> np.ndarray:
    probs = ref_softmax(row)
    out = row.copy()
    order = sorted(range(len(row)), key=lambda t: probs[t])
    cumulative = 0.0
    for position, token in enumerate(order):
        cumulative += probs[token]
        if cumulative <= 1 - p and position < len(order) - 1:
            out[token] = -np.inf
    return out


def ref_min_p(row: np.ndarray, min_p: float) -> np.ndarray:
    probs = ref_softmax(row)
    return np.array([v if probs[t] >= min_p * probs.max() else -np.inf for t, v in enumerate(row)])


def assert_matches(actual: torch.Tensor, expected: np.ndarray) -> None:
    actual_np = actual.double().numpy()
    np.testing.assert_array_equal(np.isneginf(actual_np), np.isneginf(expected))
    finite = ~np.isneginf(expected)
    np.testing.assert_allclose(actual_np[finite], expected[finite], rtol=1e-5, atol=1e-5)


def rows_of(logits: torch.Tensor) -> list[np.ndarray]:
    return [r for r in logits.double().numpy()]


# apply_penalties


def test_logit_bias_adds_to_named_tokens_and_ignores_ids_outside_vocab() -> None:
    logits = random_logits(3)
    biases = [{0: 5.0, 7: -100.0, VOCAB + 3: 9.0}, {}, {31: 2.5}]
    states = [state(logit_bias=b) for b in biases]
    out = apply_penalties(logits, states)
    for i, (row, bias) in enumerate(zip(rows_of(logits), biases, strict=True)):
        assert_matches(out[i], ref_logit_bias(row, bias))


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = random_logits(2)
    prompt, output = [1, 2, 3, 3, 9, 14], [20, 2, 25]
    states = [state(prompt, output, repetition_penalty=1.7), state(prompt, output)]
    seen = set(prompt + output)
    signs = {bool(logits[0, t] > 0) for t in seen}
    assert signs == {True, False}, "fixture should penalise logits of both signs"
    out = apply_penalties(logits, states)
    rows = rows_of(logits)
    assert_matches(out[0], ref_repetition(rows[0], prompt + output, 1.7))
    assert_matches(out[1], rows[1])


def test_presence_penalty_counts_output_tokens_only() -> None:
    logits = random_logits(1)
    prompt, output = [4, 5, 6], [6, 8, 8, 8]
    out = apply_penalties(logits, [state(prompt, output, presence_penalty=1.5)])
    expected = ref_presence_frequency(rows_of(logits)[0], output, presence=1.5, frequency=0.0)
    assert_matches(out[0], expected)
    assert out[0, 4] == logits[0, 4]


def test_frequency_penalty_scales_with_output_count() -> None:
    logits = random_logits(2)
    outputs = [[6, 8, 8, 8, 30], [1, 1]]
    states = [
        state([2, 8], outputs[0], frequency_penalty=0.75),
        state([], outputs[1], frequency_penalty=-0.5, presence_penalty=0.25),
    ]
    out = apply_penalties(logits, states)
    rows = rows_of(logits)
    assert_matches(out[0], ref_presence_frequency(rows[0], outputs[0], presence=0.0, frequency=0.75))
    assert_matches(out[1], ref_presence_frequency(rows[1], outputs[1], presence=0.25, frequency=-0.5))


def test_min_tokens_suppresses_eos_and_stop_ids_until_reached() -> None:
    logits = random_logits(3)
    before = state([1], [5, 6], eos=(2,), min_tokens=3, stop_token_ids=(9, VOCAB + 1))
    reached = state([1], [5, 6, 7], eos=(2,), min_tokens=3, stop_token_ids=(9,))
    no_minimum = state([1], [], eos=(2,))
    out = apply_penalties(logits, [before, reached, no_minimum])
    rows = rows_of(logits)
    assert_matches(out[0], ref_min_tokens(rows[0], 2, 3, [2, 9, VOCAB + 1]))
    assert_matches(out[1], rows[1])
    assert_matches(out[2], rows[2])
    assert out[0, 2] == NEG_INF and out[0, 9] == NEG_INF


def test_penalties_compose_in_documented_order() -> None:
    logits = random_logits(2).to(torch.bfloat16)
    prompt, output = [3, 4, 4, 10], [10, 11, 11, 12]
    params = dict(
        logit_bias={3: 4.0, 11: -2.0},
        repetition_penalty=1.3,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        min_tokens=6,
        stop_token_ids=(13,),
    )
    states = [state(prompt, output, eos=(0,), **params), state(prompt, output)]
    out = apply_penalties(logits, states)
    assert out.dtype == torch.float32
    rows = rows_of(logits.float())
    expected = ref_logit_bias(rows[0], params["logit_bias"])
    expected = ref_repetition(expected, prompt + output, 1.3)
    expected = ref_presence_frequency(expected, output, presence=0.5, frequency=0.25)
    expected = ref_min_tokens(expected, len(output), 6, [0, 13])
    assert_matches(out[0], expected)
    assert_matches(out[1], rows[1])


# apply_truncation


def test_temperature_divides_logits() -> None:
    logits = random_logits(2)
    out = apply_truncation(logits, [state(temperature=0.5), state(temperature=2.0)])
    rows = rows_of(logits)
    assert_matches(out[0], rows[0] / 0.5)
    assert_matches(out[1], rows[1] / 2.0)


def test_greedy_rows_are_returned_unchanged() -> None:
    logits = random_logits(2)
    out = apply_truncation(
        logits, [state(temperature=0.0, top_k=2, top_p=0.1), state(temperature=0.5, top_k=2)]
    )
    assert torch.equal(out[0], logits[0])
    assert (out[1] == NEG_INF).sum() == VOCAB - 2


@pytest.mark.parametrize("ks", [[1, 5, 0, VOCAB + 10], [3, 3, 3, 3]])
def test_top_k_keeps_the_k_largest(ks: list[int]) -> None:
    logits = random_logits(len(ks), seed=1)
    out = apply_truncation(logits, [state(top_k=k) for k in ks])
    for i, (row, k) in enumerate(zip(rows_of(logits), ks, strict=True)):
        assert_matches(out[i], ref_top_k(row, k))


def test_top_p_drops_the_low_probability_tail() -> None:
    top_ps = [0.05, 0.3, 0.6, 0.9, 0.99, 1.0]
    logits = random_logits(len(top_ps), seed=2)
    out = apply_truncation(logits, [state(top_p=p) for p in top_ps])
    kept = [int((out[i] > NEG_INF).sum()) for i in range(len(top_ps))]
    assert kept[0] == 1 and kept[-1] == VOCAB and len(set(kept)) > 3
    for i, (row, p) in enumerate(zip(rows_of(logits), top_ps, strict=True)):
        assert_matches(out[i], ref_top_p(row, p))


def test_min_p_keeps_tokens_above_a_fraction_of_the_most_likely() -> None:
    min_ps = [0.0, 0.01, 0.1, 0.5, 1.0]
    logits = random_logits(len(min_ps), seed=3)
    out = apply_truncation(logits, [state(min_p=m, temperature=1.5) for m in min_ps])
    for i, (row, m) in enumerate(zip(rows_of(logits), min_ps, strict=True)):
        assert_matches(out[i], ref_min_p(row / 1.5, m))
    assert int((out[-1] > NEG_INF).sum()) == 1


def test_truncation_applies_temperature_then_top_k_then_top_p_then_min_p() -> None:
    logits = random_logits(1, seed=4)
    out = apply_truncation(logits, [state(temperature=0.8, top_k=10, top_p=0.8, min_p=0.05)])
    expected = ref_min_p(ref_top_p(ref_top_k(rows_of(logits)[0] / 0.8, 10), 0.8), 0.05)
    assert_matches(out[0], expected)


# Sampler: the draw


def run_steps(
    sampler: Sampler, logits: torch.Tensor, states: list[SamplingState], steps: int
) -> list[list[int]]:
    """Sample `steps` tokens per row, appending each to its state as the engine would."""
    for _ in range(steps):
        result = sampler(logits, states)
        for s, token in zip(states, result.token_ids, strict=True):
            s.output_token_ids.append(token)
    return [list(s.output_token_ids) for s in states]


def test_seeded_sampling_is_reproducible_and_ignores_the_global_rng() -> None:
    logits = torch.zeros(1, 1000)
    torch.manual_seed(1)
    first = run_steps(Sampler(), logits, [state(seed=42, frequency_penalty=0.1)], 20)
    torch.manual_seed(2)
    second = run_steps(Sampler(), logits, [state(seed=42, frequency_penalty=0.1)], 20)
    other = run_steps(Sampler(), logits, [state(seed=43, frequency_penalty=0.1)], 20)
    assert first == second
    assert first != other
    assert len(set(first[0])) > 10


def test_seeded_row_does_not_depend_on_the_rest_of_the_batch() -> None:
    logits = random_logits(4, vocab=200, seed=5) / 3
    alone = run_steps(Sampler(), logits[2:3], [state(seed=7, top_p=0.9)], 10)[0]
    batch = [state(), state(seed=8), state(seed=7, top_p=0.9), state(temperature=0.0)]
    in_batch = run_steps(Sampler(), logits, batch, 10)[2]
    assert alone == in_batch


def test_top_k_one_equals_greedy() -> None:
    logits = random_logits(50, vocab=100, seed=6)
    result = Sampler()(logits, [state(top_k=1, temperature=1.0) for _ in range(50)])
    assert result.token_ids == logits.argmax(dim=-1).tolist()


def test_mixed_batch_is_sampled_in_one_call() -> None:
    logits = random_logits(4, seed=7)
    greedy = state(temperature=0.0)
    nucleus = state(top_p=0.5)
    seeded = state(seed=11, temperature=0.7)
    penalised = state([int(logits[3].argmax())], temperature=0.0, repetition_penalty=50.0, logprobs=2)
    result = Sampler()(logits, [greedy, nucleus, seeded, penalised])

    assert len(result.token_ids) == 4
    assert result.token_ids[0] == int(logits[0].argmax())
    allowed = np.flatnonzero(~np.isneginf(ref_top_p(rows_of(logits)[1], 0.5)))
    assert result.token_ids[1] in allowed.tolist()
    assert result.token_ids[2] == Sampler()(logits[2:3], [state(seed=11, temperature=0.7)]).token_ids[0]
    expected = ref_repetition(rows_of(logits)[3], penalised.prompt_token_ids, 50.0)
    assert result.token_ids[3] == int(np.argmax(expected)) != int(logits[3].argmax())
    assert result.logprobs[:3] == [None, None, None] and result.logprobs[3] is not None


def test_logprobs_describe_the_penalised_distribution_before_truncation() -> None:
    logits = random_logits(3, seed=8)
    states = [state(logprobs=5, temperature=0.5, top_k=3, logit_bias={0: 3.0}), state(logprobs=0), state()]
    result = Sampler()(logits, states)
    expected = torch.log_softmax(apply_penalties(logits, states), dim=-1)

    first = result.logprobs[0]
    assert first is not None and first.token_id == result.token_ids[0]
    assert math.isclose(first.logprob, float(expected[0, first.token_id]), abs_tol=1e-5)
    assert len(first.top) == 5
    top_values = [lp for _, lp in first.top]
    assert top_values == sorted(top_values, reverse=True)
    reference_top = sorted(range(VOCAB), key=lambda t: -float(expected[0, t]))[:5]
    assert [t for t, _ in first.top] == reference_top
    for token, lp in first.top:
        assert math.isclose(lp, float(expected[0, token]), abs_tol=1e-5)

    second = result.logprobs[1]
    assert second is not None and second.top == ()
    assert math.isclose(second.logprob, float(expected[1, result.token_ids[1]]), abs_tol=1e-5)
    assert result.logprobs[2] is None


def test_compute_logprobs_reads_the_given_logits() -> None:
    logits = torch.tensor([[0.0, math.log(3.0), NEG_INF, 0.0]])
    (lp,) = compute_logprobs(logits, [state(logprobs=2)], [1])
    assert lp is not None
    assert math.isclose(lp.logprob, math.log(0.6), abs_tol=1e-6)
    assert lp.top[0] == (1, pytest.approx(math.log(0.6), abs=1e-6))
    assert lp.top[1][1] == pytest.approx(math.log(0.2), abs=1e-6)


def test_temperature_sampling_matches_softmax_probabilities() -> None:
    rows = 20_000
    base = torch.tensor([1.0, 0.2, -0.5, 0.9])
    torch.manual_seed(9)
    result = Sampler()(base.expand(rows, 4), [state(temperature=0.7) for _ in range(rows)])
    frequencies = np.bincount(result.token_ids, minlength=4) / rows
    expected = ref_softmax(base.double().numpy() / 0.7)
    # Each frequency's standard deviation is at most sqrt(0.25 / 20000) ~ 0.0035.
    np.testing.assert_allclose(frequencies, expected, atol=0.015)


def test_masked_tokens_are_never_drawn() -> None:
    rows = 2_000
    logits = random_logits(1, seed=10).expand(rows, VOCAB)
    torch.manual_seed(10)
    result = Sampler()(logits, [state(top_k=3, temperature=5.0) for _ in range(rows)])
    allowed = set(torch.topk(logits[0], 3).indices.tolist())
    assert set(result.token_ids) == allowed


def test_sampler_rejects_logits_that_do_not_match_the_states() -> None:
    with pytest.raises(ValueError, match="do not match 2 sampling states"):
        Sampler()(random_logits(3), [state(), state()])
