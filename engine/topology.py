"""Topology: per-layer quantization and device placement from a YAML file in mistral.rs's format.

    0-8:                      # layers 0..7 (start inclusive, end exclusive)
      isq: Q4K
      device: cuda[0]
    8:                        # one layer
      isq: int8
    '/mlp\\.down_proj/':      # a regex over full tensor names (model.layers.3.mlp.down_proj.weight)
      isq: none

Resolution (as mistral.rs documents it): among the ranges that cover a layer, the one with the
highest end wins, and of those the one later in the file. Regex selectors are tried top to bottom
and the last match wins; a match overrides the layer's range for that tensor. Layers no range
covers keep the engine-wide `--isq` and device.

`isq` takes our modes (none, int8, int4, fp8) or mistral.rs's type names, mapped to the nearest mode
that keeps at least their precision: 2- to 4-bit types (Q2K, Q3K, Q4_0, Q4_1, Q4K, HQQ4, AFQ2-4) ->
int4; 5- to 8-bit types (Q5_0, Q5_1, Q5K, Q6K, Q8_0, Q8_1, Q8K, HQQ8, AFQ6, AFQ8) -> int8; FP8 -> fp8.
`device` is cpu, cuda, cuda[N] or cuda:N, and is given on layer ranges only (a tensor lives with its
layer).

Plain Python and PyYAML: parsed and validated once, with errors naming the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

MODES = ("none", "int8", "int4", "fp8")
# Least to most precise: the order a fused matrix uses when its parts ask for different modes
# ("keep" is the loader's mode for a GGUF's own quantization: Q4 stays 4-bit, the rest 8-bit).
PRECISION = ("int4", "keep", "fp8", "int8", "none")

_ALIASES = {
    **dict.fromkeys(("q2k", "q3k", "q4_0", "q4_1", "q4k", "hqq4", "afq2", "afq3", "afq4", "2", "3", "4"), "int4"),
    **dict.fromkeys(("q5_0", "q5_1", "q5k", "q6k", "q8_0", "q8_1", "q8k", "hqq8", "afq6", "afq8", "5", "6", "8"),
                    "int8"),
    **dict.fromkeys(("fp8", "f8e4m3", "fp8_e4m3"), "fp8"),
    **{mode: mode for mode in MODES},
}
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_DEVICE = re.compile(r"^(cpu|cuda)(?:\[(\d+)\]|:(\d+))?$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class TopologyError(ValueError):
    """A topology file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class LayerTopology:
    """What one entry sets; None leaves the engine-wide choice."""

    isq: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class _Range:
    start: int
    end: int
    order: int
    value: LayerTopology


