"""NativeDecode: a decode step's decoder layers as one C++ call, for the CPU models it fits.

The layers of a decode batch run in agent_kernels/cpu_decode_step.cpp: the same matmul and
attention kernels as the eager path, with the small element-wise ops between them as C++ loops
that round as the eager torch ops do. It replaces the eager loop (and torch.compile, which it
beats: no guards, no Python wrapper, no compile at start, and ~190 MB less resident without
dynamo and inductor loaded) for Llama-style models (Llama, Mistral, Qwen2, SmolLM) with
quantized linears (GGUF Q4/Q8 or --isq) and bf16 activations. Other models (Gemma's norms,
Qwen3's q/k norms, soft-capping, dense weights, f32 activations) keep torch.compile / eager.
The eager layers stay the reference (tests: greedy tokens identical on the embedded model).
"""

from __future__ import annotations

import logging

import torch

from agent_kernels import cpu_decode_step
from engine.forward_batch import DecodeBatch
from engine.quant.linear import Int4Linear, Int8Linear

log = logging.getLogger(__name__)

_LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def unfit_reason(model, kv_dtype: torch.dtype) -> str | None:
    """Why the native step cannot run this model's layers (None: it can)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return "not a native decoder model"
    if getattr(model, "layer_devices", None) is not None:
        return "layers on several devices"
    if spec.norm_style != "llama" or spec.sandwich_norm or spec.qk_norm:
        return f"norms of {spec.architecture} (Gemma-style or q/k norms)"
    if spec.activation not in ("silu", "swish"):
        return f"activation {spec.activation}"
    if spec.attn_softcap is not None:
        return "attention soft-capping"
    if len({layer.rope for layer in spec.layers}) != 1:
        return "several rotary tables"
    if kv_dtype not in (torch.bfloat16, torch.float32):
        return f"KV cache dtype {kv_dtype}"
    for layer in model.model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if norm.weight.device.type != "cpu" or norm.weight.dtype != torch.bfloat16:
                return "activations are not bf16 on the CPU"
        for name in _LINEARS:
            linear = layer.get_submodule(name)
            if isinstance(linear, Int4Linear):
                ok = linear.layout == "agent" or linear.scales_zeros.dtype == torch.bfloat16
            elif isinstance(linear, Int8Linear):
                ok = linear.kernel_shape_ok and linear.scale.dtype == (
                    torch.bfloat16 if linear.layout == "aten" else torch.float32)
            else:
                return f"{name} is {type(linear).__name__}, not a packed int4/int8 weight"
            if not ok or (linear.bias is not None and linear.bias.dtype != torch.bfloat16):
                return f"{name}: scales or bias not bf16, or a shape the kernel refuses"
    return None


class NativeDecode:
    """The C++ layers step for decode batches of one DecoderModel (same signature as run_layers)."""

    def __init__(self, model) -> None:
        spec = model.spec
        self.spec = spec
        self.norms: list[torch.Tensor] = []
        self.kinds: list[int] = []
        self.groups: list[int] = []
        self.weights: list[torch.Tensor] = []
        self.scales: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        none = torch.empty(0, dtype=torch.bfloat16)
        for layer in model.model.layers:
            self.norms += [layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()]
            for name in _LINEARS:
                linear = layer.get_submodule(name)
                if isinstance(linear, Int4Linear):
                    self.kinds.append(cpu_decode_step.INT4 if linear.layout == "aten" else cpu_decode_step.INT4_AGENT)
                    self.groups.append(linear.group)
                    self.weights.append(linear.packed)
                    self.scales.append(linear.scales_offsets if linear.layout == "agent" else linear.scales_zeros)
                else:
                    self.kinds.append(cpu_decode_step.INT8 if linear.layout == "aten" else cpu_decode_step.INT8_AGENT)
                    self.groups.append(linear.group)
                    self.weights.append(linear.weight_int8)
                    self.scales.append(linear.scale)
                self.biases.append(none if linear.bias is None else linear.bias.detach())
        self.windows = [layer.sliding_window or 0 for layer in spec.layers]
        self.failed: BaseException | None = None

    @classmethod
    def build(cls, model, kv_dtype: torch.dtype) -> NativeDecode | None:
        """The native step for this model, or None (logged) when it does not fit or cannot be built."""
        reason = unfit_reason(model, kv_dtype)
        if reason is None and not cpu_decode_step.load():
            reason = "the C++ extension could not be built"
        if reason is not None:
            log.info("native decode step off: %s", reason)
            return None
        return cls(model)

    def step(self, layers, x: torch.Tensor, cos_sins, batch: DecodeBatch, keys, values) -> torch.Tensor:
        spec = self.spec
        cos, sin = cos_sins[0]
        return cpu_decode_step.decode_layers(
            x, self.norms, self.kinds, self.groups, self.weights, self.scales, self.biases, self.windows, cos, sin,
            keys, values, batch.slot_mapping, batch.block_table, batch.seq_lens, spec.num_heads, spec.num_kv_heads,
            spec.head_dim, spec.rms_norm_eps, spec.scale)

    def disable(self, cause: BaseException) -> None:
        """Give the decode step back to the other paths for good (a call failed at run time)."""
        self.failed = cause
        log.warning("the native decode step failed (%r): using the other decode paths from now on", cause)
