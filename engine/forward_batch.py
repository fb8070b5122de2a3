"""ForwardBatch: what one model forward computes, passed explicitly to every layer."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecodeBatch:
    """A decode batch (one new token per sequence) as tensors only, so a compiled step can take it.

    Sequence i writes its token to `slot_mapping[i]` and attends to its first `seq_lens[i]`
    positions, which live in the blocks `block_table[i]` (padded with block 0, masked out).
    """

    slot_mapping: torch.Tensor  # [B] int64
    block_table: torch.Tensor  # [B, max_blocks] int64
    seq_lens: torch.Tensor  # [B] int64
    first_block: torch.Tensor  # [B] int64: the first block when a sequence's blocks are consecutive, else -1

    def to(self, device: torch.device) -> DecodeBatch:
        return DecodeBatch(*(t.to(device) for t in (self.slot_mapping, self.block_table, self.seq_lens,
                                                     self.first_block)))


@dataclass(frozen=True)
class VarlenMeta:
    """A prefill batch as the varlen attention kernel takes it (agent_kernels/paged_prefill_attention.py)."""

    block_table: torch.Tensor  # [B, max_blocks] int64, padded with block 0
    query_start: torch.Tensor  # [B + 1] int64: sequence b's queries are rows query_start[b]:query_start[b+1]
    context_lens: torch.Tensor  # [B] int64: positions cached before this chunk
    max_query_len: int


@dataclass
class ForwardBatch:
    """A flattened batch of token chunks, one chunk per sequence, over the paged KV cache.

    Sequence i contributes `query_lens[i]` new tokens at positions `context_lens[i]` onwards;
    its keys/values live in the blocks `block_tables[i]`, and token t of the flat batch is
    written to flat cache slot `slot_mapping[t]`. Logits are computed only for the rows in
    `logits_index` (the last token of each sequence that samples this step).
    """

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    slot_mapping: torch.Tensor  # [T] int64
    query_lens: list[int]
    context_lens: list[int]
    block_tables: list[list[int]]
    block_size: int
    logits_index: torch.Tensor  # [num_sampled] int64
    samples: list[bool]  # per sequence: does this step produce its next token
    sequence_ids: list[str]
    # First block of each sequence when its blocks are consecutive (read as a view, no gather), else -1.
    first_block: list[int]

    @functools.cached_property
    def varlen(self) -> VarlenMeta:
        """Tensors of the varlen prefill kernel, built once per forward (every layer reuses them)."""
        device = self.input_ids.device
        starts = [0]
        for n in self.query_lens:
            starts.append(starts[-1] + n)
        blocks = max(-(-(c + n) // self.block_size) for c, n in zip(self.context_lens, self.query_lens, strict=True))
        return VarlenMeta(self.padded_block_table(blocks), torch.tensor(starts, dtype=torch.int64, device=device),
                          torch.tensor(self.context_lens, dtype=torch.int64, device=device), max(self.query_lens))

    def to(self, device: torch.device) -> ForwardBatch:
        """This batch with its tensors on `device` (layers placed on another device by a topology)."""
        return dataclasses.replace(self, input_ids=self.input_ids.to(device), positions=self.positions.to(device),
                                   slot_mapping=self.slot_mapping.to(device),
                                   logits_index=self.logits_index.to(device))

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @property
    def is_decode(self) -> bool:
        return all(n == 1 for n in self.query_lens)

    def decode_view(self) -> DecodeBatch:
        """This batch as a DecodeBatch (it must be a decode batch)."""
        lengths = [c + 1 for c in self.context_lens]
        table = self.padded_block_table(-(-max(lengths) // self.block_size))
        device = self.input_ids.device
        return DecodeBatch(self.slot_mapping, table, torch.tensor(lengths, device=device),
                           torch.tensor(self.first_block, device=device))

    def padded_block_table(self, num_blocks: int) -> torch.Tensor:
        """Block tables as one [num_seqs, num_blocks] tensor, padded with block 0 (masked out)."""
        rows = [table[:num_blocks] + [0] * (num_blocks - min(len(table), num_blocks)) for table in self.block_tables]
        return torch.tensor(rows, dtype=torch.int64, device=self.input_ids.device)

    @classmethod
    def build(
        cls,
        token_chunks: list[list[int]],
        context_lens: list[int],
        block_tables: list[list[int]],
        block_size: int,
        sample: list[bool],
        sequence_ids: list[str],
        device: torch.device,
    ) -> ForwardBatch:
        """Flatten per-sequence chunks; positions and cache slots follow from the block tables."""
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logits_rows: list[int] = []
        first_block: list[int] = []
        for chunk, ctx, table, wants in zip(token_chunks, context_lens, block_tables, sample, strict=True):
            ids.extend(chunk)
            span = range(ctx, ctx + len(chunk))
            positions.extend(span)
            slots.extend(table[p // block_size] * block_size + p % block_size for p in span)
            if wants:
                logits_rows.append(len(ids) - 1)
            used = table[: -(-(ctx + len(chunk)) // block_size)]
            consecutive = all(b == used[0] + i for i, b in enumerate(used))
            first_block.append(used[0] if consecutive else -1)

        def tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        return cls(
            input_ids=tensor(ids),
            positions=tensor(positions),
            slot_mapping=tensor(slots),
            query_lens=[len(c) for c in token_chunks],
            context_lens=list(context_lens),
            block_tables=block_tables,
            block_size=block_size,
            logits_index=tensor(logits_rows),
            samples=list(sample),
            sequence_ids=list(sequence_ids),
            first_block=first_block,
        )
