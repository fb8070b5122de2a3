"""Tensor parallelism: a model split over processes (torch.distributed; gloo on CPU, NCCL on CUDA).

`EngineCore.create` hands a config with `tensor_parallel_size` > 1 to `TensorParallelCore`
(engine/distributed/core.py); see docs/parallel.md for the design.
"""
