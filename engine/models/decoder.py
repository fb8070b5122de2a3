"""DecoderModel: the one native decoder-only transformer that every supported family configures."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property

import torch
from torch import nn

from agent_kernels.dispatch import use_triton
from engine.attention import attend, write_kv
from engine.forward_batch import DecodeBatch, ForwardBatch
from engine.kv_tensors import KVTensors, compute_dtype
from engine.models.layers import RMSNorm, RotaryTable, activation, apply_rotary, fused_activation
from engine.models.spec import DecoderSpec, LayerSpec

# Checkpoint tensors that our fused parameters are stacked from: (suffix, fused name, shard index).
_FUSED = (
    ("self_attn.q_proj", "self_attn.qkv_proj", 0),
    ("self_attn.k_proj", "self_attn.qkv_proj", 1),
    ("self_attn.v_proj", "self_attn.qkv_proj", 2),
    ("mlp.gate_proj", "mlp.gate_up_proj", 0),
    ("mlp.up_proj", "mlp.gate_up_proj", 1),
)
# Top logits recomputed in fp32 when activations are half precision (DecoderModel._refine_top).
REFINED_TOP = 8
# Buffers some checkpoints carry that we recompute.
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")


class Attention(nn.Module):
    """Self-attention with fused QKV, optional q/k norm, rotary, and the slot KV cache."""

    def __init__(self, spec: DecoderSpec, layer: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.window = layer.sliding_window
        h, kvh, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.sizes = [h * d, kvh * d, kvh * d]
        self.qkv_proj = nn.Linear(spec.hidden_size, sum(self.sizes), bias=spec.qkv_bias)
        self.o_proj = nn.Linear(h * d, spec.hidden_size, bias=spec.o_bias)
        if spec.qk_norm:
            self.q_norm = RMSNorm(d, spec.rms_norm_eps, spec.norm_style)
            self.k_norm = RMSNorm(d, spec.rms_norm_eps, spec.norm_style)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        batch: ForwardBatch,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
    ) -> torch.Tensor:
        spec = self.spec
        tokens = x.shape[0]
        h, kvh = spec.num_heads, spec.num_kv_heads
        qkv = self.qkv_proj(x).view(tokens, h + 2 * kvh, spec.head_dim)
        cos, sin = cos_sin
        if spec.qk_norm:
            q = apply_rotary(self.q_norm(qkv[:, :h]), cos, sin)
            k = apply_rotary(self.k_norm(qkv[:, h : h + kvh]), cos, sin)
        else:
            # Queries and keys rotate together: one set of rotary ops per layer instead of two.
            qk = apply_rotary(qkv[:, : h + kvh], cos, sin)
            q, k = qk[:, :h], qk[:, h:]
        v = qkv[:, h + kvh :]
        # Attention computes in f32 on CPU (wider than bf16 activations), else in the cache's dtype or, for
        # an fp8 cache, the activations'; write_kv casts (and saturates for fp8).
        dtype = compute_dtype(cache_k.dtype, x.dtype, x.device)
        write_kv(cache_k, cache_v, k, v, batch)
        out = attend(q.to(dtype), cache_k, cache_v, batch, spec.scale, self.window, spec.attn_softcap)
        return self.o_proj(out.reshape(tokens, -1).to(x.dtype))


class MLP(nn.Module):
    """Gated MLP with fused gate/up projection."""

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(spec.hidden_size, 2 * spec.intermediate_size, bias=spec.mlp_bias)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=spec.mlp_bias)
        self.act = activation(spec.activation)
        self.fused_act = fused_activation(spec.activation)  # "" when agent_kernels/act_and_mul.py lacks it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if self.fused_act and use_triton(gate_up):
            from agent_kernels.act_and_mul import triton_act_and_mul  # imports triton: GPU only

            return self.down_proj(triton_act_and_mul(gate_up, self.fused_act))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm block; with `sandwich_norm` (Gemma) the attention and MLP outputs are normed too."""

    def __init__(self, spec: DecoderSpec, layer: LayerSpec) -> None:
        super().__init__()
        self.rope = layer.rope
        self.sandwich = spec.sandwich_norm
        norm = lambda: RMSNorm(spec.hidden_size, spec.rms_norm_eps, spec.norm_style)  # noqa: E731
        self.self_attn = Attention(spec, layer)
        self.mlp = MLP(spec)
        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()
        if self.sandwich:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()

    def forward(self, x, cos_sin, batch, cache_k, cache_v) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), cos_sin, batch, cache_k, cache_v)
        if self.sandwich:
            x = x + self.post_attention_layernorm(h)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        normed, x = self.post_attention_layernorm(h, residual=x)  # x + h, and its norm: one kernel on GPU
        return x + self.mlp(normed)


