"""deferred_step.py: the same tokens as mlx-lm's pipelined batch, each one step sooner."""

import mlx.core as mx
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.utils import load_model

from mlx_server.engine import deferred_step

PROMPTS = [[5, 9, 23, 7, 81, 3, 14, 2, 60, 33, 4], [11, 2, 40], [40, 41, 42, 43, 44, 45]]
MAX_TOKENS = [7, 12, 1]


class CountingModel:
    """The model, counting forward passes of one token per row (decode steps)."""

    def __init__(self, model):
        self.model, self.decodes = model, 0

    def __call__(self, inputs, cache=None, **kw):
        if inputs.shape[1] == 1:
            self.decodes += 1
        return self.model(inputs, cache=cache, **kw)

    def __getattr__(self, name):
        return getattr(self.model, name)


def _run(model, deferred, remove_at=None):
    """Insert the prompts one step apart; step to the end. Per uid: tokens, the number of
    decode forwards run before its first token came back, the finished cache's length and
    its token count."""
    counting = CountingModel(model)
    with deferred_step.deferring(deferred):
        gen = BatchGenerator(counting, completion_batch_size=4, prefill_batch_size=4)
        out, first_at, final = {}, {}, {}
        uids, step = [], 0
        while step < len(PROMPTS) or gen._generation_batch.uids or gen._unprocessed_sequences \
                or gen._prompt_batch.uids:
            if step < len(PROMPTS):
                uids += gen.insert([PROMPTS[step]], max_tokens=[MAX_TOKENS[step]])
            if remove_at is not None and step == remove_at:
                gen.remove([uids[0]])
                out.setdefault(uids[0], []).append("removed")
            _, rs = gen._next()
            for r in rs:
                out.setdefault(r.uid, []).append(r.token)
                first_at.setdefault(r.uid, counting.decodes)
                if r.finish_reason is not None:
                    final[r.uid] = (r.prompt_cache[0].offset, len(r.all_tokens))
            step += 1
            assert step < 100
    return [out[u] for u in uids], [first_at.get(u) for u in uids], [final.get(u) for u in uids]


@pytest.fixture(params=["tiny_gemma_dir", "tiny_llama_dir"])
def model(request):
    m, _ = load_model(request.getfixturevalue(request.param))
    m.set_dtype(mx.float32)
    return m


def test_same_tokens_fewer_forwards_before_each(model):
    stock, stock_first, stock_final = _run(model, deferred=False)
    new, new_first, new_final = _run(model, deferred=True)
    assert new == stock
    assert [len(t) for t in new] == MAX_TOKENS
    assert len({tuple(t) for t in new}) == len(new)  # outputs depend on the prompt
    # mlx-lm's pipeline ran the forward for a row's second token before handing out its
    # first; here the first comes back from the first forward that involves the row.
    assert all(n < s for n, s in zip(new_first, stock_first))
    # A finished row's cache holds exactly the tokens it is stored with, in both.
    for offset, n_tokens in stock_final + new_final:
        assert offset == n_tokens
    # Here the last sampled token is never fed: one forward fewer per finished row.
    for (s_off, _), (n_off, _) in zip(stock_final, new_final):
        assert n_off == s_off - 1


def test_removal_mid_generation(model):
    stock, _, _ = _run(model, deferred=False, remove_at=3)
    new, _, _ = _run(model, deferred=True, remove_at=3)
    assert new == stock
    assert new[0][-1] == "removed"


def test_outside_deferring_it_is_mlx_lm_batch(model):
    with deferred_step.deferring(False):
        gen = BatchGenerator(model)
    assert isinstance(gen._generation_batch, deferred_step.DeferredBatch)
    assert gen._generation_batch._deferred is False
