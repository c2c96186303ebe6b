from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_server.engine.text import IncrementalDecoder, StopMatcher


def run_stop(chunks, stops):
    m = StopMatcher(stops)
    out, hit = "", False
    for c in chunks:
        text, hit = m.feed(c)
        out += text
        if hit:
            return out, True
    rest, hit = m.flush()
    return out + rest, hit


def test_stop_across_chunks():
    assert run_stop(["Hello wo", "rld! STO", "P here"], ["STOP"]) == ("Hello world! ", True)


def test_stop_earliest_of_several():
    assert run_stop(["a b c d"], ["c", "b"]) == ("a ", True)


def test_partial_match_released_when_it_fails():
    m = StopMatcher(["STOP"])
    assert m.feed("ab ST") == ("ab ", False)
    assert m.feed("ART") == ("START", False)


def test_no_stops_passthrough():
    assert run_stop(["x", "y"], []) == ("xy", False)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="abcXY\n é", max_size=40),
    stops=st.lists(st.text(alphabet="abcXY", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_stop_matches_unsplit_reference(text, stops, cuts):
    """However the text is split into chunks, the output equals cutting at the first stop."""
    bounds = sorted(set(c for c in cuts if c <= len(text)))
    chunks = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)])]
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = (text[: min(hits)], True) if hits else (text, False)
    assert run_stop(chunks, stops) == expected


def test_decoder_matches_full_decode(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    text = "Émoji ☃ and ünïcödé: the quick brown fox.\n  def add(a, b)"
    ids = tok.encode(text, add_special_tokens=False)
    dec = IncrementalDecoder(tok, [])
    out = "".join(dec.add(t) for t in ids) + dec.flush()
    assert out == tok.decode(ids)


def test_decoder_never_splits_a_character(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    ids = tok.encode("☃☃☃", add_special_tokens=False)
    dec = IncrementalDecoder(tok, [])
    pieces = [dec.add(t) for t in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + dec.flush() == "☃☃☃"
