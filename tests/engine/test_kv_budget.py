"""The KV byte budget bounds the batch's real, padded buffers (engine/kv_budget.py, core.py)."""

import pytest

from mlx_server.config import EngineConfig
from mlx_server.engine.core import EngineCore
from mlx_server.engine.kv_budget import STEP, KVBudget, padded_length
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams


def test_padded_length_rounds_up_and_keeps_one_spare_step():
    assert [padded_length(n) for n in (1, 255, 256, 257, 512)] == [512, 512, 512, 768, 768]


def test_batch_bytes_pads_rows_to_the_longest_in_steps():
    b = KVBudget(layers=((100, None), (50, 512)), total=10**9)
    assert b.batch_bytes([]) == 0
    assert b.batch_bytes([10]) == b.bytes_for(2 * STEP) == 100 * 512 + 50 * 512
    # Two rows padded to the longer one (768 tokens); the window caps its layer.
    assert b.batch_bytes([10, 300]) == 2 * (100 * 768 + 50 * 512)
    assert b.batch_bytes([600, 5, 5]) == 3 * (100 * 1024 + 50 * 512)
    # While a 200-token prompt chunk is read, the window layer holds 512 + 199 tokens.
    assert b.batch_bytes([600, 5], chunk=200) == 2 * (100 * 1024 + 50 * 711)
    assert b.batch_bytes([10, 300]) > b.bytes_for(10) + b.bytes_for(300)


LONG = [7 + i % 50 for i in range(200)]  # 200 prompt + 40 new: one 256-token step
SHORT = [[11 + i, 12, 13, 14, 15, 16] for i in range(4)]


def _run(core, prompts, n, check=None):
    outs = {}
    for i, p in enumerate(prompts):
        sp = SamplingParams(max_tokens=n[i], temperature=0.0, ignore_eos=True)
        core.submit(GenerationRequest(f"q{i}", p, sp),
                    lambda o, i=i: outs.setdefault(i, []).extend(o.token_ids))
    while core.has_work():
        core.step()
        if check:
            check(core)
    return [outs[i] for i in range(len(prompts))]


@pytest.mark.parametrize("arch", ["tiny_llama_dir", "tiny_gemma_dir"])
def test_padded_batch_stays_within_budget_and_outputs_match_alone(arch, request):
    loaded = load_model(request.getfixturevalue(arch))
    n = [40] + [20] * len(SHORT)
    prompts = [LONG, *SHORT]
    alone = [_run(EngineCore(loaded, EngineConfig(max_slots=8)), [p], [k])[0]
             for p, k in zip(prompts, n)]
    chunk = 4 * EngineConfig().prefill_step_size  # the longest prompt chunk a step reads
    per_row = EngineCore(loaded, EngineConfig()).budget.batch_bytes([len(LONG) + 40], chunk)
    # The reservations of all five rows fit; five rows padded to the long one do not.
    total = int(2.5 * per_row)
    core = EngineCore(loaded, EngineConfig(max_slots=8, cache_bytes=total))
    assert sum(core.budget.bytes_for(len(p) + k) for p, k in zip(prompts, n)) < total
    peaks = []

    def within_budget(c):
        held = c.gen.prompt_cache_nbytes + c.prefix.nbytes
        peaks.append(held)
        assert held <= total, (held, total, len(c.running))
        assert c.stats()["kv_reserved_bytes"] <= total

    got = _run(core, prompts, n, within_budget)
    assert got == alone
    assert max(peaks) > per_row  # rows did share the batch


def test_a_row_joining_as_another_leaves_prefill_stays_within_its_bound(tiny_llama_dir):
    """mlx-lm keeps the room a departed row left in the prompt batch and grows past it by
    whole steps: 375 prompt tokens then sit in 696 (184 + 512), more than 384 rounded up."""
    core = EngineCore(load_model(tiny_llama_dir), EngineConfig(max_slots=4))
    chunk = 4 * core.config.prefill_step_size
    seen = []
    for i, n in enumerate((329, 376)):  # the second arrives as the first finishes its prompt
        sp = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        core.submit(GenerationRequest(f"r{i}", [5 + j % 50 for j in range(n)], sp), lambda o: None)
        core.step()
    while core.has_work():
        rows = [len(s.prompt) + s.max_tokens for s in core.running.values()]
        seen.append((core.gen.prompt_cache_nbytes, core.budget.batch_bytes(rows, chunk), rows))
        core.step()
    assert all(held <= bound for held, bound, _ in seen), seen
    # The rows' final lengths rounded up to a step alone would not have held them.
    per_token = core.budget.bytes_per_token
    assert max(held / (per_token * len(rows)) for held, _, rows in seen) > 512


def test_a_waiting_request_leaves_the_prefix_cache_alone(tiny_llama_dir):
    """Evicting entries for a request that still cannot start would only lose them."""
    loaded = load_model(tiny_llama_dir)
    per_row = EngineCore(loaded, EngineConfig()).budget.batch_bytes([len(LONG) + 40])
    core = EngineCore(loaded, EngineConfig(max_slots=4, cache_bytes=int(1.5 * per_row)))
    _run(core, [SHORT[0]], [8])  # its cache is kept for later requests
    kept = core.prefix.nbytes
    assert 0 < kept <= core.budget.total - per_row
    outs: dict = {}
    for i in range(2):  # one row fits beside the kept entry; two rows never fit
        sp = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
        core.submit(GenerationRequest(f"w{i}", LONG, sp),
                    lambda o, i=i: outs.setdefault(i, []).extend(o.token_ids))
    core.step()
    assert len(core.running) == 1 and len(core.waiting) == 1
    assert core.prefix.nbytes >= kept
    while core.has_work():
        core.step()
    assert len(outs[0]) == len(outs[1]) == 40
