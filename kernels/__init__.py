"""Triton kernels, each beside its plain-torch reference and a dispatch (imports torch and triton only).

Empty until the GPU-path work lands. The package name shadows the PyPI `kernels` package that
transformers probes for; tests/test_kernels_namespace.py checks that transformers still imports.
"""
