"""Markdown tables and ratios from a results dict (see bench.run for its shape)."""

from __future__ import annotations

from typing import Any

from bench.stats import ratio

OURS, MLXLM, RAW = "mlx-server", "mlx_lm.server", "raw"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def single_decode(t: dict[str, Any]) -> float | None:
    s = t.get("single")
    if s:
        return s.get("decode_tps_median")
    return None


def sweep_level(t: dict[str, Any], n: int) -> dict[str, Any] | None:
    for lv in (t.get("sweep") or {}).get("levels", []):
        if lv["concurrency"] == n:
            return lv
    return None


def ratios(res: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """(label, value, how to read it)."""
    tg = res.get("targets", {})
    ours, mlxlm = tg.get(OURS, {}), tg.get(MLXLM, {})
    raw = tg.get(RAW, {})
    raw_dec = raw.get("decode_tps_median")
    roof = res.get("machine", {}).get("roofline_tok_s")
    out: list[tuple[str, float | None, str]] = []

    def both(label: str, a, b, how: str):
        if a is not None or b is not None:
            out.append((label, ratio(a, b), how))

    if ours and mlxlm:
        both("ours / mlx_lm.server: single-stream decode tok/s",
             single_decode(ours), single_decode(mlxlm), ">1 = ours faster")
        both("ours / mlx_lm.server: single-stream TTFT",
             (ours.get("single") or {}).get("ttft_median"), (mlxlm.get("single") or {}).get("ttft_median"),
             "<1 = ours faster")
        for lv in (ours.get("sweep") or {}).get("levels", []):
            n = lv["concurrency"]
            other = sweep_level(mlxlm, n)
            if other:
                both(f"ours / mlx_lm.server: aggregate tok/s at N={n}", lv["agg_tok_s"], other["agg_tok_s"],
                     ">1 = ours faster")
        both("ours / mlx_lm.server: multi-turn last-turn TTFT",
             (ours.get("multiturn") or {}).get("last_turn_ttft"),
             (mlxlm.get("multiturn") or {}).get("last_turn_ttft"), "<1 = ours faster")
    for name in (OURS, MLXLM, "llama-server"):
        t = tg.get(name)
        if not t or t.get("error") or t.get("skipped"):
            continue
        short = "ours" if name == OURS else name
        if raw_dec:
            both(f"{short} / raw mlx-lm: single-stream decode tok/s", single_decode(t), raw_dec,
                 "1 = no serving overhead")
        lv8, lv1 = sweep_level(t, 8), sweep_level(t, 1)
        if lv8 and lv1:
            both(f"{short} at 8 concurrent / {short} single-stream: agg tok/s (sweep N=8 / N=1)",
                 lv8["agg_tok_s"], lv1["agg_tok_s"], "batching gain")
        elif lv8:
            both(f"{short} at 8 concurrent agg tok/s / {short} single-stream decode tok/s",
                 lv8["agg_tok_s"], single_decode(t), "batching gain")
        mt = t.get("multiturn") or {}
        if mt.get("last_over_cold") is not None:
            out.append((f"{short}: multi-turn last-turn TTFT / cold TTFT", mt["last_over_cold"],
                        "<1 = prefix cache reused"))
    if raw_dec and roof:
        out.append(("raw mlx-lm decode / roofline", ratio(raw_dec, roof), "fraction of bandwidth bound"))
    if ours and roof and single_decode(ours):
        out.append(("ours decode / roofline", ratio(single_decode(ours), roof), "fraction of bandwidth bound"))
    return out


def render(res: dict[str, Any]) -> str:
    L: list[str] = []
    m = res.get("machine", {})
    L.append(f"# Benchmark {res.get('run_id', '')}")
    L.append("")
    L.append(f"- model: `{res.get('model')}` ({res.get('model_type')}, {res.get('dtype')}, "
             f"{_f((m.get('weight_bytes') or 0) / 1e9)} GB of weights)")
    L.append(f"- mode: {'quick' if res.get('quick') else 'full'}; scenarios: {', '.join(res.get('scenarios', []))}")
    L.append(f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('mem_gb')} GB; "
             f"python {m.get('python')}, mlx {m.get('mlx')}, mlx-lm {m.get('mlx_lm')}")
    L.append(f"- BLAS: {res.get('blas')}")
    bw = m.get("bandwidth") or {}
    if bw:
        L.append(f"- memory bandwidth: {_f(bw.get('bandwidth_GBps'), 1)} GB/s best "
                 f"(numpy copy {_f(bw.get('numpy_copy_GBps'), 1)}, numpy read {_f(bw.get('numpy_read_GBps'), 1)}, "
                 f"mx copy {_f(bw.get('mx_copy_GBps'), 1)}, mx read {_f(bw.get('mx_read_GBps'), 1)}); "
                 f"decode roofline = {_f(m.get('roofline_tok_s'), 1)} tok/s")
    L.append("")
    for name, t in res.get("targets", {}).items():
        L.append(f"## {name}")
        L.append("")
        if t.get("cmd"):
            L.append(f"`{t['cmd']}`")
            L.append("")
        for n in t.get("notes", []):
            L.append(f"- note: {n}")
        if t.get("blas"):
            L.append(f"- BLAS in server process: {t['blas']}")
        if t.get("foreign_cpu_cores") is not None:
            L.append(f"- other processes' CPU use during this target: {t['foreign_cpu_cores']:.2f} cores")
        if t.get("skipped"):
            L.append(f"- skipped: {t['skipped']}")
            L.append("")
            continue
        if t.get("error"):
            L.append(f"- **error**: {t['error']}")
        if t.get("interrupted"):
            L.append("- **interrupted**: partial results")
        if name == RAW:
            L.append("")
            if t.get("runs"):
                L += _table(
                    ["prompt tok", "output tok per rep", "TTFT ms (median)", "decode tok/s (median)",
                     "mlx-lm reported gen tok/s", "load s"],
                    [[str(t.get("prompt_tokens")), ",".join(map(str, t.get("output_tokens") or [])), _ms(t.get("ttft_median")),
                      _f(t.get("decode_tps_median")), _f(t.get("mlx_lm_generation_tps_median")),
                      _f(t.get("load_s"), 1)]],
                )
            L.append("")
            continue
        if t.get("ready_s") is not None:
            L.append(f"- ready after {_f(t['ready_s'], 1)} s; api: {t.get('api')}; ignore_eos sent: "
                     f"{t.get('ignore_eos')}")
        L.append("")
        s = t.get("single")
        if s:
            L.append("**Single stream** (median of reps)")
            L.append("")
            L += _table(
                ["prompt tok", "output tok per rep", "TTFT ms", "decode tok/s", "end-to-end tok/s", "ITL ms",
                 "failures"],
                [[_f(s.get("prompt_tokens"), 0), ",".join(map(str, s.get("output_tokens", []))),
                  _ms(s.get("ttft_median")), _f(s.get("decode_tps_median")), _f(s.get("e2e_tps_median")),
                  _ms(s.get("itl_median")), str(s.get("failures"))]],
            )
            L.append("")
        sw = t.get("sweep")
        if sw:
            L.append("**Concurrency sweep**")
            L.append("")
            rows = []
            for lv in sw["levels"]:
                toks = lv.get("output_tokens_per_request") or []
                rows.append([str(lv["concurrency"]), str(lv["requests"]), str(lv["failures"]),
                             _f(lv["agg_tok_s"]), _ms(lv["ttft_p50"]), _ms(lv["ttft_p95"]),
                             _ms(lv["itl_p50"]), _ms(lv["itl_p95"]),
                             f"{min(toks)}-{max(toks)}" if toks else "-", _f(lv["wall_s"], 1)])
            L += _table(["N", "requests", "fail", "agg tok/s", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms",
                         "ITL p95 ms", "out tok/req", "wall s"], rows)
            errs = sorted({e for lv in sw["levels"] for e in lv.get("errors", [])})
            for e in errs[:3]:
                L.append(f"- error: {e}")
            L.append("")
        mt = t.get("multiturn")
        if mt:
            L.append("**Multi-turn chat** (history resent each turn)")
            L.append("")
            rows = []
            for i, tr in enumerate(mt["turns"]):
                rows.append([str(i + 1), str(tr.get("prompt_tokens")), str(tr.get("cached_tokens")),
                             _ms(tr.get("ttft")), str(tr.get("output_tokens")), tr.get("error") or ""])
            c = mt["cold"]
            rows.append(["cold (last turn, uncached)", str(c.get("prompt_tokens")), str(c.get("cached_tokens")),
                         _ms(c.get("ttft")), str(c.get("output_tokens")), c.get("error") or ""])
            L += _table(["turn", "prompt tok", "cached tok", "TTFT ms", "output tok", "error"], rows)
            L.append("")
            L.append(f"last turn / cold TTFT = {_x(mt.get('last_over_cold'))}")
            L.append("")
    rs = ratios(res)
    if rs:
        L.append("## Ratios")
        L.append("")
        L += _table(["ratio", "value", "reading"], [[a, _x(b), c] for a, b, c in rs])
        L.append("")
    return "\n".join(L)
