"""bench/cpu_ab.py on a tiny model: both toggles run, restore, and keep greedy tokens."""

import pytest

from bench import cpu_ab
from mlx_server.engine import cpu_head


@pytest.mark.parametrize("off", ["blocked", "head", "panel"])
def test_cpu_ab_runs_and_restores(off, tiny_gemma_dir, capsys):
    rows = cpu_head.block_rows
    assert cpu_ab.main(["--off", off, "--model", str(tiny_gemma_dir), "--n", "3",
                        "--tokens", "4", "--reps", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{off}=on") == 2 and out.count(f"{off}=off") == 2
    assert "same greedy tokens in 2/2 reps" in out
    assert cpu_head.SPLIT is True and cpu_head.block_rows is rows  # left as loaded
