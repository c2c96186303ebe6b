"""Pooling: read from sentence-transformers configs (both formats), and computed on padded rows."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_server.embeddings.pooling import PoolingConfigError, model_pooling, normalize, pool


def _folder(tmp_path, pooling_cfg, modules=True):
    if modules:
        (tmp_path / "modules.json").write_text(json.dumps([
            {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"}]))
        d = tmp_path / "pool"
    else:
        d = tmp_path / "1_Pooling"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(pooling_cfg))
    return tmp_path


@pytest.mark.parametrize("cfg, expected", [
    ({"pooling_mode": "lasttoken"}, "last"),
    ({"pooling_mode": ["cls"]}, "cls"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"pooling_mode_cls_token": True}, "cls"),
    ({"pooling_mode_max_tokens": True}, "max"),
    ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean_sqrt_len"),
])
def test_model_pooling_reads_both_config_formats(tmp_path, cfg, expected):
    assert model_pooling(_folder(tmp_path, cfg)) == expected


def test_legacy_folder_without_modules_json(tmp_path):
    assert model_pooling(_folder(tmp_path, {"pooling_mode_cls_token": True}, False)) == "cls"


def test_no_config_means_none(tmp_path):
    assert model_pooling(tmp_path) is None


@pytest.mark.parametrize("cfg", [{"pooling_mode": ["mean", "max"]},
                                 {"pooling_mode_weightedmean_tokens": True}])
def test_unsupported_pooling_is_a_clear_error(tmp_path, cfg):
    with pytest.raises(PoolingConfigError, match="--pooling"):
        model_pooling(_folder(tmp_path, cfg))


def test_pool_ignores_padding():
    hidden = mx.array(np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2))
    mask = mx.array([[1, 1, 1], [1, 1, 0]])
    lengths = mx.array([3, 2])
    h = np.array(hidden)
    np.testing.assert_allclose(pool(hidden, mask, lengths, "mean"),
                               [h[0].mean(0), h[1, :2].mean(0)])
    np.testing.assert_allclose(pool(hidden, mask, lengths, "cls"), [h[0, 0], h[1, 0]])
    np.testing.assert_allclose(pool(hidden, mask, lengths, "last"), [h[0, 2], h[1, 1]])
    np.testing.assert_allclose(pool(hidden, mask, lengths, "max"), [h[0].max(0), h[1, :2].max(0)])
    np.testing.assert_allclose(pool(hidden, mask, lengths, "mean_sqrt_len"),
                               [h[0].sum(0) / np.sqrt(3), h[1, :2].sum(0) / np.sqrt(2)],
                               rtol=1e-6)


def test_normalize_gives_unit_rows():
    x = normalize(mx.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(np.array(x), [[0.6, 0.8], [0.0, 0.0]])
