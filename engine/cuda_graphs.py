"""CudaGraphDecode: decode steps replayed from CUDA graphs captured per padded batch size.

A decode step of a small model on a GPU is dominated by kernel launches (a few hundred per step);
a graph replays them all with one launch. Graphs are captured lazily, once per batch-size bucket
(1, 2, 4, 8, then multiples of 8 up to `max_num_seqs`), over static input buffers: a batch of n
sequences is copied into the first n rows of the smallest bucket >= n, and the padding rows write
nowhere (slot -1: the KV-write kernel skips it) and attend to nothing (length 0). Every layer's block
table is the full [bucket, max_blocks] buffer, so one graph serves any context length.

The captured region is `DecoderModel.logits` on tensors only (embedding through LM head); sampling
stays outside. It needs the Triton kernels (agent_kernels/dispatch.py): the torch reference path syncs
with the host. `capture=False` runs the same padded static-buffer step without capturing (how CPU
tests check the padding under TRITON_INTERPRET=1). The graphs hold the KV tensors' addresses, so a
runner that reallocates its KV memory builds a new CudaGraphDecode.
"""

from __future__ import annotations

import logging

import torch

from engine.forward_batch import DecodeBatch, ForwardBatch
from engine.kv_tensors import KVTensors

log = logging.getLogger(__name__)


def bucket_sizes(max_num_seqs: int) -> list[int]:
    """Batch sizes graphs are captured for: 1, 2, 4, 8, 16, 24, ... up to and including max_num_seqs."""
    sizes = [s for s in (1, 2, 4) if s < max_num_seqs]
    sizes += list(range(8, max_num_seqs, 8))
    return sorted(set(sizes) | {max_num_seqs})


def bucket_for(n: int, sizes: list[int]) -> int | None:
    """The smallest bucket that holds n sequences, or None when n is beyond the largest."""
    return next((s for s in sizes if s >= n), None)


class _Graph:
    """One bucket: its static inputs, its graph (or none when not capturing), its output."""

    def __init__(self, size: int, max_blocks: int, device: torch.device) -> None:
        def buffer(*shape: int, fill: int = 0) -> torch.Tensor:
            return torch.full(shape, fill, dtype=torch.int64, device=device)

        self.size = size
        self.input_ids = buffer(size)
        self.positions = buffer(size)
        self.batch = DecodeBatch(slot_mapping=buffer(size, fill=-1), block_table=buffer(size, max_blocks),
                                 seq_lens=buffer(size), first_block=buffer(size, fill=-1))
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None

    def load(self, batch: ForwardBatch) -> None:
        """Copy a decode batch into the first rows; the rest become padding (no slot, no keys)."""
        n = batch.num_seqs
        # Only the columns some sequence uses: entries past a sequence's length are never read.
        used = max(len(t) for t in batch.block_tables)
        table = batch.padded_block_table(used)
        self.input_ids[:n].copy_(batch.input_ids, non_blocking=True)
        self.positions[:n].copy_(batch.positions, non_blocking=True)
        self.batch.slot_mapping[:n].copy_(batch.slot_mapping, non_blocking=True)
        self.batch.block_table[:n, :used].copy_(table, non_blocking=True)
        self.batch.seq_lens[:n].copy_(batch.positions + 1, non_blocking=True)
        for buffer, fill in ((self.input_ids, 0), (self.positions, 0), (self.batch.slot_mapping, -1),
                             (self.batch.seq_lens, 0)):
            buffer[n:].fill_(fill)


class CudaGraphDecode:
    """Decode batches of up to `max_num_seqs` sequences through per-bucket graphs."""

    def __init__(self, model, kv: KVTensors, max_num_seqs: int, max_model_len: int, capture: bool = True) -> None:
        self.model = model
        self.kv = kv
        self.sizes = bucket_sizes(max_num_seqs)
        self.max_blocks = -(-max_model_len // kv.block_size)
        self.device = kv.keys[0].device
        self.capture = capture
        self.graphs: dict[int, _Graph] = {}
        self.pool = None  # one memory pool shared by every bucket's graph
        self.failed: BaseException | None = None

    def applies(self, batch: ForwardBatch) -> bool:
        return (self.failed is None and batch.is_decode and bucket_for(batch.num_seqs, self.sizes) is not None
                and max(len(t) for t in batch.block_tables) <= self.max_blocks)

    @torch.inference_mode()
    def run(self, batch: ForwardBatch) -> torch.Tensor:
        """Logits [num_sampling_rows, vocab] of a decode batch (the rows in batch.logits_index)."""
        graph = self._graph(bucket_for(batch.num_seqs, self.sizes))
        graph.load(batch)
        if graph.graph is None:  # not capturing (CPU tests): the same padded step, run directly
            logits = self._step(graph)
        else:
            graph.graph.replay()
            logits = graph.output
        return logits[batch.logits_index]

    def _step(self, graph: _Graph) -> torch.Tensor:
        return self.model.logits(graph.input_ids, graph.positions, graph.batch, self.kv)

    def _graph(self, size: int) -> _Graph:
        graph = self.graphs.get(size)
        if graph is not None:
            return graph
        graph = _Graph(size, self.max_blocks, self.device)
        if self.capture:
            self._capture(graph)
        self.graphs[size] = graph
        return graph

    def _capture(self, graph: _Graph) -> None:
        """Warm the kernels up (Triton compiles on first launch) on a side stream, then capture."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(graph)  # padding rows only: writes nothing, attends to nothing
        torch.cuda.current_stream(self.device).wait_stream(stream)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph, pool=self.pool):
            graph.output = self._step(graph)
        self.pool = cuda_graph.pool()
        graph.graph = cuda_graph
        log.info("captured a CUDA graph for decode batches of %d", graph.size)

    def disable(self, exc: BaseException) -> None:
        """Stop using graphs (a capture or replay fault); the runner goes on eagerly."""
        self.failed = exc
        self.graphs.clear()
        log.warning("CUDA graphs turned off after an error (decode runs eagerly): %s", exc)
