"""The command line: LLMKube's launch lines verbatim, llama-server's spellings and
environment variables, what is ignored and what takes effect."""

from __future__ import annotations

import shlex

import pytest

from mlx_server.cli import build_parser, parse_args
from mlx_server.cli_compat import FLAGS

MODEL = "/models/qwen3-4b-q4_k_m.gguf"
# LLMKube's Metal agent launch line for llama-server (issue 4), then its optional parts.
METAL_LINE = (f"--model {MODEL} --host 0.0.0.0 --port 8081 --n-gpu-layers 99 --ctx-size 2048 "
              "--metrics --parallel 4 --flash-attn on --mlock --threads 8 --batch-size 2048 "
              "--jinja")
OPTIONAL_PARTS = [
    "--rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 32768",
    "--cache-type-k q8_0 --cache-type-v q8_0",
    "--cpu-moe",
    "--n-cpu-moe 12",
    "--no-kv-offload",
    "--override-tensor 'blk\\..*\\.ffn_.*_exps\\.=CPU'",
    "--override-kv tokenizer.ggml.add_bos_token=bool:false",
    "--ubatch-size 512",
    "--no-warmup",
    "--reasoning-budget 0 --reasoning-budget-message 'Thinking budget exhausted.'",
    "--embedding --pooling last --cache-ram 0",
    "--reranking --embedding --pooling rank",
]
EXTRA_LINES = [
    "--alias qwen3 --api-key k1 --chat-template chatml",
    "--chat-template-kwargs '{\"enable_thinking\": false}' --reasoning-format deepseek",
    "--spec-type draft-mtp -md /models/draft.gguf --spec-draft-n-max 8 --spec-draft-p-min 0.75",
    "--mmproj /models/mmproj.gguf --slot-save-path /tmp --timeout 300",
    "-m x.gguf -c 4096 -np 2 -ngl 99 -fa on -t 4 -b 512 -ub 256 -a short -ctk q8_0 -ctv q4_0",
]
LLMKUBE_MLX_LINE = ("--model /models/Qwen3-4B-4bit --host 0.0.0.0 --port 8080 --max-slots 4 "
                    "--tool-call-format hermes --reasoning think")


def parse(line: str, env: dict[str, str] | None = None):
    return parse_args(shlex.split(line), env=env or {})


def test_metal_agent_line():
    c = parse(METAL_LINE)
    assert c.model.model == MODEL
    assert (c.server.host, c.server.port) == ("0.0.0.0", 8081)
    assert (c.engine.ctx_size, c.engine.max_slots) == (2048, 4)
    assert c.ignored_flags == ("--n-gpu-layers 99", "--flash-attn on", "--mlock", "--threads 8",
                               "--batch-size 2048")
    assert c.pending_flags == ()


@pytest.mark.parametrize("part", OPTIONAL_PARTS)
def test_metal_agent_line_with_optional_flags(part):
    c = parse(f"{METAL_LINE} {part}")
    assert c.engine.ctx_size == 2048 and c.model.model == MODEL
    recorded = c.ignored_flags + c.pending_flags
    for flag in shlex.split(part):
        if flag.startswith("--") and flag not in TAKES_EFFECT:
            assert any(r.startswith(flag) for r in recorded), (flag, recorded)


TAKES_EFFECT = {"--cache-type-k", "--cache-type-v", "--reasoning-budget",
                "--reasoning-budget-message", "--embedding", "--pooling", "--cache-ram",
                "--reranking"}


