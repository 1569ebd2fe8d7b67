"""Chat-completions requests: pydantic models, limits, and their conversion to engine messages.

Images come only as ``data:image/...;base64,`` URLs and are decoded in
memory; a remote URL or a file path is refused, so nothing in a request
makes the server read or write a file (or fetch a URL). Each image's header
is checked against the engine's pixel limit here (a decompression bomb is
refused before it is decoded); the engine decodes the pixels when the
request's turn comes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.image_limits import FORMAT_NAMES, MAX_IMAGE_PIXELS, open_picture, too_many_pixels
from engine.types import EncodedImage, GenerationSettings, ImageSource, Message

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one server accepts; each is a ``dsvl-chat serve`` option."""

    max_body_bytes: int = 32 * MiB
    max_images: int = 8  # per request, over all its messages
    queue_size: int = 16  # requests waiting behind the running one


class RequestError(Exception):
    """A request the server refuses: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


# --- the request's shape ------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields this server has no use for


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImageURL(_Model):
    url: str
    detail: str | None = None


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessageIn(_Model):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None


class StreamOptions(_Model):
    include_usage: bool = False


class ChatRequest(_Model):
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    # Not in OpenAI's API; accepted as extra fields, as vLLM and lmdeploy do.
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    ignore_eos: bool | None = None  # vLLM's name: answer max_tokens whatever the model says (benchmarks)


# --- parsing ------------------------------------------------------------------------------------

def parse_request(body: bytes) -> ChatRequest:
    """The request in ``body``, or ``RequestError`` 400 naming the first problem."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc}); send a JSON object",
                           code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(400, f"invalid request: {where}: {first['msg']}", code="invalid_value") from None


@dataclass
class EngineRequest:
    """A request as the engine takes it."""

    messages: list[Message]
    system: str | None
    settings: GenerationSettings
    stop: list[str]


def to_engine(request: ChatRequest, limits: Limits) -> EngineRequest:
    """Messages, system prompt, settings and stop strings for the engine; ``RequestError`` if refused."""
    images = sum(isinstance(part, ImagePart) for m in request.messages if isinstance(m.content, list)
                 for part in m.content)
    if images > limits.max_images:
        raise RequestError(413, f"the request has {images} images; this server takes at most {limits.max_images} "
                           "per request", code="too_many_images")
    system: list[str] = []
    messages: list[Message] = []
    number = 0
    for index, message in enumerate(request.messages):
        texts: list[str] = []
        pictures: list[ImageSource] = []
        parts = [TextPart(type="text", text=message.content)] if isinstance(message.content, str) else message.content or []
        for part in parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            else:
                number += 1
                pictures.append(decode_image(part.image_url.url, number))
        text = "\n".join(texts)
        if message.role in ("system", "developer"):
            if pictures:
                raise RequestError(400, f"messages.{index}: a system message cannot hold images", code="invalid_value")
            system.append(text)
        else:
            messages.append(Message("user" if message.role == "user" else "assistant", text, pictures))
    if not messages or messages[-1].role != "user":
        raise RequestError(400, "the last message must be a user message (the one to answer)", code="invalid_value")
    return EngineRequest(messages=messages, system="\n\n".join(system) if system else None,
                         settings=settings_for(request), stop=stop_strings(request.stop))


def settings_for(request: ChatRequest) -> GenerationSettings:
    """The request's sampling settings over the engine's defaults (upstream DeepSeek-VL's)."""
    given: dict[str, Any] = {
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "repetition_penalty": request.repetition_penalty, "seed": request.seed,
        "max_new_tokens": request.max_completion_tokens or request.max_tokens, "ignore_eos": request.ignore_eos,
    }
    try:
        return GenerationSettings(**{key: value for key, value in given.items() if value is not None})
    except ValueError as exc:
        raise RequestError(400, f"invalid request: {exc}", code="invalid_value") from None


def stop_strings(stop: str | list[str] | None) -> list[str]:
    strings = [stop] if isinstance(stop, str) else list(stop or [])
    if len(strings) > 4 or any(not s for s in strings):
        raise RequestError(400, "invalid request: stop takes up to 4 non-empty strings", code="invalid_value")
    return strings


def decode_image(url: str, number: int) -> EncodedImage:
    """Image ``number`` (1-based) of the request from its ``data:`` URL, header checked, pixels not yet decoded.

    The engine decodes the bytes when it needs the pixels, and only once for
    the same bytes: a chat client sends every picture again each turn."""
    head, comma, payload = url.partition(",")
    if not url.startswith("data:"):
        raise RequestError(400, f"image {number}: only data: URLs are accepted (data:image/png;base64,...); "
                           "this server does not fetch URLs or read files", code="unsupported_image_url")
    if not comma or not head.endswith(";base64") or not head[5:].startswith("image/"):
        raise RequestError(400, f"image {number}: expected a base64 data URL of an image "
                           "(data:image/png;base64,...)", code="invalid_image")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"image {number}: the data URL is not valid base64", code="invalid_image") from None
    try:
        with open_picture(io.BytesIO(data)) as image:  # the header only, in a format whose header is the truth
            size = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(number, None) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError(400, f"image {number}: not an image in a format this server reads; "
                           f"send a {FORMAT_NAMES}", code="invalid_image") from None
    if too_many_pixels(*size):
        raise _too_large(number, size)
    return EncodedImage(data, name=f"image {number}")


def _too_large(number: int, size: tuple[int, int] | None) -> RequestError:
    shown = f" ({size[0]}x{size[1]})" if size else ""
    return RequestError(413, f"image {number} is too large{shown}: at most {MAX_IMAGE_PIXELS:,} pixels; "
                        "scale it down", code="image_too_large")


__all__ = ["ChatRequest", "EngineRequest", "Limits", "RequestError", "decode_image", "parse_request", "to_engine"]