class _Backbone(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        # Uninitialised (weights come from the checkpoint): nn.Embedding's own init goes through torch._refs,
        # which imports torch._dynamo (and with it triton, ~150 MB resident) even on the meta device.
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size,
                                         _weight=torch.empty(spec.vocab_size, spec.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(spec, layer) for layer in spec.layers)
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, spec.norm_style)


LayersStep = Callable[..., torch.Tensor]


def run_layers(layers: nn.ModuleList, x, cos_sins, batch, keys, values) -> torch.Tensor:
    """Every decoder layer in turn: layer i with rotary tables cos_sins[i] and KV memory keys[i]/values[i]."""
    for layer, cos_sin, cache_k, cache_v in zip(layers, cos_sins, keys, values, strict=True):
        x = layer(x, cos_sin, batch, cache_k, cache_v)
    return x


def _run_placed(layers: nn.ModuleList, devices: list[torch.device], x, cos_sins, batch, keys, values):
    """run_layers over layers on several devices: x, the rotary rows and the batch's tensors move to each
    layer's device (the batch once per device)."""
    moved: dict[torch.device, ForwardBatch | DecodeBatch] = {x.device: batch}
    for layer, device, cos_sin, cache_k, cache_v in zip(layers, devices, cos_sins, keys, values, strict=True):
        if device not in moved:
            moved[device] = batch.to(device)
        x = layer(x.to(device), tuple(t.to(device) for t in cos_sin), moved[device], cache_k, cache_v)
    return x


