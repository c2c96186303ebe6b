"""llama-server compatibility for the command line: the flags that mean nothing on MLX (or
are not implemented yet), and llama.cpp's `LLAMA_ARG_*` environment variables.

Names and environment variables follow llama.cpp's `common/arg.cpp`. A flag listed here
is accepted in every spelling llama-server accepts and recorded, with its value, so the
server can log once what it ignored; it never changes behavior.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CompatFlag:
    """One llama-server flag: its spellings, how many values it takes, its environment
    variables, its negative spellings, and why it is not applied (empty: no meaning here)."""

    names: str
    arity: int | str = 1  # 0: a switch, 1: one value, 2: two values, "?": an optional value
    env: str = ""
    neg: str = ""
    why: str = ""


_GPU = ""  # no meaning on MLX: unified memory, Metal picks its own kernels and threads
_SPEC = "not applied: the draft model shares the model's runtime settings"
_ROPE = "RoPE overrides are not applied; the model's own RoPE settings are used"
_SAMPLING = "server-wide sampling defaults are not applied; send them per request"
_NOT_YET = "not implemented yet"

FLAGS: tuple[CompatFlag, ...] = (
    # Offloading, threads, batching and memory placement: nothing to choose on MLX.
    CompatFlag("-ngl --gpu-layers --n-gpu-layers", 1, "LLAMA_ARG_N_GPU_LAYERS"),
    CompatFlag("-fa --flash-attn", "?", "LLAMA_ARG_FLASH_ATTN"),
    CompatFlag("--mlock", 0, "LLAMA_ARG_MLOCK"),
    CompatFlag("--mmap", 0, "LLAMA_ARG_MMAP", neg="--no-mmap"),
    CompatFlag("-t --threads", 1, "LLAMA_ARG_THREADS"),
    CompatFlag("-tb --threads-batch"),
    CompatFlag("--threads-http", 1, "LLAMA_ARG_THREADS_HTTP"),
    CompatFlag("-b --batch-size", 1, "LLAMA_ARG_BATCH"),
    CompatFlag("-ub --ubatch-size", 1, "LLAMA_ARG_UBATCH"),
    CompatFlag("-cmoe --cpu-moe", 0, "LLAMA_ARG_CPU_MOE"),
    CompatFlag("-ncmoe --n-cpu-moe", 1, "LLAMA_ARG_N_CPU_MOE"),
    CompatFlag("-kvo --kv-offload", 0, "LLAMA_ARG_KV_OFFLOAD", neg="-nkvo --no-kv-offload"),
    CompatFlag("-ot --override-tensor"),
    CompatFlag("-otd --override-tensor-draft"),
    CompatFlag("-cmoed --cpu-moe-draft", 0, "LLAMA_ARG_CPU_MOE_DRAFT"),
    CompatFlag("-ncmoed --n-cpu-moe-draft", 1, "LLAMA_ARG_N_CPU_MOE_DRAFT"),
    CompatFlag("--override-kv"),
    CompatFlag("--warmup", 0, neg="--no-warmup"),
    CompatFlag("--numa", 1, "LLAMA_ARG_NUMA"),
    CompatFlag("-dev --device", 1, "LLAMA_ARG_DEVICE"),
    CompatFlag("-sm --split-mode", 1, "LLAMA_ARG_SPLIT_MODE"),
    CompatFlag("-ts --tensor-split", 1, "LLAMA_ARG_TENSOR_SPLIT"),
    CompatFlag("-mg --main-gpu", 1, "LLAMA_ARG_MAIN_GPU"),
    CompatFlag("-fit --fit", 1, "LLAMA_ARG_FIT"),
    CompatFlag("-fitt --fit-target", 1, "LLAMA_ARG_FIT_TARGET"),
    CompatFlag("-fitc --fit-ctx", 1, "LLAMA_ARG_FIT_CTX"),
    CompatFlag("--repack", 0, "LLAMA_ARG_REPACK", neg="-nr --no-repack"),
    CompatFlag("--no-host", 0, "LLAMA_ARG_NO_HOST"),
    CompatFlag("--op-offload", 0, neg="--no-op-offload"),
    CompatFlag("--check-tensors", 0),
    CompatFlag("-C --cpu-mask"), CompatFlag("-Cr --cpu-range"), CompatFlag("--cpu-strict"),
    CompatFlag("--prio"), CompatFlag("--poll"), CompatFlag("-Cb --cpu-mask-batch"),
    CompatFlag("-Crb --cpu-range-batch"), CompatFlag("--cpu-strict-batch"),
    CompatFlag("--prio-batch"), CompatFlag("--poll-batch"),
    CompatFlag("-td --threads-draft"), CompatFlag("-tbd --threads-batch-draft"),
    CompatFlag("--rpc", 1, "LLAMA_ARG_RPC"),
    # KV-cache layout knobs of llama.cpp's own cache; ours is per sequence with a prefix index.
    CompatFlag("-kvu --kv-unified", 0, "LLAMA_ARG_KV_UNIFIED"),
    CompatFlag("--swa-full", 0, "LLAMA_ARG_SWA_FULL"),
    CompatFlag("--ctx-checkpoints --swa-checkpoints", 1, "LLAMA_ARG_CTX_CHECKPOINTS"),
    CompatFlag("-dt --defrag-thold", 1, "LLAMA_ARG_DEFRAG_THOLD"),
    CompatFlag("--context-shift", 0, "LLAMA_ARG_CONTEXT_SHIFT", neg="--no-context-shift"),
    CompatFlag("-cb --cont-batching", 0, "LLAMA_ARG_CONT_BATCHING",
               neg="-nocb --no-cont-batching"),
    CompatFlag("--cache-reuse", 1, "LLAMA_ARG_CACHE_REUSE"),
    CompatFlag("-sps --slot-prompt-similarity"),
    CompatFlag("--keep"),
    # Front-end and logging details we do not have.
    CompatFlag("--webui", 0, "LLAMA_ARG_WEBUI", neg="--no-webui"),
    CompatFlag("--perf", 0, "LLAMA_ARG_PERF", neg="--no-perf"),
    CompatFlag("--log-colors", "?", "LLAMA_LOG_COLORS"),
    CompatFlag("--log-prefix", 0, "LLAMA_LOG_PREFIX"),
    CompatFlag("--log-timestamps", 0, "LLAMA_LOG_TIMESTAMPS"),
    CompatFlag("-lv --verbosity --log-verbosity", 1, "LLAMA_LOG_VERBOSITY"),
    CompatFlag("--offline", 0, "LLAMA_OFFLINE"),  # we never download anything
    CompatFlag("--mmproj-offload", 0, "LLAMA_ARG_MMPROJ_OFFLOAD", neg="--no-mmproj-offload"),
    CompatFlag("--mmproj-auto", 0, "LLAMA_ARG_MMPROJ_AUTO", neg="--no-mmproj --no-mmproj-auto"),
    CompatFlag("-e --escape", 0, neg="--no-escape"),
    # Meaningful on MLX, not applied yet: accepted so launch lines keep working.
    CompatFlag("--rope-scaling", 1, "LLAMA_ARG_ROPE_SCALING_TYPE", why=_ROPE),
    CompatFlag("--rope-scale", 1, "LLAMA_ARG_ROPE_SCALE", why=_ROPE),
    CompatFlag("--rope-freq-base", 1, "LLAMA_ARG_ROPE_FREQ_BASE", why=_ROPE),
    CompatFlag("--rope-freq-scale", 1, "LLAMA_ARG_ROPE_FREQ_SCALE", why=_ROPE),
    CompatFlag("--yarn-orig-ctx", 1, "LLAMA_ARG_YARN_ORIG_CTX", why=_ROPE),
    CompatFlag("--yarn-ext-factor", 1, "LLAMA_ARG_YARN_EXT_FACTOR", why=_ROPE),
    CompatFlag("--yarn-attn-factor", 1, "LLAMA_ARG_YARN_ATTN_FACTOR", why=_ROPE),
    CompatFlag("--yarn-beta-slow", 1, "LLAMA_ARG_YARN_BETA_SLOW", why=_ROPE),
    CompatFlag("--yarn-beta-fast", 1, "LLAMA_ARG_YARN_BETA_FAST", why=_ROPE),
    # Speculative decoding's own flags are real (cli.py); these tune llama.cpp's draft runtime.
    CompatFlag("--spec-draft-p-split --draft-p-split", 1, "LLAMA_ARG_DRAFT_P_SPLIT", why=_SPEC),
    CompatFlag("-cd --ctx-size-draft", 1, "LLAMA_ARG_CTX_SIZE_DRAFT", why=_SPEC),
    CompatFlag("-ngld --gpu-layers-draft --n-gpu-layers-draft --spec-draft-ngl", 1,
               "LLAMA_ARG_N_GPU_LAYERS_DRAFT", why=_SPEC),
    CompatFlag("-devd --device-draft --spec-draft-device", why=_SPEC),
    CompatFlag("-ctkd --cache-type-k-draft --spec-draft-type-k", 1,
               "LLAMA_ARG_CACHE_TYPE_K_DRAFT LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K", why=_SPEC),
    CompatFlag("-ctvd --cache-type-v-draft --spec-draft-type-v", 1,
               "LLAMA_ARG_CACHE_TYPE_V_DRAFT LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_V", why=_SPEC),
    CompatFlag("--spec-replace", 2, why=_SPEC),
    CompatFlag("--slot-save-path", 1, why="slot save/restore is " + _NOT_YET),
    CompatFlag("--lora", why="LoRA adapters are " + _NOT_YET),
    CompatFlag("--lora-scaled", 2, why="LoRA adapters are " + _NOT_YET),
    CompatFlag("--lora-init-without-apply", 0, why="LoRA adapters are " + _NOT_YET),
    CompatFlag("--control-vector", why=_NOT_YET),
    CompatFlag("--control-vector-scaled", 2, why=_NOT_YET),
    CompatFlag("--control-vector-layer-range", 2, why=_NOT_YET),
    CompatFlag("-hf -hfr --hf-repo", 1, "LLAMA_ARG_HF_REPO", why="downloads are not supported; "
               "use --model with a local folder, a cached Hugging Face id or a .gguf file"),
    CompatFlag("-hff --hf-file", 1, "LLAMA_ARG_HF_FILE", why="downloads are not supported"),
    CompatFlag("-mu --model-url", 1, "LLAMA_ARG_MODEL_URL", why="downloads are not supported"),
    CompatFlag("-dr --docker-repo", 1, "LLAMA_ARG_DOCKER_REPO", why="downloads are not supported"),
    CompatFlag("--api-prefix", 1, "LLAMA_ARG_API_PREFIX", why=_NOT_YET),
    CompatFlag("--path", 1, "LLAMA_ARG_STATIC_PATH", why="static files are never served"),
    CompatFlag("--props", 0, "LLAMA_ARG_ENDPOINT_PROPS", why="POST /props is not supported"),
    CompatFlag("--prefill-assistant", 0, "LLAMA_ARG_PREFILL_ASSISTANT",
               neg="--no-prefill-assistant", why=_NOT_YET),
    CompatFlag("-sp --special", 0, why=_NOT_YET),
    CompatFlag("-r --reverse-prompt", why=_SAMPLING),
    CompatFlag("-n --predict --n-predict", 1, "LLAMA_ARG_N_PREDICT", why=_SAMPLING),
    CompatFlag("--image-min-tokens", 1, "LLAMA_ARG_IMAGE_MIN_TOKENS", why=_NOT_YET),
    CompatFlag("--image-max-tokens", 1, "LLAMA_ARG_IMAGE_MAX_TOKENS", why=_NOT_YET),
    *(CompatFlag(names, arity, env, why=_SAMPLING) for names, arity, env in (
        ("--temp", 1, ""), ("--top-k", 1, "LLAMA_ARG_TOP_K"), ("--top-p", 1, ""),
        ("--min-p", 1, ""), ("--top-nsigma", 1, ""), ("--typical", 1, ""),
        ("--repeat-penalty", 1, ""), ("--repeat-last-n", 1, ""), ("--presence-penalty", 1, ""),
        ("--frequency-penalty", 1, ""), ("-s --seed", 1, ""), ("--samplers", 1, ""),
        ("--sampling-seq --sampler-seq", 1, ""), ("--mirostat", 1, ""),
        ("--mirostat-lr", 1, ""), ("--mirostat-ent", 1, ""), ("--xtc-probability", 1, ""),
        ("--xtc-threshold", 1, ""), ("--dry-multiplier", 1, ""), ("--dry-base", 1, ""),
        ("--dry-allowed-length", 1, ""), ("--dry-penalty-last-n", 1, ""),
        ("--dry-sequence-breaker", 1, ""), ("--dynatemp-range", 1, ""),
        ("--dynatemp-exp", 1, ""), ("--ignore-eos", 0, ""), ("-l --logit-bias", 1, ""),
        ("--grammar", 1, ""), ("--grammar-file", 1, ""), ("-j --json-schema", 1, ""),
        ("-jf --json-schema-file", 1, ""),
    )),
)


class _Record(argparse.Action):
    """Record `flag value` in `namespace.compat` (flag, shown text, reason)."""

    def __init__(self, option_strings: Sequence[str], dest: str, why: str = "", **kw: Any):
        self.why = why
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if isinstance(values, list):
            values = " ".join(values)
        shown = option_string if values in (None, "") else f"{option_string} {values}"
        records = list(getattr(namespace, self.dest, None) or [])
        records.append((self.option_strings[-1], shown, self.why))
        setattr(namespace, self.dest, records)


def add_compat_flags(group: argparse._ArgumentGroup) -> None:
    """Register every flag of `FLAGS`, hidden from --help (they do nothing here)."""
    for flag in FLAGS:
        nargs: int | str = flag.arity
        kw: dict[str, Any] = {"nargs": nargs} if nargs != 1 else {}
        group.add_argument(*flag.names.split(), action=_Record, dest="compat", why=flag.why,
                           default=None, help=argparse.SUPPRESS, **kw)
        if flag.neg:
            group.add_argument(*flag.neg.split(), action=_Record, dest="compat", why=flag.why,
                               nargs=0, default=None, help=argparse.SUPPRESS)


# ---------------------------------------------------------------- environment variables

TRUTHY = frozenset({"on", "enabled", "true", "1"})
FALSEY = frozenset({"off", "disabled", "false", "0"})


@dataclass(frozen=True)
class EnvVar:
    """An environment variable standing for a flag (and its negative form, for switches);
    `split` turns a comma-separated value into one flag per item (`LLAMA_API_KEY`)."""

    name: str
    flag: str
    neg: str = ""
    split: bool = False


def compat_env_vars() -> list[EnvVar]:
    out = []
    for flag in FLAGS:
        for name in flag.env.split():
            neg = flag.neg.split()[-1] if flag.neg else ""
            out.append(EnvVar(name, flag.names.split()[-1], neg))
    return out


def env_args(parser: argparse.ArgumentParser, argv: Sequence[str], env: Mapping[str, str],
             variables: Iterable[EnvVar]) -> list[str]:
    """Arguments standing for the environment variables that are set, for flags the command
    line does not give (as in llama.cpp, the command line wins over the environment)."""
    actions = parser._option_string_actions
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    out: list[str] = []
    for var in variables:
        value = env.get(var.name)
        if value is None:
            continue
        spellings = set(actions[var.flag].option_strings)
        if var.neg:
            spellings |= set(actions[var.neg].option_strings)
        if given & spellings:
            continue
        out += _as_args(parser, actions[var.flag], var, value)
    return out


def _as_args(parser: argparse.ArgumentParser, action: argparse.Action, var: EnvVar,
             value: str) -> list[str]:
    if action.nargs == 0:
        if value.lower() in TRUTHY:
            return [var.flag]
        if value.lower() in FALSEY:
            return [var.neg] if var.neg else []
        parser.error(f"{var.name}: expected one of on/off/true/false/1/0, got {value!r}")
    if var.split:
        items = [item.strip() for item in value.split(",") if item.strip()]
        return [arg for item in items for arg in (var.flag, item)]
    return [var.flag, value]