@dataclass(frozen=True)
class Topology:
    """Parsed entries: layer ranges (in file order) and regex selectors (in file order)."""

    ranges: tuple[_Range, ...] = ()
    patterns: tuple[tuple[re.Pattern[str], LayerTopology], ...] = ()
    source: str = "<topology>"

    # --- parsing ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise TopologyError(f"cannot read topology file {str(file)!r}: {exc.strerror or exc}") from exc
        return cls.parse(text, source=str(file))

    @classmethod
    def parse(cls, text: str, source: str = "<topology>") -> Topology:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TopologyError(f"{source}: not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TopologyError(f"{source}: expected a mapping of layer ranges / regexes to settings, "
                                f"got {type(data).__name__}")
        ranges: list[_Range] = []
        patterns: list[tuple[re.Pattern[str], LayerTopology]] = []
        for order, (key, body) in enumerate(data.items()):
            where = f"{source}: entry {key!r}"
            value = _settings(body, where)
            text_key = str(key)
            if text_key.startswith("/") and text_key.endswith("/") and len(text_key) >= 2:
                if value.device is not None:
                    raise TopologyError(f"{where}: 'device' applies to whole layers; give it on a layer range")
                try:
                    patterns.append((re.compile(text_key[1:-1]), value))
                except re.error as exc:
                    raise TopologyError(f"{where}: invalid regular expression: {exc}") from exc
                continue
            start, end = _layer_span(key, where)
            ranges.append(_Range(start, end, order, value))
        return cls(tuple(ranges), tuple(patterns), source)

    # --- queries --------------------------------------------------------------------------------

    def for_layer(self, layer: int) -> LayerTopology | None:
        """The range entry that governs `layer`, or None when no range covers it."""
        covering = [r for r in self.ranges if r.start <= layer < r.end]
        best = max(covering, key=lambda r: (r.end, r.order), default=None)
        return best.value if best is not None else None

    def isq_for(self, tensor_name: str, default: str) -> str:
        """The mode of one checkpoint tensor: last matching regex, else its layer's range, else `default`."""
        for pattern, value in reversed(self.patterns):
            if value.isq is not None and pattern.search(tensor_name):
                return value.isq
        layer = layer_index(tensor_name)
        entry = self.for_layer(layer) if layer is not None else None
        if entry is not None and entry.isq is not None:
            return entry.isq
        return default

    def device_for(self, layer: int) -> str | None:
        entry = self.for_layer(layer)
        return entry.device if entry is not None else None

    def devices(self, num_layers: int) -> list[str | None]:
        return [self.device_for(i) for i in range(num_layers)]

    def check_layers(self, num_layers: int) -> None:
        """Refuse ranges that name layers the model does not have."""
        for r in self.ranges:
            if r.end > num_layers:
                span = f"{r.start}-{r.end}" if r.end - r.start > 1 else str(r.start)
                raise TopologyError(f"{self.source}: entry {span!r} names layers beyond the model's "
                                    f"{num_layers} (0-{num_layers})")

    @property
    def quantizes(self) -> bool:
        """Whether any entry asks for a quantized mode."""
        values = [r.value for r in self.ranges] + [v for _, v in self.patterns]
        return any(v.isq not in (None, "none") for v in values)


def most_precise(modes: list[str]) -> str:
    """The mode of a fused matrix whose parts ask for `modes`: the most precise of them."""
    return max(modes, key=PRECISION.index)


def layer_index(tensor_name: str) -> int | None:
    match = _LAYER.search(tensor_name)
    return int(match.group(1)) if match else None


def parse_isq(value: object, where: str) -> str:
    name = str(value).strip().lower()
    if name not in _ALIASES:
        raise TopologyError(f"{where}: unknown isq {value!r}: expected one of {', '.join(MODES)} "
                            "or a mistral.rs type such as Q4K, Q8_0, FP8")
    return _ALIASES[name]


def parse_device(value: object, where: str) -> str:
    """cpu, cuda, cuda[N], cuda:N -> a torch device string ("cpu", "cuda:N")."""
    text = str(value).strip().lower()
    match = _DEVICE.match(text)
    if match is None:
        raise TopologyError(f"{where}: unknown device {value!r}: expected cpu, cuda, cuda[N] or cuda:N")
    kind, ordinal = match.group(1), match.group(2) or match.group(3)
    if kind == "cpu":
        return "cpu"
    return f"cuda:{ordinal or 0}"


def _settings(body: object, where: str) -> LayerTopology:
    if body is None:
        return LayerTopology()
    if not isinstance(body, dict):
        raise TopologyError(f"{where}: expected a mapping with 'isq' and/or 'device', got {body!r}")
    unknown = sorted(set(map(str, body)) - {"isq", "device"})
    if unknown:
        raise TopologyError(f"{where}: unknown key(s) {', '.join(unknown)}: expected 'isq' and/or 'device'")
    isq = parse_isq(body["isq"], where) if body.get("isq") is not None else None
    device = parse_device(body["device"], where) if body.get("device") is not None else None
    return LayerTopology(isq, device)


def _layer_span(key: object, where: str) -> tuple[int, int]:
    if isinstance(key, bool):
        raise TopologyError(f"{where}: expected a layer number, a range start-end, or /regex/")
    if isinstance(key, int):
        if key < 0:
            raise TopologyError(f"{where}: layer numbers start at 0")
        return key, key + 1
    match = _RANGE.match(str(key))
    if match is None:
        if str(key).strip().isdigit():
            return int(str(key)), int(str(key)) + 1
        raise TopologyError(f"{where}: expected a layer number, a range start-end, or /regex/")
    start, end = int(match.group(1)), int(match.group(2))
    if start >= end:
        raise TopologyError(f"{where}: a range start-end needs start < end (end is exclusive)")
    return start, end
