"""ForwardBatch: what one model forward computes, passed explicitly to every layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ForwardBatch:
    """A flattened batch of token chunks, one chunk per sequence.

    Sequence i contributes `query_lens[i]` new tokens that sit at positions
    `context_lens[i] .. context_lens[i] + query_lens[i] - 1` of its KV slot `slots[i]`.
    A decode step is the case where every query length is 1.
    """

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    slots: list[int]
    query_lens: list[int]
    context_lens: list[int]  # tokens already in the cache before this forward
    slot_index: torch.Tensor  # [T] int64: the KV slot of each token
    logits_index: torch.Tensor  # [num_seqs] int64: last token of each sequence in the flat batch

    @property
    def num_seqs(self) -> int:
        return len(self.slots)

    @property
    def is_decode(self) -> bool:
        return all(n == 1 for n in self.query_lens)

    @classmethod
    def build(
        cls,
        token_chunks: list[list[int]],
        slots: list[int],
        context_lens: list[int],
        device: torch.device,
    ) -> ForwardBatch:
        """Flatten per-sequence token chunks into one batch."""
        query_lens = [len(c) for c in token_chunks]
        ids: list[int] = []
        positions: list[int] = []
        slot_of_token: list[int] = []
        last: list[int] = []
        for chunk, slot, ctx in zip(token_chunks, slots, context_lens, strict=True):
            ids.extend(chunk)
            positions.extend(range(ctx, ctx + len(chunk)))
            slot_of_token.extend([slot] * len(chunk))
            last.append(len(ids) - 1)

        def tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        return cls(
            input_ids=tensor(ids),
            positions=tensor(positions),
            slots=list(slots),
            query_lens=query_lens,
            context_lens=list(context_lens),
            slot_index=tensor(slot_of_token),
            logits_index=tensor(last),
        )
