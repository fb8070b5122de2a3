"""GroupQuant: integer weight codes with one scale (and offset) per group of input columns.

The common currency of the quantized path: GGUF blocks decode into it (engine/quant/gguf_blocks.py),
in-situ quantization produces it (engine/quant/isq.py), and the fast linear modules are built from
it (engine/quant/linear.py). It is plain torch data, so tests can dequantize and compare it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupQuant:
    """w[o, i] = codes[o, i] * scale[o, i // group] + offset[o, i // group] (offset None means 0).

    `codes` is uint8 for unsigned codes (0 .. 2**bits - 1), int8 for signed ones, or float8_e4m3fn
    (bits 8) for fp8 codes, which are floats themselves (see isq.quantize_fp8); scale and offset
    are float32. A per-channel layout is the case group == in_features.
    """

    codes: torch.Tensor  # [O, I] uint8, int8 or float8_e4m3fn
    scale: torch.Tensor  # [O, I // group] float32
    offset: torch.Tensor | None  # [O, I // group] float32, or None
    group: int
    bits: int

    def __post_init__(self) -> None:
        rows, cols = self.codes.shape
        if cols % self.group:
            raise ValueError(f"{cols} input columns are not a whole number of groups of {self.group}")
        groups = (rows, cols // self.group)
        if tuple(self.scale.shape) != groups or (self.offset is not None and tuple(self.offset.shape) != groups):
            raise ValueError(f"scale/offset must have shape {groups} for codes of shape {(rows, cols)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    @property
    def unsigned(self) -> bool:
        return self.codes.dtype == torch.uint8

    @property
    def symmetric_int8(self) -> bool:
        """Signed int8 codes with no offset (GGUF Q8_0, or quantize_int8 when group == in_features)."""
        return self.bits == 8 and self.codes.dtype == torch.int8 and self.offset is None

    def dequantize(self) -> torch.Tensor:
        """The float32 weights these codes stand for."""
        grouped = self.codes.float().view(self.shape[0], -1, self.group)
        w = grouped * self.scale[:, :, None]
        if self.offset is not None:
            w = w + self.offset[:, :, None]
        return w.view(self.shape)

    def rows(self, index: torch.Tensor | slice) -> GroupQuant:
        """The rows `index` (a permutation or a selection) of this weight."""
        offset = None if self.offset is None else self.offset[index]
        return GroupQuant(self.codes[index], self.scale[index], offset, self.group, self.bits)

    @staticmethod
    def cat(parts: list[GroupQuant]) -> GroupQuant:
        """Stack weights along the output rows (fused projections); they must share one format."""
        first = parts[0]
        same = all(p.group == first.group and p.bits == first.bits and p.codes.dtype == first.codes.dtype
                   and (p.offset is None) == (first.offset is None) for p in parts)
        if not same:
            raise ValueError("cannot stack quantized weights of different formats")
        offset = None if first.offset is None else torch.cat([p.offset for p in parts])
        return GroupQuant(torch.cat([p.codes for p in parts]), torch.cat([p.scale for p in parts]), offset,
                          first.group, first.bits)