def test_optional_flags_take_effect():
    c = parse(f"{METAL_LINE} --cache-type-k q8_0 --cache-type-v q4_0")
    assert (c.engine.kv_cache_type_k, c.engine.kv_cache_type_v) == ("q8_0", "q4_0")
    c = parse(f"{METAL_LINE} --reasoning-budget 0 --reasoning-budget-message 'stop now'")
    assert (c.tools.reasoning_budget, c.tools.reasoning_budget_message) == (0, "stop now")
    c = parse(f"{METAL_LINE} --embedding --pooling last --cache-ram 0")
    assert c.model.embedding and c.model.pooling == "last"
    assert not c.engine.enable_prefix_cache  # --cache-ram 0: no prompt cache
    c = parse(f"{METAL_LINE} --reranking --embedding --pooling rank")
    assert c.model.embedding and c.model.reranking and c.model.pooling == "rank"
    assert any("--rope-scaling yarn" in p for p in parse(
        f"{METAL_LINE} --rope-scaling yarn").pending_flags)


@pytest.mark.parametrize("extra", EXTRA_LINES)
def test_user_extra_args_parse(extra):
    parse(f"{METAL_LINE} {extra}")


def test_extra_args_come_last_and_win():
    c = parse(f"{METAL_LINE} --ctx-size 8192 --parallel 2 --port 9000 -a mine")
    assert (c.engine.ctx_size, c.engine.max_slots, c.server.port) == (8192, 2, 9000)
    assert c.model.alias == "mine"


def test_short_forms():
    c = parse(EXTRA_LINES[-1])
    assert c.model.model == "x.gguf" and c.model.alias == "short"
    assert (c.engine.ctx_size, c.engine.max_slots) == (4096, 2)
    assert (c.engine.kv_cache_type_k, c.engine.kv_cache_type_v) == ("q8_0", "q4_0")
    assert c.ignored_flags == ("-ngl 99", "-fa on", "-t 4", "-b 512", "-ub 256")


def test_llmkube_mlx_server_line():
    c = parse(LLMKUBE_MLX_LINE)
    assert c.engine.max_slots == 4 and c.server.host == "0.0.0.0"
    assert (c.tools.tool_call_format, c.tools.reasoning) == ("hermes", "think")


def test_unknown_tool_format_and_reasoning_fail_clearly(capsys):
    for line in ("--tool-call-format nope", "--reasoning maybe"):
        with pytest.raises(SystemExit) as e:
            parse(line)
        assert e.value.code == 2
    assert "choose from" in capsys.readouterr().err


def test_unknown_flags_fail_like_llama_server():
    with pytest.raises(SystemExit):
        parse("--definitely-not-a-flag 1")


def test_spec_and_template_flags():
    c = parse(EXTRA_LINES[0])
    assert c.server.api_keys == ("k1",) and "<|im_start|>" in (c.model.chat_template or "")
    c = parse(EXTRA_LINES[1])
    assert dict(c.tools.chat_template_kwargs) == {"enable_thinking": False}
    assert c.tools.reasoning_format == "deepseek"
    c = parse(EXTRA_LINES[2])
    spec = c.engine.spec
    assert (spec.type, spec.draft_model, spec.draft_max, spec.p_min) == (
        "draft", "/models/draft.gguf", 8, 0.75) and c.pending_flags == ()
    assert parse("--spec-type ngram-map-k --draft-max 5").engine.spec.type == "ngram"
    assert parse("--spec-type draft-mtp").engine.spec.type == "none"
    assert "--spec-type draft-mtp" in parse("--spec-type draft-mtp").pending_flags[0]
    with pytest.raises(SystemExit):
        parse("--spec-type bogus")
    c = parse(EXTRA_LINES[3])
    assert c.model.mmproj == "/models/mmproj.gguf" and c.engine.request_timeout_s == 300


def test_chat_template_forms(tmp_path):
    f = tmp_path / "t.jinja"
    f.write_text("{{ messages[0]['content'] }}")
    assert parse(f"--chat-template {f}").model.chat_template == f.read_text()
    assert parse("--chat-template '{{ x }}'").model.chat_template == "{{ x }}"
    assert parse(f"--chat-template-file {f}").model.chat_template_file == str(f)
    for bad in ("--chat-template nosuchname", "--chat-template-file /no/such/file",
                "--chat-template-kwargs '[1]'", "--chat-template-kwargs '{'"):
        with pytest.raises(SystemExit):
            parse(bad)


