"""Kernels, each beside its plain-torch reference and a dispatch (imports torch, and triton for GPU ones).

- `cpu_decode_attention`: paged decode attention for the CPU, a small C++ extension built on
  first use (Triton has no CPU backend here).

The package name shadows the PyPI `kernels` package that transformers probes for;
tests/test_kernels_namespace.py checks that transformers still imports.
"""
