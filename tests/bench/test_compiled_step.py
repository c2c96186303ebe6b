"""bench/compiled_step.py: the fixed-shape cache decodes exactly as mlx-lm's caches do,
compiled or not, across the sliding window and with rows at different positions."""

import mlx.core as mx
import pytest
from mlx_lm import load

from bench import compiled_step as cs


@pytest.fixture(scope="module")
def tiny(tiny_gemma_dir):
    model, _ = load(str(tiny_gemma_dir))
    return model


def _vocab_prompt(model, n, seed):
    v = model.args.vocab_size
    return [2] + [3 + (seed * 101 + 37 * i) % (v - 3) for i in range(n - 1)]


@pytest.mark.parametrize("batch", [1, 3])
def test_tool_matches_stock_across_the_window(tiny_gemma_dir, batch, capsys):
    # window 16 (tests/tiny_model.py): 20 prompt + 24 new tokens wrap the ring buffers
    assert cs.main(["--model", str(tiny_gemma_dir), "--batch", str(batch), "--tokens", "24",
                    "--prompt", "20", "--reps", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("rep ")]
    assert len(lines) == 2
    for ln in lines:
        assert ln.count("(24/24 same)") == 3, ln


def _solo_state(step, model, prompt, cap):
    state = cs.empty_state(model, 1, cap, mx.float32)
    for t in prompt[:-1]:
        state = list(step(mx.array([[t]], dtype=mx.int32), *state)[1:])
    return state


@pytest.mark.parametrize("compiled", [False, True])
def test_rows_at_different_positions_decode_independently(tiny, compiled):
    step = cs.make_step(tiny)
    if compiled:
        step = mx.compile(step)
    prompts = [_vocab_prompt(tiny, 5, 1), _vocab_prompt(tiny, 23, 2)]  # one past the window
    cap, n = 64, 12
    solo = []
    for p in prompts:
        state = _solo_state(step, tiny, p, cap)
        tok, got = mx.array([[p[-1]]], dtype=mx.int32), []
        for _ in range(n):
            out = step(tok, *state)
            tok, state = out[0][:, None], list(out[1:])
            got.append(out[0].item())
        solo.append(got)
    # The same two rows in one batch: each keeps its own position and window.
    states = [_solo_state(step, tiny, p, cap) for p in prompts]
    state = [mx.concatenate(parts) for parts in zip(*states)]
    assert state[-1].tolist() == [4, 22]
    tok, rows = mx.array([[p[-1]] for p in prompts], dtype=mx.int32), [[], []]
    for _ in range(n):
        out = step(tok, *state)
        tok, state = out[0][:, None], list(out[1:])
        for r, t in zip(rows, out[0].tolist()):
            r.append(t)
    assert rows == solo
    # and solo equals mlx-lm's own caches
    from mlx_lm.models.cache import make_prompt_cache
    for p, want in zip(prompts, solo):
        cache = make_prompt_cache(tiny)
        y = mx.argmax(tiny(mx.array([p]), cache=cache)[:, -1, :], axis=-1)
        got = []
        for _ in range(n):
            got.append(y.item())
            y = mx.argmax(tiny(y[:, None], cache=cache)[:, -1, :], axis=-1)
        assert got == want


def test_real_model_compiled_step_keeps_greedy_tokens(capsys):
    # The embedded Gemma 3 270M (float32 on CPU, mlx_lm.load): a few tokens, two rows.
    assert cs.main(["--batch", "2", "--tokens", "6", "--prompt", "8", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    rep = next(ln for ln in out.splitlines() if ln.startswith("rep 0"))
    assert rep.count("(6/6 same)") == 3, rep
