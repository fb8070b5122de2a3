"""Scheduler: one token budget over running-then-waiting requests, preemption, prefix admission.

The model is a fake that keeps "KV" as the token ids written into block slots, so a wrong block
table or a wrong prefix hit changes what it generates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidRequestError
from engine.kv_cache import KVCacheManager
from engine.request import Request, RequestStatus
from engine.scheduler import Scheduler, SchedulerConfig
from engine.scheduler_output import SchedulerOutput

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engine"


def make_request(request_id: str, prompt: list[int], max_tokens: int = 16) -> Request:
    return Request(request_id=request_id, prompt_token_ids=list(prompt), max_tokens=max_tokens)


def make_scheduler(
    num_blocks: int = 64,
    block_size: int = 4,
    budget: int = 2048,
    max_num_seqs: int = 32,
    prefix_caching: bool = True,
) -> Scheduler:
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix_caching)
    return Scheduler(SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=max_num_seqs), kv)


class FakeModel:
    """Writes each chunk's tokens into its block slots; samples a function of the slots it reads."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.slots: dict[tuple[int, int], tuple[int, int]] = {}  # (block, offset) -> (position, token)

    def execute(self, output: SchedulerOutput) -> dict[str, int]:
        sampled = {}
        bs = self.block_size
        for chunk in output.chunks:
            for j, token in enumerate(chunk.token_ids):
                p = chunk.start_position + j
                self.slots[(chunk.block_table[p // bs], p % bs)] = (p, token)
            if chunk.sample:
                end = chunk.start_position + len(chunk.token_ids)
                seen = [self.slots[(chunk.block_table[p // bs], p % bs)] for p in range(end)]
                assert [p for p, _ in seen] == list(range(end))
                sampled[chunk.request_id] = next_token([t for _, t in seen])
        return sampled


def next_token(tokens: list[int]) -> int:
    return sum((i + 1) * t for i, t in enumerate(tokens)) * 2654435761 % 1000


def step(scheduler: Scheduler, model: FakeModel, append_first: bool = False) -> SchedulerOutput:
    """One engine step: schedule, run, record; finish requests that reached max_tokens."""
    output = scheduler.schedule()
    sampled = model.execute(output)
    if not append_first:
        scheduler.update_from_output(output)
    for request_id, token in sampled.items():
        scheduler.get_request(request_id).output_token_ids.append(token)
    if append_first:
        scheduler.update_from_output(output)
    for request_id in sampled:
        request = scheduler.get_request(request_id)
        if len(request.output_token_ids) >= request.max_tokens:
            scheduler.finish_request(request_id)
    return output


def run_to_completion(scheduler: Scheduler, requests: list[Request], append_first: bool = False) -> int:
    model = FakeModel(scheduler.kv.block_size)
    for r in requests:
        scheduler.add_request(r)
    steps = 0
    while scheduler.has_unfinished():
        step(scheduler, model, append_first)
        steps += 1
        assert steps < 10_000, "the scheduler stopped making progress"
    return steps


def test_config_rejects_values_below_one():
    with pytest.raises(ValueError, match="max_num_batched_tokens must be >= 1, got 0"):
        SchedulerConfig(max_num_batched_tokens=0)
    with pytest.raises(ValueError, match="max_num_seqs must be >= 1, got -1"):
        SchedulerConfig(max_num_seqs=-1)


def test_admits_waiting_requests_in_arrival_order():
    scheduler = make_scheduler(budget=10)
    for name in "abc":
        scheduler.add_request(make_request(name, [1, 2, 3, 4, 5, 6]))
    output = scheduler.schedule()
    # a gets its 6 tokens, b the 4 left in the budget, c waits.
    assert [(c.request_id, len(c.token_ids), c.sample) for c in output.chunks] == [
        ("a", 6, True),
        ("b", 4, False),
    ]
    assert scheduler.running_ids() == ["a", "b"] and scheduler.num_waiting == 1
    assert [r.arrival for r in map(scheduler.get_request, "abc")] == [0, 1, 2]


def test_running_requests_are_served_before_waiting_ones():
    scheduler = make_scheduler(budget=8)
    model = FakeModel(4)
    scheduler.add_request(make_request("old", [1, 2, 3]))
    step(scheduler, model)
    scheduler.add_request(make_request("new", list(range(20))))
    output = step(scheduler, model)
    assert [(c.request_id, len(c.token_ids)) for c in output.chunks] == [("old", 1), ("new", 7)]
    assert output.chunks[0].start_position == 3 and output.chunks[0].sample


def test_long_prompt_is_chunked_while_decodes_get_a_token_every_step():
    scheduler = make_scheduler(num_blocks=256, block_size=16, budget=512)
    model = FakeModel(16)
    decoders = [make_request(f"d{i}", [i] * 10, max_tokens=100) for i in range(3)]
    for r in decoders:
        scheduler.add_request(r)
    step(scheduler, model)
    long = make_request("long", [7] * 3000, max_tokens=4)
    scheduler.add_request(long)

    prefill_chunks = []
    while long.num_computed_tokens < 3000:
        output = step(scheduler, model)
        per_request = {c.request_id: c for c in output.chunks}
        assert all(len(per_request[r.request_id].token_ids) == 1 for r in decoders)
        prefill_chunks.append(per_request["long"])
        assert output.num_batched_tokens <= 512
    assert [len(c.token_ids) for c in prefill_chunks] == [509] * 5 + [455]
    assert [c.start_position for c in prefill_chunks] == [509 * i for i in range(6)]
    assert [c.sample for c in prefill_chunks] == [False] * 5 + [True]
    assert len(long.output_token_ids) == 1


def test_max_num_seqs_caps_running_requests():
    scheduler = make_scheduler(max_num_seqs=2)
    for name in "abcd":
        scheduler.add_request(make_request(name, [1, 2]))
    output = scheduler.schedule()
    assert [c.request_id for c in output.chunks] == ["a", "b"]
    assert scheduler.num_running == 2 and scheduler.num_waiting == 2


def test_newest_running_request_is_preempted_to_the_front_and_recomputed():
    scheduler = make_scheduler(num_blocks=2, block_size=4, max_num_seqs=2, prefix_caching=False)
    model = FakeModel(4)
    a = make_request("a", [1, 2, 3, 4], max_tokens=2)
    b = make_request("b", [5, 6], max_tokens=2)
    c = make_request("c", [8], max_tokens=1)
    for r in (a, b, c):
        scheduler.add_request(r)
    step(scheduler, model)  # a and b prefill into one block each; c waits (max_num_seqs)

    output = step(scheduler, model)  # a's 5th token needs a second block: b, the newest, goes
    assert output.preempted == ["b"]
    assert [ch.request_id for ch in output.chunks] == ["a"]  # nothing admitted in a preempting step
    assert b.status is RequestStatus.WAITING and b.num_computed_tokens == 0 and b.num_preemptions == 1
    assert scheduler.num_waiting == 2
    assert len(b.output_token_ids) == 1

    output = step(scheduler, model)  # a finished last step; b comes back before c
    recompute = output.chunks[0]
    assert recompute.request_id == "b"
    assert recompute.start_position == 0 and recompute.token_ids == b.all_token_ids[:3]
    assert recompute.token_ids[2] == b.output_token_ids[0]


def test_request_preempts_itself_when_newest_and_the_step_admits_nothing():
    scheduler = make_scheduler(num_blocks=3, block_size=4, budget=5, prefix_caching=False)
    model = FakeModel(4)
    scheduler.add_request(make_request("a", [1, 2, 3, 4], max_tokens=4))
    scheduler.add_request(make_request("b", [5, 6, 7, 8, 9, 10, 11, 12], max_tokens=4))
    step(scheduler, model)  # a: 4 tokens, b: the first token of its prompt; one block each
    output = step(scheduler, model)  # a takes the last block; b, the newest, cannot grow
    assert [ch.request_id for ch in output.chunks] == ["a"] and output.preempted == ["b"]
    # The 4 tokens of budget left would fit b's first block again, but re-admitting a request in
    # the step that preempted it would only thrash.
    assert scheduler.running_ids() == ["a"] and scheduler.num_waiting == 1


@pytest.mark.parametrize("append_first", [False, True])
@pytest.mark.parametrize("prefix_caching", [False, True])
def test_constrained_run_generates_what_an_unconstrained_run_does(prefix_caching, append_first):
    def workload() -> list[Request]:
        shared = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
        return [
            make_request(f"r{i}", (shared if i % 2 else []) + [i, i + 1, i * 7 % 11] * (i % 3 + 1), 6 + i % 5)
            for i in range(8)
        ]

    reference = workload()
    run_to_completion(make_scheduler(num_blocks=1000, prefix_caching=False), reference)

    requests = workload()
    scheduler = make_scheduler(
        num_blocks=10, block_size=4, budget=7, max_num_seqs=4, prefix_caching=prefix_caching
    )
    run_to_completion(scheduler, requests, append_first)

    assert [r.output_token_ids for r in requests] == [r.output_token_ids for r in reference]
    assert all(r.status is RequestStatus.FINISHED for r in requests)
    assert sum(r.num_preemptions for r in requests) > 0
    kv = scheduler.kv
    kv.check_invariants()
    assert kv.num_used_blocks == 0
    assert (kv.stats().prefix_hits > 0) == prefix_caching


def test_prefix_hit_on_admission_skips_the_cached_tokens():
    scheduler = make_scheduler(block_size=4)
    model = FakeModel(4)
    prompt = list(range(10))
    scheduler.add_request(make_request("a", prompt, max_tokens=1))
    step(scheduler, model)
    assert not scheduler.has_unfinished()
    b = make_request("b", prompt + [42])
    scheduler.add_request(b)
    output = scheduler.schedule()
    assert b.num_cached_tokens == 8
    chunk = output.chunks[0]
    assert chunk.start_position == 8 and chunk.token_ids == [8, 9, 42]
    assert b.num_computed_tokens == 8


def test_finish_request_wherever_it_is():
    scheduler = make_scheduler(max_num_seqs=1)
    scheduler.add_request(make_request("running", [1, 2, 3]))
    scheduler.add_request(make_request("waiting", [4, 5]))
    scheduler.schedule()
    used = scheduler.kv.num_used_blocks
    assert used > 0

    finished = scheduler.finish_request("running")
    assert finished.status is RequestStatus.FINISHED and scheduler.num_running == 0
    assert scheduler.kv.num_used_blocks == 0
    assert scheduler.finish_request("waiting").status is RequestStatus.FINISHED
    assert scheduler.num_waiting == 0 and not scheduler.has_unfinished()
    assert scheduler.finish_request("running") is None  # aborting twice is not an error
    assert scheduler.finish_request("never-seen") is None


def test_update_skips_a_request_finished_during_its_step():
    scheduler = make_scheduler()
    scheduler.add_request(make_request("a", [1, 2, 3]))
    output = scheduler.schedule()
    request = scheduler.finish_request("a")
    scheduler.update_from_output(output)
    assert request.num_computed_tokens == 0
    scheduler.kv.check_invariants()


def test_add_request_rejects_a_request_bigger_than_the_pool():
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    scheduler.add_request(make_request("fits", [0] * 8, max_tokens=8))
    with pytest.raises(InvalidRequestError, match="needs 5 KV blocks .* only 4"):
        scheduler.add_request(make_request("big", [0] * 8, max_tokens=9))
    with pytest.raises(InvalidRequestError, match="already in use"):
        scheduler.add_request(make_request("fits", [1]))


_NO_TORCH_SCENARIO = """
import sys, types

class BlockHeavyImports:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "numpy", "transformers"}:
            raise ImportError(f"{name} must not be imported by the scheduler")
        return None

sys.meta_path.insert(0, BlockHeavyImports())
package = types.ModuleType("engine")
package.__path__ = [sys.argv[1]]  # a bare package: engine/__init__.py (which imports torch) never runs
sys.modules["engine"] = package

from engine.kv_cache import KVCacheManager
from engine.request import Request
from engine.scheduler import Scheduler, SchedulerConfig

kv = KVCacheManager(num_blocks=4, block_size=4)
scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=4), kv)
scheduler.add_request(Request("a", [1, 2, 3, 4, 5], max_tokens=2))
while scheduler.has_unfinished():
    output = scheduler.schedule()
    scheduler.update_from_output(output)
    for chunk in output.chunks:
        if chunk.sample:
            request = scheduler.get_request(chunk.request_id)
            request.output_token_ids.append(0)
            if len(request.output_token_ids) == request.max_tokens:
                scheduler.finish_request(request.request_id)
kv.check_invariants()
assert kv.num_used_blocks == 0
heavy = sorted(m for m in ("torch", "numpy", "transformers") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""


def test_scheduler_and_kv_cache_import_no_torch():
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCENARIO, str(ENGINE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
