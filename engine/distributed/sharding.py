"""shard_model: turn a loaded dense DecoderModel into one rank's shard by replacing its modules.

Per layer: fused QKV → column-parallel (this rank's query heads and the KV heads they read),
o_proj → row-parallel, fused gate/up → column-parallel (this rank's MLP columns), down_proj →
row-parallel; the embedding → vocab-parallel, the LM head → column-parallel over the vocabulary.
Norms, rotary tables and q/k norms stay whole. The model's (and each attention's) spec is
replaced by the local one, so the KV cache and attention see only the local heads. The replaced
dense modules are dropped: afterwards the module holds only this rank's slice of the weights.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.config import EngineConfig
from engine.distributed.communicator import Communicator
from engine.distributed.parallel_layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding
from engine.distributed.plan import RankShard, TensorParallelPlan
from engine.errors import TensorParallelError, UnsupportedArchitectureError
from engine.loader import LoadedModel, load_model

_DENSE = {"embed_tokens": nn.Embedding}  # every other matrix must be an nn.Linear


def load_dense(config: EngineConfig, device: str | None = None) -> LoadedModel:
    """The model `config` names, native, with dense weights (`isq` none): the form a rank slices."""
    try:
        return load_model(
            config.model,
            dtype=config.dtype,
            device=device or config.device,
            allow_fallback=False,
            chat_template=config.chat_template,
            isq="none",
        )
    except UnsupportedArchitectureError as exc:
        raise TensorParallelError(f"tensor parallelism needs a native architecture: {exc}") from exc


def plan_for(module: nn.Module, world_size: int) -> TensorParallelPlan:
    """The plan of a native model's spec; refuses models whose weights are not dense."""
    spec = getattr(module, "spec", None)
    if spec is None:
        raise TensorParallelError(
            "tensor parallelism needs a native model (the transformers fallback cannot be split)"
        )
    require_dense(module)
    return TensorParallelPlan.build(
        spec.num_heads, spec.num_kv_heads, spec.intermediate_size, spec.vocab_size, world_size
    )


def require_dense(module: nn.Module) -> None:
    """TensorParallelError naming the first matrix that is quantized (its slices would need requantizing)."""
    for path, child in module.named_modules():
        leaf = path.rpartition(".")[2]
        if leaf in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head", "embed_tokens"):
            wanted = _DENSE.get(leaf, nn.Linear)
            if type(child) is not wanted:
                raise TensorParallelError(
                    f"tensor parallelism splits dense weights, but {path} is a {type(child).__name__}: "
                    "load the model dense (--isq none)"
                )


def shard_model(module: nn.Module, plan: TensorParallelPlan, rank: int, comm: Communicator) -> None:
    """Replace `module`'s matrices by rank `rank`'s slices (in place)."""
    spec = module.spec
    shard = plan.shards[rank]
    local = dataclasses.replace(
        spec,
        num_heads=len(shard.q_heads),
        num_kv_heads=len(shard.kv_heads),
        intermediate_size=len(shard.intermediate),
    )
    d = spec.head_dim
    qkv_rows = _qkv_rows(spec.num_heads, spec.num_kv_heads, d, shard)
    gate_up_rows = torch.cat(
        [
            torch.arange(shard.intermediate.start, shard.intermediate.stop),
            torch.arange(shard.intermediate.start, shard.intermediate.stop) + spec.intermediate_size,
        ]
    )
    for layer in module.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.qkv_proj = ColumnParallelLinear.from_dense(attn.qkv_proj, qkv_rows)
        attn.o_proj = RowParallelLinear(
            attn.o_proj, range(shard.q_heads.start * d, shard.q_heads.stop * d), comm
        )
        attn.spec = local
        attn.sizes = [local.num_heads * d, local.num_kv_heads * d, local.num_kv_heads * d]
        mlp.gate_up_proj = ColumnParallelLinear.from_dense(mlp.gate_up_proj, gate_up_rows)
        mlp.down_proj = RowParallelLinear(mlp.down_proj, shard.intermediate, comm)
    module.model.embed_tokens = VocabParallelEmbedding(module.model.embed_tokens, shard.vocab, comm)
    if not spec.tie_word_embeddings:
        module.lm_head = ColumnParallelLinear.from_dense(
            module.lm_head, torch.arange(shard.vocab.start, shard.vocab.stop)
        )
    module.spec = local
    module.__dict__.pop("_params", None)  # DecoderModel's cached name -> parameter map of the dense model


def _qkv_rows(num_heads: int, num_kv_heads: int, head_dim: int, shard: RankShard) -> torch.Tensor:
    """Rows of the fused [q; k; v] weight that this rank's heads own."""

    def heads(start: int, stop: int, offset: int) -> torch.Tensor:
        return torch.arange(start * head_dim, stop * head_dim) + offset

    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    return torch.cat(
        [
            heads(shard.q_heads.start, shard.q_heads.stop, 0),
            heads(shard.kv_heads.start, shard.kv_heads.stop, q_size),
            heads(shard.kv_heads.start, shard.kv_heads.stop, q_size + kv_size),
        ]
    )
