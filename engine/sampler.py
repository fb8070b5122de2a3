"""Sampler: picks one token per row of a logits batch, each row under its own SamplingParams.

One call handles the whole batch: per-row parameters become [B] tensors and every mask is a
batched tensor op. Order of operations, per row:

1. ``apply_penalties``: logit_bias, repetition penalty, presence/frequency penalty, min_tokens.
2. ``apply_guidance``: rows under a grammar (engine/guided.py) keep only the tokens it allows.
3. ``compute_logprobs`` reads these logits (before temperature and truncation).
4. Greedy rows (temperature 0) take the argmax of the penalised logits.
5. Other rows go through ``apply_truncation`` (temperature, top_k, top_p, min_p) and are drawn
   from the softmax; rows with a seed draw from their own CPU generator, so a seeded row gives
   the same tokens whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import llguidance
import torch

from engine.guided import TokenMatcher
from engine.sampling_params import SamplingParams


@dataclass
class SamplingState:
    """Per-request sampling state the engine keeps for a running sequence.

    eos_token_ids are suppressed, like params.stop_token_ids, while fewer than params.min_tokens
    tokens have been generated. ignore_eos is the caller's business (it decides whether an EOS
    ends the sequence); the sampler never looks at it.
    """

    params: SamplingParams
    prompt_token_ids: list[int]
    eos_token_ids: tuple[int, ...] = ()
    output_token_ids: list[int] = field(default_factory=list)
    matcher: TokenMatcher | None = None
    generator: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of a sampled token and of the params.logprobs most likely tokens."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class SamplerOutput:
    """The tokens one Sampler call picked, one per row, with their logprobs when asked for."""

    token_ids: list[int]
    logprobs: list[TokenLogprob | None]


class Sampler:
    """Samples the next token for every row of a batch in one call."""

    def __init__(self) -> None:
        self._executor: llguidance.LLExecutor | None = None  # llguidance's thread pool, made on first use

    def __call__(self, logits: torch.Tensor, states: Sequence[SamplingState]) -> SamplerOutput:
        if logits.dim() != 2 or logits.shape[0] != len(states):
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} do not match {len(states)} sampling states: "
                "expected [len(states), vocab_size]"
            )
        penalised = apply_penalties(logits, states)
        if any(s.matcher is not None for s in states):
            if self._executor is None:
                self._executor = llguidance.LLExecutor()
            penalised = apply_guidance(penalised, states, self._executor)
        token_ids = penalised.argmax(dim=-1)
        rows = [i for i, s in enumerate(states) if not s.params.greedy]
        if rows:
            truncated = apply_truncation(penalised, states)
            probs = truncated[rows].softmax(dim=-1)
            generators = [states[i].generator for i in rows]
            token_ids[rows] = draw_tokens(probs, generators)
        ids = token_ids.tolist()
        return SamplerOutput(token_ids=ids, logprobs=compute_logprobs(penalised, states, ids))


def apply_penalties(logits: torch.Tensor, states: Sequence[SamplingState]) -> torch.Tensor:
    """Return float32 logits with logit_bias, repetition, presence/frequency and min_tokens applied.

    repetition_penalty follows transformers (over prompt + output: a positive logit is divided
    by the penalty, a non-positive one multiplied); presence/frequency follow OpenAI (over output
    only: logit -= frequency * count + presence * (count > 0)). While fewer than min_tokens tokens
    are out, EOS and stop token ids are set to -inf. Token ids >= vocab size are ignored.
    """
    out = logits.to(torch.float32, copy=True)
    vocab = out.shape[1]
    _apply_logit_bias(out, states)

    rep_rows = [i for i, s in enumerate(states) if s.params.repetition_penalty != 1.0]
    if rep_rows:
        history = [states[i].prompt_token_ids + states[i].output_token_ids for i in rep_rows]
        seen = _token_counts(history, vocab, out.device) > 0
        penalty = _row_values(rep_rows, states, "repetition_penalty", out.device)[:, None]
        sub = out[rep_rows]
        penalised = torch.where(sub > 0, sub / penalty, sub * penalty)
        out[rep_rows] = torch.where(seen, penalised, sub)

    freq_rows = [
        i
        for i, s in enumerate(states)
        if s.params.presence_penalty != 0.0 or s.params.frequency_penalty != 0.0
    ]
    if freq_rows:
        counts = _token_counts([states[i].output_token_ids for i in freq_rows], vocab, out.device)
        frequency = _row_values(freq_rows, states, "frequency_penalty", out.device)[:, None]
        presence = _row_values(freq_rows, states, "presence_penalty", out.device)[:, None]
        out[freq_rows] -= frequency * counts + presence * (counts > 0).to(torch.float32)

    _suppress_stop_tokens_before_min_tokens(out, states)
    return out


def apply_guidance(
    logits: torch.Tensor, states: Sequence[SamplingState], executor: llguidance.LLExecutor | None = None
) -> torch.Tensor:
    """Set to -inf every token a row's grammar does not allow next (rows without one are untouched).

    The masks of all constrained rows are computed in one parallel llguidance call. Where the
    grammar allows its end-of-sequence token, every EOS id of the model is allowed. The grammar
    wins over penalties: when min_tokens (or a logit bias of -inf) has removed every token the
    grammar allows, the row falls back to the grammar's tokens with their unpenalised scores.
    """
    rows = [i for i, s in enumerate(states) if s.matcher is not None]
    if not rows:
        return logits
    vocab = logits.shape[1]
    import llguidance.torch  # imports torch._dynamo (~130 MB resident): only once a grammar is used

    bitmask = llguidance.torch.allocate_token_bitmask(len(rows), vocab)
    matchers = [(states[i].matcher.llg, j) for j, i in enumerate(rows)]
    if executor is not None and len(rows) > 1:
        llguidance.torch.fill_next_token_bitmask_par(executor, matchers, bitmask)
    else:
        for matcher, j in matchers:
            llguidance.torch.fill_next_token_bitmask(matcher, bitmask, j)
    allowed = unpack_bitmask(bitmask, vocab)
    for j, i in enumerate(rows):
        eos = [t for t in states[i].matcher.eos_token_ids if t < vocab]
        if eos and bool(allowed[j, eos[0]]):
            allowed[j, eos] = True
    allowed = allowed.to(logits.device)
    sub = logits[rows]
    masked = sub.masked_fill(~allowed, float("-inf"))
    empty = torch.isneginf(masked).all(dim=-1)
    if bool(empty.any()):
        masked[empty] = torch.where(allowed[empty], torch.nan_to_num(sub[empty], neginf=0.0), float("-inf"))
    out = logits.clone()
    out[rows] = masked
    return out


def unpack_bitmask(bitmask: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, ceil(V/32)] int32 bitmask (bit b of word w = token 32w+b) -> [R, V] bool."""
    shifts = torch.arange(32, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab].bool()


