"""The panel kernel (engine/panels.py), the output projection through it (panel_head.py), and
its build (native.py)."""

import platform

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn
from mlx_lm.utils import load_model
from tiny_model import build_model

from mlx_server.engine import cpu_head, native, panel_head, panels

pytestmark = pytest.mark.skipif(panels.kernel() is None, reason="no C compiler here")


@pytest.mark.parametrize("vocab,cols", [(16, 8), (64, 48), (4096 + 16, 96), (48, 7)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matmul_against_numpy_and_pack_round_trip(vocab, cols, threads, monkeypatch):
    """Odd panel counts (one-panel tail), row counts around the 8-row blocks, ragged splits."""
    monkeypatch.setattr(panels, "threads", lambda: threads)
    monkeypatch.setattr(panels, "SPLIT_MIN", 0)
    monkeypatch.setattr(panels, "_POOL", None)
    monkeypatch.setattr(panels, "_CHUNK", 3)  # several chunks, the last one short
    rng = np.random.default_rng(vocab * cols)
    weight = rng.standard_normal((vocab, cols), dtype=np.float32)
    rows = weight.copy()
    panels.pack(weight)
    # element (v, k) now at panel v // 16, offset k * 16 + v % 16
    v, k = vocab - 1, cols - 2
    assert weight.reshape(-1)[(v // 16) * 16 * cols + k * 16 + v % 16] == rows[v, k]
    for n in (1, 3, 8, 9, 17):
        x = rng.standard_normal((n, cols), dtype=np.float32)
        got = panels.matmul(weight, x)
        np.testing.assert_allclose(got, x @ rows.T, rtol=1e-4, atol=1e-4)
    panels.unpack(weight)
    assert np.array_equal(weight, rows)


def test_a_row_gets_the_same_bits_in_any_batch():
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((1024, 640), dtype=np.float32)
    panels.pack(weight)
    x = rng.standard_normal((13, 640), dtype=np.float32)
    batch = panels.matmul(weight, x)
    for i in (0, 5, 7, 8, 12):
        assert np.array_equal(panels.matmul(weight, x[i:i + 1])[0], batch[i])
        assert np.array_equal(panels.matmul(weight, x[i:i + 3])[0], batch[i])


def _model(path, dtype=mx.float32):
    model, _ = load_model(path)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_model_logits_and_embeddings_survive_packing(arch, tied, tmp_path, monkeypatch):
    path = build_model(tmp_path / arch, arch, tie_word_embeddings=tied)
    model = _model(path)
    embed = model.model.embed_tokens
    tied = "lm_head" not in model  # Gemma's tiny weights always carry their own lm_head
    weight = np.array(embed.weight if tied else model.lm_head.weight)
    inputs = [mx.array([[3]]), mx.array([[3], [17], [42], [9], [5]]),
              mx.array([list(range(3, 40))])]  # one row, a decode step, a prompt
    ids = mx.array([[0, 15, 16, 399, 3]])
    before = [model(t) for t in inputs] + [embed(ids)]
    mx.eval(before)
    assert panel_head.install(model) and panel_head.installed(model)
    assert not panel_head.install(model)  # once
    calls = []
    real = panels.matmul
    monkeypatch.setattr(panels, "matmul", lambda w, x: calls.append(x.shape) or real(w, x))
    assert type(embed if tied else model.lm_head).__name__.startswith("_Panel")
    after = [model(t) for t in inputs] + [embed(ids)]
    # decode rows through the kernel; a prompt's 37 rows stay lazy in MLX (evaluated here)
    assert calls == [(1, 64), (5, 64)]
    for a, b in zip(after[:3], before[:3]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)
        assert mx.argmax(a, -1).tolist() == mx.argmax(b, -1).tolist()
    assert mx.array_equal(after[3], before[3]).item()  # lookups gather exactly
    assert panel_head.uninstall(model) == 1 and not panel_head.installed(model)
    assert np.array_equal(np.array(embed.weight if tied else model.lm_head.weight), weight)
    assert type(embed) is nn.Embedding and (tied or type(model.lm_head) is nn.Linear)
    assert mx.array_equal(model(inputs[2]), before[2]).item()


def test_not_installed_where_it_cannot_apply(tiny_llama_dir, tmp_path, monkeypatch):
    assert not panel_head.install(_model(tiny_llama_dir, mx.bfloat16))
    odd = build_model(tmp_path / "odd", "llama", vocab_size=401)  # not whole panels
    assert not panel_head.install(_model(odd))
    monkeypatch.setattr(panels, "kernel", lambda: None)  # no compiler
    assert not panel_head.install(_model(tiny_llama_dir))


def test_loader_takes_panels_else_blas(tiny_llama_dir, monkeypatch):
    from mlx_server.engine.loader import load_model as load

    loaded = load(tiny_llama_dir, dtype="float32")
    assert loaded.sync_forward and panel_head.installed(loaded.model)
    monkeypatch.setattr(panels, "kernel", lambda: None)
    loaded = load(tiny_llama_dir, dtype="float32")
    assert not panel_head.installed(loaded.model)
    assert loaded.sync_forward == (cpu_head._SGEMV is not None)


def test_native_build_is_cached_and_failures_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_SERVER_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_BUILT", {})
    real_compiler = native.compiler
    calls = []
    real = native._compile
    monkeypatch.setattr(native, "_compile", lambda *a: calls.append(a[2]) or real(*a))
    lib = native.load("panel_head")
    assert lib is not None and calls == [native.FLAG_SETS[0]]
    assert len(list((tmp_path / "native").glob("panel_head-*.so"))) == 1
    monkeypatch.setattr(native, "_BUILT", {})
    assert native.load("panel_head") is not None and len(calls) == 1  # from the cache
    # a compiler that fails every flag set: None, nothing left behind
    monkeypatch.setattr(native, "_BUILT", {})
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path / "other")
    monkeypatch.setattr(native, "compiler", lambda: "false")
    assert native.load("panel_head") is None
    assert len(calls) == 1 + len(native.FLAG_SETS)
    assert list((tmp_path / "other").glob("*")) == []
    monkeypatch.setattr(native, "_BUILT", {})
    monkeypatch.setattr(native, "compiler", lambda: None)
    assert native.load("panel_head") is None
    # a cache folder that cannot be written (read-only home): built in a temporary one
    monkeypatch.setattr(native, "_BUILT", {})
    monkeypatch.setattr(native, "compiler", real_compiler)
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setattr(native, "cache_dir", lambda: blocked / "native")  # under a file
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert native.load("panel_head") is not None
    assert len(list((tmp_path / "tmp").glob("mlx-server-native-*/panel_head-*.so"))) == 1
    # MLX_SERVER_NATIVE=0: nothing built or loaded, even from the cache
    monkeypatch.setattr(native, "_BUILT", {})
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path / "native")  # built above
    monkeypatch.setattr(native, "compiler", real_compiler)
    monkeypatch.setattr(native, "ENABLED", False)
    assert native.load("panel_head") is None


def test_every_row_flag_takes_the_kernel_for_many_rows(monkeypatch):
    """A speculative verify step reads every row: the kernel, not the lazy form."""
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((64, 32), dtype=np.float32)
    packed = weight.copy()
    panels.pack(packed)
    x = mx.array(rng.standard_normal((2, 20, 32), dtype=np.float32))  # 40 rows
    calls = []
    real = panels.matmul
    monkeypatch.setattr(panels, "matmul", lambda w, r: calls.append(r.shape) or real(w, r))
    lazy = panel_head._project(packed, mx.array(packed), x)
    assert calls == []
    with panels.EVERY_ROW.set(True):
        now = panel_head._project(packed, mx.array(packed), x)
    assert calls == [(40, 32)] and not panels.EVERY_ROW
    ref = np.array(x) @ weight.T
    np.testing.assert_allclose(np.array(lazy), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.array(now), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 targets")
def test_no_kernel_for_a_cpu_without_avx512(tmp_path, monkeypatch):
    """Built for baseline x86-64 the kernel was ~20x slower than BLAS: it refuses to build."""
    monkeypatch.setenv("MLX_SERVER_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_BUILT", {})
    monkeypatch.setattr(native, "FLAG_SETS", (["-O3", "-march=x86-64"],))
    assert native.load("panel_head") is None
    monkeypatch.setattr(native, "_BUILT", {})
    monkeypatch.setattr(native, "FLAG_SETS", (["-O3", "-march=x86-64", "-mavx512f"],))
    assert native.load("panel_head") is not None
