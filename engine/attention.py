"""Reference attention over the slot KV cache: write the new keys/values, attend causally.

Handles GQA, sliding windows and logit soft-capping. Decode batches are one SDPA call;
prefill chunks are one call per sequence (their causal masks differ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.forward_batch import ForwardBatch


def write_kv(
    cache_k: torch.Tensor, cache_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: ForwardBatch
) -> None:
    """Store k, v [T, kv_heads, head_dim] at (slot, position) of every token."""
    cache_k[batch.slot_index, :, batch.positions] = k
    cache_v[batch.slot_index, :, batch.positions] = v


def attend(
    q: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    batch: ForwardBatch,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """Attention output [T, heads, head_dim] for queries q [T, heads, head_dim]."""
    if batch.is_decode:
        return _decode(q, cache_k, cache_v, batch, scale, window, softcap)
    outputs = []
    start = 0
    for slot, n, ctx in zip(batch.slots, batch.query_lens, batch.context_lens, strict=True):
        qi = q[start : start + n].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
        total = ctx + n
        lo = 0 if window is None else max(0, total - n - window + 1)
        k = cache_k[slot : slot + 1, :, lo:total]
        v = cache_v[slot : slot + 1, :, lo:total]
        if ctx == 0 and (window is None or window >= n) and softcap is None:
            # Plain causal prefill: let SDPA pick its fused causal kernel instead of a dense mask.
            out = F.scaled_dot_product_attention(qi, k, v, is_causal=True, scale=scale, enable_gqa=True)
        else:
            q_pos = torch.arange(ctx, total, device=q.device)[:, None]
            k_pos = torch.arange(lo, total, device=q.device)[None, :]
            mask = k_pos <= q_pos
            if window is not None:
                mask &= k_pos > q_pos - window
            out = _sdpa(qi, k, v, mask, scale, softcap)
        outputs.append(out[0].transpose(0, 1))
        start += n
    return torch.cat(outputs, dim=0)


def _decode(q, cache_k, cache_v, batch, scale, window, softcap) -> torch.Tensor:
    """One query per sequence: gather each sequence's window of the cache, then attend."""
    lengths = [c + 1 for c in batch.context_lens]
    if batch.num_seqs == 1:
        slot, total = batch.slots[0], lengths[0]
        lo = 0 if window is None else max(0, total - window)
        k = cache_k[slot : slot + 1, :, lo:total]
        v = cache_v[slot : slot + 1, :, lo:total]
        mask = None
    else:
        longest = max(lengths)
        slots = torch.tensor(batch.slots, device=q.device)
        k = cache_k[slots, :, :longest]
        v = cache_v[slots, :, :longest]
        lens = torch.tensor(lengths, device=q.device)[:, None]
        pos = torch.arange(longest, device=q.device)[None, :]
        mask = pos < lens
        if window is not None:
            mask &= pos >= lens - window
        mask = mask[:, None, None, :]  # [B, 1, 1, L]
    q = q[:, :, None, :]  # [B, H, 1, D]
    if softcap is None and not (q.device.type == "cpu" and q.dtype != torch.float32):
        return _sdpa(q, k, v, mask, scale, None)[:, :, 0, :]
    # Half precision on CPU: SDPA's flash kernel is ~3x slower than eager for a single query.
    return eager_attention(q, k, v, mask, scale, softcap)[:, :, 0, :]


def _sdpa(q, k, v, mask, scale, softcap) -> torch.Tensor:
    if softcap is not None:
        return eager_attention(q, k, v, mask, scale, softcap)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


def eager_attention(q, k, v, mask, scale: float, softcap: float | None) -> torch.Tensor:
    """Softmax attention as HF's eager path computes it, with queries grouped by KV head (no repeat).

    q [B, H, n, D], k/v [B, KVH, L, D], mask (True = attend) broadcastable to [B, 1, n, L] or None.
    """
    batch, heads, n, dim = q.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    # A KV head's query heads and positions become rows of one matmul: K and V are read once.
    rows = q.reshape(batch, kv_heads, groups * n, dim)
    scores = torch.matmul(rows, k.transpose(-1, -2)) * scale  # [B, KVH, G*n, L]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).unsqueeze(2)  # [B, 1, 1, n, L]
        scores = scores.view(batch, kv_heads, groups, n, -1).masked_fill(~mask, float("-inf"))
        scores = scores.view(batch, kv_heads, groups * n, -1)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v).reshape(batch, heads, n, dim)
