"""The KV byte budget bounds the batch's real, padded buffers (engine/kv_budget.py, core.py)."""

import pytest

from mlx_server.config import EngineConfig
from mlx_server.engine.core import EngineCore
from mlx_server.engine.kv_budget import STEP, KVBudget
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams


def test_batch_bytes_pads_rows_to_the_longest_in_steps():
    b = KVBudget(layers=((100, None), (50, 512)), total=10**9)
    assert b.batch_bytes([]) == 0
    assert b.batch_bytes([10]) == b.bytes_for(STEP) == 100 * 256 + 50 * 256
    # Two rows padded to the longer one, rounded up to 512; the window caps its layer.
    assert b.batch_bytes([10, 300]) == 2 * (100 * 512 + 50 * 512)
    assert b.batch_bytes([600, 5, 5]) == 3 * (100 * 768 + 50 * 512)
    # While a 200-token prompt chunk is read, the window layer holds 512 + 199 tokens.
    assert b.batch_bytes([600, 5], chunk=200) == 2 * (100 * 768 + 50 * 711)
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