class DecoderModel(nn.Module):
    """A decoder-only LM whose parameter names follow HF checkpoints (q/k/v and gate/up fused)."""

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.model = _Backbone(spec)
        if not spec.tie_word_embeddings:
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        self.rotary = nn.ModuleDict(
            {name: RotaryTable(rope, spec.max_position_embeddings) for name, rope in spec.ropes.items()}
        )
        # Set by `place_layers` when a topology puts layers on other devices than the rest of the model.
        self.layer_devices: list[torch.device] | None = None

    def place_layers(self, devices: list[torch.device]) -> None:
        """Move layer i (its weights; its KV memory follows in KVTensors) to devices[i]."""
        for layer, device in zip(self.model.layers, devices, strict=True):
            layer.to(device)
        home = self.model.norm.weight.device
        self.layer_devices = None if all(d == home for d in devices) else list(devices)

    def init_buffers(self) -> None:
        """Compute what is not loaded from the checkpoint (rotary tables)."""
        param = self.model.norm.weight
        for table in self.rotary.values():
            table.build(param.device, param.dtype)

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, kv: KVTensors, layers_step: LayersStep | None = None) -> torch.Tensor:
        """Logits [num_seqs, vocab] (fp32) at the last token of each sequence in the batch.

        Layers see a decode batch as a tensor-only DecodeBatch; `layers_step` (same signature as
        `run_layers`) replaces the eager loop over the layers (the compiled step,
        engine/compiled_decode.py)."""
        layer_batch = batch.decode_view() if batch.is_decode else batch
        return self.logits(batch.input_ids, batch.positions, layer_batch, kv, batch.logits_index, layers_step)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor, layer_batch: ForwardBatch | DecodeBatch,
               kv: KVTensors, rows: torch.Tensor | None = None, layers_step: LayersStep | None = None) -> torch.Tensor:
        """The forward on tensors only (what a CUDA graph captures for a decode batch): logits [R, vocab]
        (fp32) for the token rows `rows`, or for every token when None."""
        x = self.model.embed_tokens(input_ids)
        if self.spec.embed_scale is not None:
            x = x * torch.tensor(self.spec.embed_scale, dtype=x.dtype)
        cos_sin = {name: table(positions) for name, table in self.rotary.items()}
        layers = self.model.layers
        cos_sins = [cos_sin[layer.rope] for layer in layers]
        if self.layer_devices is not None:  # layers spread over devices: one hop per device change
            x = _run_placed(layers, self.layer_devices, x, cos_sins, layer_batch, kv.keys, kv.values)
            x = x.to(self.model.norm.weight.device)
        else:
            x = (layers_step or run_layers)(layers, x, cos_sins, layer_batch, kv.keys, kv.values)
        x = self.model.norm(x if rows is None else x[rows])
        logits = self.project(x).float()
        if x.dtype != torch.float32:
            self._refine_top(x, logits)
        if self.spec.final_softcap is not None:
            cap = self.spec.final_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states -> vocabulary logits (the tied embedding or the LM head; either may be quantized)."""
        if not self.spec.tie_word_embeddings:
            return self.lm_head(x)
        embed = self.model.embed_tokens
        project = getattr(embed, "project", None)
        return project(x) if project is not None else torch.nn.functional.linear(x, embed.weight)

    def _refine_top(self, x: torch.Tensor, logits: torch.Tensor, k: int = REFINED_TOP) -> None:
        """Recompute each row's top-k logits in fp32, in place.

        Half-precision logits are rounded to a few bits (bf16: steps of 0.125 around 20), so near-ties
        at the top become exact ties broken by token id: on the embedded model the chat answer to
        "What is the capital of France?" flipped from "The" (fp32 margin 0.08) to "L". The head's rows
        for the k best candidates are read again (dequantized) and dotted with x in fp32.
        """
        rows = self._head_rows()
        if rows is None or logits.shape[-1] < k:
            return
        top = logits.topk(k, dim=-1).indices  # [R, k]
        exact = torch.einsum("rh,rkh->rk", x.float(), rows(top))
        logits.scatter_(1, top, exact)

    def _head_rows(self):
        """index [R, k] -> the head's fp32 weight rows [R, k, hidden], or None for a head without one."""
        head = self.model.embed_tokens if self.spec.tie_word_embeddings else self.lm_head
        rows = getattr(head, "weight_rows", None)
        if rows is not None:
            return rows
        weight = getattr(head, "weight", None)
        return None if weight is None else (lambda index: weight[index].float())

    # --- checkpoint mapping -------------------------------------------------------------------

    def quantizable(self) -> list[tuple[str, list[str]]]:
        """(module path, checkpoint weight names in row order) of every matrix a quantized model keeps
        quantized: the linear projections (fused ones list their parts), the LM head, the embedding."""
        out = []
        for path, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                parts = [path.replace(whole, part) for part, whole, _ in _FUSED if path.endswith(whole)]
                out.append((path, [f"{p}.weight" for p in (parts or [path])]))
        return out

    def checkpoint_names(self) -> list[str]:
        """The HF-style tensor names a complete checkpoint of this model contains."""
        names = []
        for name, _ in self.named_parameters():
            fused = [(part, fused) for part, fused, _ in _FUSED if f".{fused}." in name]
            if fused:
                part, whole = fused[0]
                names.extend(name.replace(whole, p) for p, w, _ in _FUSED if w == whole)
            else:
                names.append(name)
        return names

    def load_weight(self, name: str, tensor: torch.Tensor) -> bool:
        """Copy one checkpoint tensor into place; False when the name is not ours."""
        if _IGNORED.search(name) or (name == "lm_head.weight" and self.spec.tie_word_embeddings):
            return True
        params = self._params
        for part, whole, shard in _FUSED:
            if f".{part}." in name:
                target = params.get(name.replace(part, whole))
                if target is None:
                    return False
                sizes = self._shard_sizes(whole)
                offset = sum(sizes[:shard])
                piece = target.data[offset : offset + sizes[shard]]
                if piece.shape != tensor.shape:
                    raise ValueError(
                        f"tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(piece.shape)}"
                    )
                piece.copy_(tensor)
                return True
        target = params.get(name)
        if target is None:
            return False
        if target.shape != tensor.shape:
            raise ValueError(f"tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        target.data.copy_(tensor)
        return True

    @cached_property
    def _params(self) -> dict[str, nn.Parameter]:
        return dict(self.named_parameters())

    def _shard_sizes(self, whole: str) -> list[int]:
        spec = self.spec
        if whole == "self_attn.qkv_proj":
            return [spec.num_heads * spec.head_dim] + [spec.num_kv_heads * spec.head_dim] * 2
        return [spec.intermediate_size] * 2
