"""--topology files (mistral.rs format): parsing, precedence, errors, and per-layer quantization on a model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import greedy, save_tiny_model
from torch import nn

from engine import LLM
from engine.config import EngineConfig
from engine.errors import ModelLoadError
from engine.quant.linear import Int4Linear, Int8Linear
from engine.topology import LayerTopology, Topology, TopologyError, most_precise

MISTRALRS_EXAMPLE = """
# Early layers: lower quantization
0-8:
  isq: Q3K
# Middle layers
8-24:
  isq: Q4K
  device: cuda[0]
24-32:
  isq: Q6K
'/attn\\.q_proj$/':
  isq: Q4K
'/mlp\\.down_proj/':
  isq: FP8
"""


def test_parses_the_mistralrs_example_with_type_names_mapped_to_our_modes():
    topo = Topology.parse(MISTRALRS_EXAMPLE, source="isq.yml")
    assert topo.for_layer(0) == LayerTopology("int4", None)  # Q3K: at least its precision -> int4
    assert topo.for_layer(8) == LayerTopology("int4", "cuda:0")
    assert topo.for_layer(31) == LayerTopology("int8", None)  # Q6K -> int8
    assert topo.for_layer(32) is None  # not covered: follows --isq
    assert topo.isq_for("model.layers.30.mlp.down_proj.weight", "none") == "fp8"  # regex beats the range
    assert topo.isq_for("model.layers.30.mlp.up_proj.weight", "none") == "int8"
    assert topo.isq_for("model.layers.40.self_attn.k_proj.weight", "keep") == "keep"
    assert topo.isq_for("lm_head.weight", "none") == "none"
    assert topo.quantizes


def test_range_precedence_follows_mistralrs_higher_end_then_later_entry():
    topo = Topology.parse("0-10: {isq: int4}\n2-4: {isq: int8}\n")
    assert topo.for_layer(3).isq == "int4"  # 0-10 ends later than 2-4: it wins over the narrower range
    topo = Topology.parse("0-10: {isq: int4}\n3-10: {isq: int8}\n")
    assert [topo.for_layer(i).isq for i in (0, 3, 9)] == ["int4", "int8", "int8"]  # same end: later wins


def test_later_regex_wins_and_single_layers_and_devices_parse():
    topo = Topology.parse("'/proj/': {isq: int8}\n'/q_proj/': {isq: int4}\n4: {device: cpu}\n5: {device: 'cuda:1'}\n")
    assert topo.isq_for("model.layers.0.self_attn.q_proj.weight", "none") == "int4"
    assert topo.isq_for("model.layers.0.self_attn.o_proj.weight", "none") == "int8"
    assert topo.devices(7) == [None, None, None, None, "cpu", "cuda:1", None]
    assert not Topology.parse("0-2: {isq: none}\n").quantizes
    assert most_precise(["int4", "int8", "keep"]) == "int8"
    assert most_precise(["fp8", "none"]) == "none"


@pytest.mark.parametrize(("text", "message"), [
    ("0-8:\n  isq: Q9K\n", r"t\.yml: entry '0-8': unknown isq 'Q9K'"),
    ("8-8:\n  isq: int8\n", r"entry '8-8': a range start-end needs start < end"),
    ("abc:\n  isq: int8\n", r"entry 'abc': expected a layer number, a range start-end, or /regex/"),
    ("0-2:\n  quant: int8\n", r"entry '0-2': unknown key\(s\) quant"),
    ("0-2:\n  device: tpu\n", r"entry '0-2': unknown device 'tpu'"),
    ("'/x/':\n  device: cpu\n", r"'device' applies to whole layers"),
    ("'/(/':\n  isq: int8\n", r"invalid regular expression"),
    ("- 1\n- 2\n", r"expected a mapping"),
    ("0-2: [\n", r"not valid YAML"),
    ("0-2: int8\n", r"expected a mapping with 'isq' and/or 'device'"),
])
def test_bad_files_are_refused_naming_the_file_and_entry(text, message):
    with pytest.raises(TopologyError, match=message):
        Topology.parse(text, source="t.yml")


def test_engine_config_validates_the_file_at_the_edge(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ValueError, match="cannot read topology file .*nope.yml"):
        EngineConfig(topology=str(missing))
    bad = tmp_path / "bad.yml"
    bad.write_text("0-4:\n  isq: q1\n")
    with pytest.raises(ValueError, match=r"bad\.yml: entry '0-4': unknown isq 'q1'"):
        EngineConfig(topology=str(bad))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("topology"))


def _llm(path, topology_text: str, tmp_path, **options) -> LLM:
    file = tmp_path / "topology.yml"
    file.write_text(topology_text)
    return LLM(str(path), topology=str(file), dtype="f32", warmup=False, kv_cache_memory=4 * 2**20,
               **options)


def test_per_layer_modes_are_applied_and_the_rest_follows_isq(tiny_dir, tmp_path):
    llm = _llm(tiny_dir, "0: {isq: int8}\n1: {isq: Q4K}\n'/layers\\.1\\.mlp\\.down_proj/': {isq: none}\n",
               tmp_path)
    layers = llm.loaded.module.model.layers
    assert isinstance(layers[0].self_attn.qkv_proj, Int8Linear)
    assert isinstance(layers[0].mlp.down_proj, Int8Linear)
    assert isinstance(layers[1].self_attn.qkv_proj, Int4Linear)
    assert type(layers[1].mlp.down_proj) is nn.Linear  # the regex override
    assert type(layers[2].self_attn.qkv_proj) is nn.Linear  # not covered; --isq unset: dense safetensors
    assert type(llm.loaded.module.lm_head) is nn.Linear
    out = llm.generate([1, 2, 3, 4], greedy(6))[0]
    assert len(out.token_ids) == 6


def test_a_fused_matrix_takes_its_most_precise_part(tiny_dir, tmp_path):
    llm = _llm(tiny_dir, "'/q_proj/': {isq: int8}\n0-3: {isq: int4}\n", tmp_path)
    layer = llm.loaded.module.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, Int8Linear)  # q asks int8, k/v int4: the fused one is int8
    assert isinstance(layer.mlp.gate_up_proj, Int4Linear)


def test_uncovered_layers_follow_isq_and_topology_none_overrides_it(tiny_dir, tmp_path):
    llm = _llm(tiny_dir, "2: {isq: none}\n", tmp_path, isq="int8")
    layers = llm.loaded.module.model.layers
    assert isinstance(layers[0].mlp.gate_up_proj, Int8Linear)
    assert type(layers[2].mlp.gate_up_proj) is nn.Linear


def test_a_topology_keeping_everything_dense_matches_no_topology(tiny_dir, tmp_path):
    plain = LLM(str(tiny_dir), dtype="f32", warmup=False, kv_cache_memory=4 * 2**20)
    placed = _llm(tiny_dir, "0-3: {isq: none, device: cpu}\n", tmp_path)
    assert placed.loaded.module.layer_devices is None  # every layer where the model is: no hops
    ids = [5, 6, 7, 8, 9]
    assert torch.equal(plain.prompt_logits(ids), placed.prompt_logits(ids))


def test_ranges_beyond_the_model_and_missing_devices_fail_the_load(tiny_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"entry '2-9' names layers beyond the model's 3"):
        _llm(tiny_dir, "2-9: {isq: int8}\n", tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match=r"layer 1: device 'cuda:0' asked for, but CUDA is not available"):
            _llm(tiny_dir, "1: {device: 'cuda[0]'}\n", tmp_path)


@pytest.mark.gpu
def test_layers_split_between_cuda_and_cpu_match_the_all_cuda_model(tiny_dir, tmp_path):
    whole = LLM(str(tiny_dir), dtype="f32", device="cuda", warmup=False, kv_cache_memory=4 * 2**20)
    split = _llm(tiny_dir, "1-3: {device: cpu}\n", tmp_path, device="cuda")
    assert split.loaded.module.layer_devices[1].type == "cpu"
    assert split.core.runner.kv.keys[1].device.type == "cpu"
    ids = list(range(5, 40))
    torch.testing.assert_close(whole.prompt_logits(ids).cpu(), split.prompt_logits(ids).cpu(),
                               atol=1e-4, rtol=1e-4)
    assert whole.generate(ids, greedy(8))[0].token_ids == split.generate(ids, greedy(8))[0].token_ids
