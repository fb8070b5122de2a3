"""Reference attention over the paged KV cache: write new keys/values by slot, attend by block table.

Handles GQA, sliding windows and logit soft-capping. A decode batch (a DecodeBatch) is one
attention call over the gathered blocks of all its sequences; prefill chunks are one call per
sequence (their causal masks differ). The GPU path will put Triton kernels behind `attend`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agent_kernels import cpu_decode_attention
from agent_kernels.dispatch import use_triton
from engine.forward_batch import DecodeBatch, ForwardBatch
from engine.kv_tensors import FP8, FP8_MAX

# The Triton kernel modules are imported where used: they import triton (~90 MB resident), which a
# CPU-only engine never needs.


def write_kv(
    cache_k: torch.Tensor, cache_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: ForwardBatch | DecodeBatch
) -> None:
    """Store k, v [T, kv_heads, head_dim] in the flat cache slots of their tokens, cast to the cache's
    dtype (saturated to +-448 for an fp8 cache, where a plain cast of a larger value gives NaN)."""
    if use_triton(k):  # one fused kernel for keys and values
        from agent_kernels import kv_cache_write

        kv_cache_write.triton_write_kv(cache_k, cache_v, k, v, batch.slot_mapping)
        return
    for cache, x in ((cache_k, k), (cache_v, v)):
        if cache.dtype == FP8:  # index_copy_ has no float8 version on the CPU: copy the bytes
            cache, x = cache.view(torch.uint8), x.float().clamp(-FP8_MAX, FP8_MAX).to(FP8).view(torch.uint8)
        heads, dim = cache.shape[-2:]
        cache.view(-1, heads, dim).index_copy_(0, batch.slot_mapping, x.to(cache.dtype))


def attend(
    q: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    batch: ForwardBatch | DecodeBatch,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """Attention output [T, heads, head_dim] for queries q [T, heads, head_dim]."""
    if use_triton(q):  # the Triton kernels read the paged cache in place (GPU; tests force them on CPU)
        from agent_kernels.paged_decode_attention import paged_decode_attention
        from agent_kernels.paged_prefill_attention import paged_prefill_attention

        if isinstance(batch, DecodeBatch):
            return paged_decode_attention(q, cache_k, cache_v, batch.block_table, batch.seq_lens, scale,
                                          window, softcap)
        meta = batch.varlen
        return paged_prefill_attention(q, cache_k, cache_v, meta.block_table, meta.query_start,
                                       meta.context_lens, meta.max_query_len, scale, window, softcap)
    if isinstance(batch, DecodeBatch):
        if cpu_decode_attention.applies(q, cache_k):  # the C++ paged kernel (agent_kernels/), eager and compiled
            return cpu_decode_attention.decode_attention(q, cache_k, cache_v, batch.block_table, batch.seq_lens,
                                                         scale, window, softcap)
        # Under torch.compile one opaque op: the compiled step runs exactly the eager attention. (An
        # inductor-fused paged form, gathers and reductions only, measured slower: 352 vs 398 tok/s
        # at 8 sequences, 80 vs 97 at one sequence of 512 tokens.)
        run = _decode_attention_op if torch.compiler.is_compiling() else _decode_attention
        return run(q, cache_k, cache_v, batch.block_table, batch.seq_lens, batch.first_block, scale, window, softcap)
    outputs = []
    start = 0
    for i, (n, ctx) in enumerate(zip(batch.query_lens, batch.context_lens, strict=True)):
        total = ctx + n
        lo = 0 if window is None else max(0, total - n - window + 1)
        first, table = batch.first_block[i], batch.block_tables[i]
        k = _sequence_kv(cache_k, first, table, lo, total).to(q.dtype)
        v = _sequence_kv(cache_v, first, table, lo, total).to(q.dtype)
        qi = q[start : start + n].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
        if n == 1:
            mask = None  # one query at the end: every kept key is visible
        elif ctx == 0 and (window is None or window >= n) and softcap is None:
            mask = "causal"
        else:
            q_pos = torch.arange(ctx, total, device=q.device)[:, None]
            k_pos = torch.arange(lo, total, device=q.device)[None, :]
            mask = k_pos <= q_pos
            if window is not None:
                mask &= k_pos > q_pos - window
        outputs.append(_attention(qi, k, v, mask, scale, softcap)[0].transpose(0, 1))
        start += n
    return torch.cat(outputs, dim=0)


def _sequence_kv(cache: torch.Tensor, first: int, table: list[int], lo: int, hi: int) -> torch.Tensor:
    """Positions lo..hi-1 of a sequence as [1, kv_heads, L, D]: a view of the cache when its blocks are
    consecutive from block `first` (first >= 0), else a gather of its blocks `table`."""
    size = cache.shape[1]
    if first >= 0:
        flat = cache.view(-1, *cache.shape[2:])
        rows = flat[first * size + lo : first * size + hi]
    else:
        blocks = table[lo // size : -(-hi // size)]
        index = torch.tensor(blocks, dtype=torch.int64, device=cache.device)
        gathered = cache.index_select(0, index).view(-1, *cache.shape[2:])
        offset = (lo // size) * size
        rows = gathered[lo - offset : hi - offset]
    return rows.transpose(0, 1).unsqueeze(0)


# Up to this many key positions, a decode batch gathers all sequences' blocks into one padded batch
# for one attention call; beyond it, copying the keys costs more than calling attention once per
# sequence on views of the cache (measured: 30 layers x 576 positions of f32 K/V is 26 MB a step).
_GATHER_MAX_POSITIONS = 128


def _decode_attention(
    q: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    first_block: torch.Tensor,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """One query per sequence over its cached keys: short contexts gathered into one padded batch
    (masked by length and window), long ones one attention call per sequence on cache views."""
    seqs, num_blocks = block_table.shape
    size = cache_k.shape[1]
    if num_blocks * size > _GATHER_MAX_POSITIONS:
        outputs = []
        for i, (length, first) in enumerate(zip(seq_lens.tolist(), first_block.tolist(), strict=True)):
            lo = 0 if window is None else max(0, length - window)
            table = block_table[i].tolist() if first < 0 else []
            k = _sequence_kv(cache_k, first, table, lo, length).to(q.dtype)
            v = _sequence_kv(cache_v, first, table, lo, length).to(q.dtype)
            outputs.append(_attention(q[i : i + 1, :, None, :], k, v, None, scale, softcap)[:, :, 0, :])
        return torch.cat(outputs)
    k = cache_k[block_table].view(seqs, num_blocks * size, *cache_k.shape[2:]).transpose(1, 2).to(q.dtype)
    v = cache_v[block_table].view(seqs, num_blocks * size, *cache_v.shape[2:]).transpose(1, 2).to(q.dtype)
    lens = seq_lens[:, None]
    pos = torch.arange(num_blocks * size, device=q.device)[None, :]
    mask = pos < lens
    if window is not None:
        mask &= pos >= lens - window
    out = _attention(q[:, :, None, :], k, v, mask[:, None, None, :], scale, softcap)  # [B, H, 1, D]
    return out[:, :, 0, :]


@torch.library.custom_op("engine::decode_attention", mutates_args=())
def _decode_attention_op(
    q: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    first_block: torch.Tensor,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    return _decode_attention(q, cache_k, cache_v, block_table, seq_lens, first_block, scale, window,
                             softcap).contiguous()


@_decode_attention_op.register_fake
def _(q, cache_k, cache_v, block_table, seq_lens, first_block, scale, window, softcap) -> torch.Tensor:
    return torch.empty_like(q)


def _attention(q, k, v, mask, scale, softcap) -> torch.Tensor:
    """q [B, H, n, D], k/v [B, KVH, L, D]; mask: None, "causal", or bool (True = attend)."""
    single_query_half_cpu = q.shape[2] == 1 and q.device.type == "cpu" and q.dtype != torch.float32
    if softcap is None and not single_query_half_cpu:
        causal = isinstance(mask, str)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if causal else mask, is_causal=causal, scale=scale, enable_gqa=True
        )
    # Half precision on CPU: SDPA's flash kernel is ~3x slower than eager for a single query.
    if isinstance(mask, str):
        n = q.shape[2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return eager_attention(q, k, v, mask, scale, softcap)


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
