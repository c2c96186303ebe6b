"""Speculative decoding on the real default model: greedy output is the plain server's."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import start_server

PROMPTS = [
    # Repetitive: prompt lookup finds the continuation in the prompt.
    "def area(w, h):\n    return w * h\n\ndef area(w, h):\n    return w * h\n\ndef area(w, h):\n",
    "The capital of France is",
]


def _complete(srv, prompt: str) -> str:
    r = httpx.post(srv.base + "/v1/completions", timeout=300, json={
        "prompt": prompt, "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def _outputs(tmp_path_factory, *args: str) -> list[str]:
    """Alone, then both at once (one batch, rows of different lengths): the same text."""
    srv = start_server(tmp_path_factory, "--max-slots", "2", "--ctx-size", "1024", *args)
    try:
        alone = [_complete(srv, p) for p in PROMPTS]
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            together = list(pool.map(lambda p: _complete(srv, p), PROMPTS))
        assert together == alone
        return alone
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _outputs(tmp_path_factory)


def test_ngram_matches_plain(tmp_path_factory, plain):
    assert _outputs(tmp_path_factory, "--spec-type", "ngram-simple") == plain
    assert plain[0].strip()


def test_draft_model_matches_plain(tmp_path_factory, plain):
    from mlx_server.loading.default_model import default_model_path

    draft = str(default_model_path(progress=False))
    assert _outputs(tmp_path_factory, "-md", draft, "--draft-max", "4") == plain