def apply_truncation(logits: torch.Tensor, states: Sequence[SamplingState]) -> torch.Tensor:
    """Return logits divided by temperature and masked (-inf) by top_k, top_p and min_p.

    Semantics follow the transformers warpers, applied in this order: top_k keeps the k largest
    (ties with the k-th are kept; 0 = off); top_p sorts ascending and drops tokens whose
    cumulative probability is <= 1 - top_p, always keeping the most likely; min_p drops tokens
    whose probability is below min_p times the largest. Greedy rows come back unchanged.
    """
    out = logits.to(torch.float32, copy=True)
    rows = [i for i, s in enumerate(states) if not s.params.greedy]
    if not rows:
        return out
    device = out.device
    x = out[rows] / _row_values(rows, states, "temperature", device)[:, None]

    top_k = torch.tensor([states[i].params.top_k for i in rows], device=device)
    if bool((top_k > 0).any()):
        x = _mask_top_k(x, top_k)
    top_p = _row_values(rows, states, "top_p", device)
    if bool((top_p < 1).any()):
        x = _mask_top_p(x, top_p)
    min_p = _row_values(rows, states, "min_p", device)
    if bool((min_p > 0).any()):
        probs = x.softmax(dim=-1)
        threshold = min_p[:, None] * probs.amax(dim=-1, keepdim=True)
        x = x.masked_fill(probs < threshold, float("-inf"))

    out[rows] = x
    return out


