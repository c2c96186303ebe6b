"""A chat request made ready for the engine: messages rendered, output planned, sampling set.

Chat completions, Anthropic's Messages and OpenAI's Responses all come through here (the
latter two translated into a `ChatCompletionRequest` first), so the three wire formats
share one path: templates, tool parsers, the reasoning split, grammars, the prefix cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from mlx_server.config import ToolConfig
from mlx_server.engine.types import EngineClient, EngineError, PromptImage, SamplingParams
from mlx_server.server.chat_output import ChatPlan, plan_chat
from mlx_server.server.errors import from_engine_error
from mlx_server.server.images import attach_images, load_images
from mlx_server.server.messages import normalize_messages, template_inputs
from mlx_server.server.protocol import ChatCompletionRequest
from mlx_server.server.routes.common import tokenize_off_loop
from mlx_server.server.sampling import resolve_max_tokens, sampling_params
from mlx_server.vision.images import ImagePolicy


@dataclass
class PreparedChat:
    """What the engine runs (`prompt`, `params`) and how its output is read (`plan`)."""

    plan: ChatPlan
    prompt: list[int]
    params: SamplingParams
    images: tuple[PromptImage, ...] = ()  # where each image's tokens sit in `prompt`


async def render_chat_request(
    engine: EngineClient, cfg: ToolConfig, req: ChatCompletionRequest,
    prompt_param: str = "messages", keep_images: bool = False,
) -> tuple[ChatPlan, list[int]]:
    """The output plan and the templated, tokenized prompt (all `count_tokens` needs).
    `keep_images`: the template places the images (see `prepare_chat`)."""
    tools, template_kwargs = template_inputs(req)
    messages = normalize_messages(req.messages, keep_images)
    try:
        plan = plan_chat(req, engine.model_info, cfg, messages, tools, template_kwargs,
                         partial(engine.encode, add_special_tokens=False))
        prompt = await tokenize_off_loop(engine.render_chat, plan.messages, plan.template_tools,
                                         plan.template_kwargs)
        plan.after_render(engine.decode(prompt[-8:]), partial(engine.encode,
                                                              add_special_tokens=False))
    except EngineError as exc:
        raise from_engine_error(exc, prompt_param) from exc
    return plan, prompt


async def prepare_chat(
    engine: EngineClient, cfg: ToolConfig, req: ChatCompletionRequest,
    prompt_param: str = "messages", image_policy: ImagePolicy | None = None,
) -> PreparedChat:
    """`image_policy`: where images may come from (None: data: URLs only)."""
    images = await load_images(engine, req.messages, image_policy)
    plan, prompt = await render_chat_request(engine, cfg, req, prompt_param, bool(images))
    prompt, prompt_images = await attach_images(engine, prompt, images, prompt_param)
    info = engine.model_info
    try:
        max_tokens = resolve_max_tokens(req.max_completion_tokens or req.max_tokens,
                                        len(prompt), info.ctx_size)
    except EngineError as exc:
        raise from_engine_error(exc, prompt_param) from exc
    top_n = req.top_logprobs or 0
    params = sampling_params(req, max_tokens=max_tokens, vocab_size=info.vocab_size,
                             top_logprobs=top_n if req.logprobs else None)
    return PreparedChat(plan, prompt, params.replace(grammar=plan.grammar, thought=plan.thought),
                        prompt_images)
