"""Images in chat messages (`image_url` content parts): read, checked, and spliced into the
prompt for vision models. Reading can fetch URLs, so it runs off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool

from mlx_server.config import ServerConfig
from mlx_server.engine.types import EngineClient, EngineError, PromptImage
from mlx_server.server.errors import APIError, from_engine_error, invalid
from mlx_server.server.protocol import ChatMessage
from mlx_server.vision.images import ImageData, ImageError, ImagePolicy, load_image

MAX_IMAGES = 16  # per request
logger = logging.getLogger(__name__)


def image_policy(server: ServerConfig) -> ImagePolicy:
    return ImagePolicy(allow_urls=server.allow_image_urls, max_bytes=server.max_image_bytes,
                       timeout_s=server.image_fetch_timeout_s)


def _image_parts(messages: Sequence[ChatMessage]) -> list[tuple[str, str | None]]:
    """(param, url) of every image_url part, in message order."""
    found = []
    for i, m in enumerate(messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if part.type == "image_url":
                    url = part.image_url.url if part.image_url is not None else None
                    found.append((f"messages.{i}.content.{j}", url))
    return found


async def load_images(engine: EngineClient, messages: Sequence[ChatMessage],
                      policy: ImagePolicy | None) -> list[ImageData]:
    """The request's images, read and checked; a 400 naming the part for any bad one."""
    parts = _image_parts(messages)
    if not parts:
        return []
    if not engine.model_info.vision:
        raise APIError(400, "Invalid content part: this model does not accept images.",
                       param=parts[0][0], code="unsupported_content")
    if len(parts) > MAX_IMAGES:
        raise invalid(f"At most {MAX_IMAGES} images per request; got {len(parts)}.", "messages")
    images = []
    for param, url in parts:
        if not url:
            raise invalid(f"Missing required parameter: '{param}.image_url.url'.",
                          f"{param}.image_url.url", "missing_required_parameter")
        try:
            images.append(await run_in_threadpool(load_image, url, policy or ImagePolicy()))
        except ImageError as e:
            # Logged: a refused URL may be someone probing for internal addresses (SSRF).
            logger.warning("image refused at %s: %s", param, e,
                           extra={"event": {"event": "image_refused", "param": param,
                                            "reason": str(e), "url": _url_for_log(url)}})
            raise APIError(400, f"Invalid image: {e}", param=f"{param}.image_url",
                           code="invalid_image") from e
    return images


def _url_for_log(url: str) -> str:
    """A data URL's bytes say nothing useful and can be megabytes: keep its head only."""
    return url[:200] + ("..." if len(url) > 200 else "")


async def attach_images(engine: EngineClient, prompt: list[int], images: Sequence[ImageData],
                        prompt_param: str = "messages") -> tuple[list[int], tuple[PromptImage, ...]]:
    """Replace the template's image placeholders in `prompt` with each image's tokens."""
    if not images:
        return prompt, ()
    try:
        return await run_in_threadpool(engine.attach_images, prompt,
                                       [(im.data, im.digest) for im in images])
    except EngineError as exc:
        raise from_engine_error(exc, prompt_param) from exc