def test_api_keys_from_flags_files_and_env(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k2\n\nk3\n")
    c = parse(f"--api-key k1 --api-key-file {keys} --api-key k1")
    assert c.server.api_keys == ("k1", "k2", "k3")
    assert parse("", env={"LLAMA_API_KEY": "a,b"}).server.api_keys == ("a", "b")
    with pytest.raises(SystemExit):
        parse("--api-key-file /no/such/file")


def test_env_vars_apply_unless_the_flag_is_given():
    env = {"LLAMA_ARG_CTX_SIZE": "4096", "LLAMA_ARG_N_PARALLEL": "3", "LLAMA_ARG_PORT": "9001",
           "LLAMA_ARG_MODEL": MODEL, "LLAMA_ARG_HOST": "0.0.0.0", "LLAMA_ARG_ALIAS": "env",
           "LLAMA_ARG_N_GPU_LAYERS": "99", "LLAMA_ARG_FLASH_ATTN": "on", "LLAMA_ARG_MLOCK": "1",
           "LLAMA_ARG_CACHE_TYPE_K": "q8_0", "LLAMA_ARG_THINK_BUDGET": "0",
           "LLAMA_ARG_ENDPOINT_SLOTS": "0", "LLAMA_ARG_MMAP": "false"}
    c = parse("", env)
    assert (c.engine.ctx_size, c.engine.max_slots, c.server.port) == (4096, 3, 9001)
    assert (c.model.model, c.server.host, c.model.alias) == (MODEL, "0.0.0.0", "env")
    assert c.engine.kv_cache_type_k == "q8_0" and c.tools.reasoning_budget == 0
    assert not c.server.slots_endpoint
    assert set(c.ignored_flags) == {"--n-gpu-layers 99", "--flash-attn on", "--mlock",
                                    "--no-mmap"}
    c = parse("-c 1024 --ctx-size=512 -np 2", env)  # the command line wins, in any spelling
    assert (c.engine.ctx_size, c.engine.max_slots) == (512, 2)
    with pytest.raises(SystemExit):
        parse("", {"LLAMA_ARG_MLOCK": "maybe"})


def test_every_compat_flag_and_env_var_parses():
    parser = build_parser()
    for flag in FLAGS:
        for name in flag.names.split() + flag.neg.split():
            values = {0: [], 1: ["1"], 2: ["a", "b"], "?": []}[flag.arity if name not in
                                                                 flag.neg.split() else 0]
            ns = parser.parse_args([name, *values])
            assert ns.compat[0][1].startswith(name)
        for var in flag.env.split():
            c = parse("", {var: "1"})
            assert c.ignored_flags or c.pending_flags, var


def test_defaults_and_edges():
    c = parse("")
    assert c.engine.max_slots == 4 and c.engine.ctx_size is None
    assert c.server.drain_timeout_s == 5.0 and c.server.slots_endpoint
    assert c.server.cors_origins == () and c.server.api_keys == ()
    assert parse("-np -1").engine.max_slots == 4  # llama.cpp's "auto"
    assert parse("-c 0").engine.ctx_size is None
    assert parse("--timeout 0").engine.request_timeout_s is None
    c = parse("--cors-origins http://a,http://b --cors-origins http://c --metrics-api-key m")
    assert c.server.cors_origins == ("http://a", "http://b", "http://c")
    assert c.server.metrics_api_keys == ("m",)
    assert parse("-v").log.level == "debug" and parse("--log-disable").log.level == "warning"
    assert parse("--no-slots").server.slots_endpoint is False
    assert parse("--no-jinja").ignored_flags == ("--no-jinja",)
    with pytest.raises(SystemExit):
        parse("--ssl-key-file k.pem")