def compute_logprobs(
    logits: torch.Tensor, states: Sequence[SamplingState], token_ids: Sequence[int]
) -> list[TokenLogprob | None]:
    """Logprobs of the sampled tokens and each row's params.logprobs most likely tokens.

    ``logits`` must be the output of apply_penalties: logprobs are the log_softmax of the
    logits AFTER penalties and BEFORE temperature and truncation, so they describe the model's
    (penalised) distribution rather than the truncated one the token was drawn from. Rows whose
    params.logprobs is None get None.
    """
    result: list[TokenLogprob | None] = [None] * len(states)
    rows = [i for i, s in enumerate(states) if s.params.logprobs is not None]
    if not rows:
        return result
    logprobs = torch.log_softmax(logits[rows].to(torch.float32), dim=-1)
    chosen_ids = torch.tensor([token_ids[i] for i in rows], device=logprobs.device)
    chosen = logprobs.gather(1, chosen_ids[:, None]).squeeze(1).tolist()
    max_top = max(states[i].params.logprobs or 0 for i in rows)
    top_values, top_ids = logprobs.topk(min(max_top, logprobs.shape[1]), dim=-1)
    top_values_list, top_ids_list = top_values.tolist(), top_ids.tolist()
    for j, i in enumerate(rows):
        n = states[i].params.logprobs or 0
        # Among equal logprobs (ties are common with bf16 logits) the sampled token comes first, so a
        # greedy token is always the first of its top list.
        pairs = sorted(zip(top_ids_list[j], top_values_list[j], strict=True),
                       key=lambda pair: (-pair[1], pair[0] != token_ids[i]))
        result[i] = TokenLogprob(token_id=token_ids[i], logprob=chosen[j], top=tuple(pairs[:n]))
    return result


def draw_tokens(probs: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """Draw one token per row of ``probs`` [R, V]; row j uses generators[j] when it is not None.

    argmax(p / q) with q ~ Exp(1) is a draw from p (the exponential race), and lets seeded and
    unseeded rows share one argmax. Seeded rows draw their noise on the CPU from their own
    generator so the result does not depend on the device or on the rest of the batch.
    """
    noise = torch.empty_like(probs)
    unseeded = [j for j, g in enumerate(generators) if g is None]
    if len(unseeded) == len(generators):
        noise.exponential_()
    else:
        if unseeded:
            noise[unseeded] = torch.empty(len(unseeded), probs.shape[1], device=probs.device).exponential_()
        for j, g in enumerate(generators):
            if g is not None:
                noise[j] = torch.empty(probs.shape[1]).exponential_(generator=g).to(probs.device)
    # A zero from exponential_ would make 0/0 = nan for a masked token, and argmax prefers nan.
    noise.clamp_(min=torch.finfo(torch.float32).tiny)
    return (probs / noise).argmax(dim=-1)


def _apply_logit_bias(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    vocab = logits.shape[1]
    rows, cols, values = [], [], []
    for i, s in enumerate(states):
        for token, bias in s.params.logit_bias.items():
            if token < vocab:
                rows.append(i)
                cols.append(token)
                values.append(bias)
    if rows:
        device = logits.device
        index = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        logits.index_put_(index, torch.tensor(values, device=device), accumulate=True)


def _suppress_stop_tokens_before_min_tokens(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    vocab = logits.shape[1]
    rows, cols = [], []
    for i, s in enumerate(states):
        if len(s.output_token_ids) < s.params.min_tokens:
            for token in (*s.eos_token_ids, *s.params.stop_token_ids):
                if token < vocab:
                    rows.append(i)
                    cols.append(token)
    if rows:
        device = logits.device
        index = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        logits.index_put_(index, torch.tensor(float("-inf"), device=device))


def _token_counts(token_lists: Sequence[Sequence[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[len(token_lists), vocab] float32 counts of each token id per list."""
    width = max((len(t) for t in token_lists), default=0)
    # Pad with `vocab`, an extra column dropped afterwards; out-of-range ids land there too.
    padded = torch.full((len(token_lists), width), vocab, dtype=torch.long)
    for j, tokens in enumerate(token_lists):
        if tokens:
            padded[j, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    padded = padded.clamp_(max=vocab).to(device)
    counts = torch.zeros(len(token_lists), vocab + 1, device=device)
    counts.scatter_add_(1, padded, torch.ones_like(padded, dtype=torch.float32))
    return counts[:, :vocab]


def _mask_top_k(x: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    active = top_k > 0
    # Rows with top_k off get k=1 so one topk over the largest k serves the batch; unmasked below.
    k = torch.where(active, top_k, 1).clamp(max=x.shape[1])
    largest = x.topk(int(k.max()), dim=-1).values
    kth = largest.gather(1, (k - 1)[:, None])
    return x.masked_fill((x < kth) & active[:, None], float("-inf"))


def _mask_top_p(x: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    sorted_x, order = x.sort(dim=-1, descending=False)
    cumulative = sorted_x.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)[:, None]
    drop_sorted[:, -1] = False
    drop_sorted &= (top_p < 1)[:, None]
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return x.masked_fill(drop, float("-inf"))


def _row_values(
    rows: Sequence[int], states: Sequence[SamplingState], name: str, device: torch.device
) -> torch.Tensor:
    return torch.tensor([float(getattr(states[i].params, name)) for i in rows], device=device)
