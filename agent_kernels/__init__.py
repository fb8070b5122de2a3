"""Kernels, each beside its plain-torch reference and a dispatch (imports torch, and triton for GPU ones).

Triton kernels (CUDA; CI runs them on CPU tensors in Triton's interpreter, agent_kernels.dispatch.forced):
- `rms_norm`: RMSNorm, Llama and Gemma styles, optionally fused with the residual add.
- `rotary`: rotary embedding from per-position cos/sin tables (any scaling is in the tables).
- `act_and_mul`: SiLU / tanh-GELU of the gate times the up projection.
- `kv_cache_write`: keys and values of a batch into the paged cache in one launch (fp8 saturating).
- `paged_decode_attention`: one query per sequence over the paged cache; GQA, sliding window,
  soft-capping, fp8 caches; flash-decoding split over partitions with a merge kernel.
- `paged_prefill_attention`: varlen causal attention of prefill chunks over the paged cache.
- `scaled_matmul`: weight-only int8 / fp8 matmul with a scale per output row.
- `int4_matmul`: weight-only int4 matmul, codes packed two to a byte, scale and offset per group.
`dispatch` says when the Triton versions run.

CPU:
- `cpu_decode_attention`: paged decode attention for the CPU, a small C++ extension built on
  first use (Triton has no CPU backend here).

Named `agent_kernels`, not `kernels`: transformers (>= 5.25) depends on the PyPI `kernels` package and
imports from it, so a top-level `kernels` of ours would shadow it (tests/test_kernels_namespace.py).
"""
