"""Tensor-parallel layers: a rank's slice of a dense linear layer or embedding, and the collective it needs.

- `ColumnParallelLinear`: output features split; this rank's outputs stay local (fused QKV, gate/up,
  and the LM head, whose logit slices rank 0 gathers).
- `RowParallelLinear`: input features split; partial products summed across ranks (o_proj, down_proj).
- `VocabParallelEmbedding`: vocabulary rows split; other ranks' tokens look up zeros, then a sum.
  Its `weight` is this rank's rows, so a tied LM head computes this rank's logit slice.

Each is built from the dense module loaded as usual, by copying the slice out of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.distributed.communicator import Communicator


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().clone().contiguous(), requires_grad=False)


class ColumnParallelLinear(nn.Linear):
    """The output rows `rows` of a dense layer: a plain linear layer computing this rank's outputs."""

    @classmethod
    def from_dense(cls, dense: nn.Linear, rows: torch.Tensor) -> ColumnParallelLinear:
        with torch.device("meta"):
            layer = cls(dense.in_features, len(rows), bias=dense.bias is not None)
        layer.weight = _frozen(dense.weight[rows])
        if dense.bias is not None:
            layer.bias = _frozen(dense.bias[rows])
        return layer


class RowParallelLinear(nn.Module):
    """The input columns `columns` of a dense layer; outputs summed over the ranks, the bias added once."""

    def __init__(self, dense: nn.Linear, columns: range, comm: Communicator) -> None:
        super().__init__()
        self.in_features = len(columns)
        self.out_features = dense.out_features
        self.weight = _frozen(dense.weight[:, columns.start : columns.stop])
        self.bias = None if dense.bias is None else _frozen(dense.bias)
        self.comm = comm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.comm.all_reduce(F.linear(x, self.weight))
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features} (of the sum), out_features={self.out_features}"


class VocabParallelEmbedding(nn.Module):
    """The embedding rows of vocabulary slice `vocab`; lookups are summed over the ranks."""

    def __init__(self, dense: nn.Embedding, vocab: range, comm: Communicator) -> None:
        super().__init__()
        self.vocab_start, self.vocab_stop = vocab.start, vocab.stop
        self.embedding_dim = dense.embedding_dim
        self.weight = _frozen(dense.weight[vocab.start : vocab.stop])
        self.comm = comm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mine = (ids >= self.vocab_start) & (ids < self.vocab_stop)
        local = (ids - self.vocab_start).clamp(0, self.weight.shape[0] - 1)
        # Exactly one rank holds each token's row; the others add zeros, so the sum is exact.
        rows = F.embedding(local, self.weight).masked_fill(~mine.unsqueeze(-1), 0)
        return self.comm.all_reduce(rows)

    def extra_repr(self) -> str:
        return f"vocab rows {self.vocab_start}..{self.vocab_stop - 1}, embedding_dim={self.embedding_dim}"
