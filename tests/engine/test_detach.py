"""Stored caches must not pin the batch buffers they were extracted from."""

import gc

import mlx.core as mx
import pytest
from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, KVCache, RotatingKVCache

from mlx_server.engine.core import detach


def _filled(kind, n_tokens=600, batch=8):
    caches = [kind() for _ in range(batch)]
    for c in caches:
        k = mx.random.normal((1, 2, n_tokens, 64))
        c.update_and_fetch(k, k)
    merged = caches[0].merge(caches)
    mx.eval(merged.keys, merged.values)
    return merged


@pytest.mark.parametrize("kind", [KVCache, lambda: RotatingKVCache(max_size=256)])
def test_detached_entry_frees_the_batch(kind):
    gc.collect()
    base = mx.get_active_memory()
    batch = _filled(kind)
    assert isinstance(batch, (BatchKVCache, BatchRotatingKVCache))
    batch_bytes = mx.get_active_memory() - base
    entry = detach([batch.extract(3)])
    del batch
    gc.collect()
    held = mx.get_active_memory() - base
    # One sequence's share of the batch, not the whole batch.
    assert held <= batch_bytes / 4, (held, batch_bytes)
    assert entry[0].keys.shape[0] == 1
