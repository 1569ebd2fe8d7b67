"""Chat-completions requests: pydantic models, limits, and their conversion to engine messages.

Images come only as ``data:image/...;base64,`` URLs and are decoded in
memory; a remote URL or a file path is refused, so nothing in a request
makes the server read or write a file (or fetch a URL). Each image's header
is checked against the engine's pixel limit here (a decompression bomb is
refused before it is decoded); the engine decodes the pixels when the
request's turn comes.

Every input is bounded before work is done on it: the JSON's nesting, each
sampling field's range (so no value reaches the engine that it cannot
sample with), and the text's length against the context window (text that
cannot fit is refused from its length, before anything is tokenized).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from engine.image_limits import FORMAT_NAMES, MAX_IMAGE_PIXELS, open_picture, too_many_pixels
from engine.token_chars import cannot_fit
from engine.types import EncodedImage, EngineInfo, GenerationSettings, ImageSource, Message

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one server accepts; each is a ``dsvl-chat serve`` option."""

    max_body_bytes: int = 32 * MiB
    max_images: int = 8  # per request, over all its messages
    queue_size: int = 16  # requests waiting behind the running one
    body_seconds: float = 30.0  # to receive a whole body, however it trickles in (then 408)


class RequestError(Exception):
    """A request the server refuses: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}
        self.param = param  # the request field at fault, as OpenAI names it

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --- the request's shape ------------------------------------------------------------------------

class _Model(BaseModel):
    # Extra fields: OpenAI clients send fields this server has no use for. No inf or NaN in any number.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


# The sampling fields' ranges. Outside them the engine cannot sample: a temperature or repetition
# penalty of 1e-300 is 0 in float32 and the scaled logits become inf/NaN; torch takes a 64-bit seed.
MIN_TEMPERATURE = 0.001  # a temperature is 0 (greedy) or from here to MAX_TEMPERATURE
MAX_TEMPERATURE = 100.0
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 100.0
MAX_SEED = 2**63 - 1
MAX_COUNT = 2**31 - 1  # max_tokens, max_completion_tokens, top_k


def _temperature(value: float | None) -> float | None:
    if value is not None and value != 0 and not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise ValueError(f"must be 0 (greedy) or from {MIN_TEMPERATURE} to {MAX_TEMPERATURE:g}, not {value!r}")
    return value


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
    temperature: Annotated[float | None, AfterValidator(_temperature)] = None
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    # Not in OpenAI's API; accepted as extra fields, as vLLM and lmdeploy do.
    top_k: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    repetition_penalty: float | None = Field(default=None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)
    ignore_eos: bool | None = None  # vLLM's name: answer max_tokens whatever the model says (benchmarks)


# --- parsing ------------------------------------------------------------------------------------

def parse_request(body: bytes) -> ChatRequest:
    """The request in ``body``, or ``RequestError`` 400 naming the first problem."""
    nested = RequestError(400, "the request body's JSON is nested too deeply; send a flat chat request",
                          code="invalid_json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc}); send a JSON object",
                           code="invalid_json") from None
    except RecursionError:  # the parser recurses once per level: [[[[... 100,000 deep
        raise nested from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatRequest.model_validate(data)
    except RecursionError:
        raise nested from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        problem = first["msg"].removeprefix("Value error, ")
        raise RequestError(400, f"invalid request: {where}: {problem}", code="invalid_value",
                           param=where) from None


@dataclass
class EngineRequest:
    """A request as the engine takes it."""

    messages: list[Message]
    system: str | None
    settings: GenerationSettings
    stop: list[str]


def to_engine(request: ChatRequest, limits: Limits, info: EngineInfo | None = None) -> EngineRequest:
    """Messages, system prompt, settings and stop strings for the engine; ``RequestError`` if refused.

    With the engine's ``info``, turns whose text cannot fit its window are dropped here (``by_length``)."""
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
        content = message.content
        parts = [TextPart(type="text", text=content)] if isinstance(content, str) else content or []
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
    prompt = "\n\n".join(system) if system else None
    if info is not None:
        messages = by_length(messages, prompt, info.context_length, info.max_token_chars)
    return EngineRequest(messages=messages, system=prompt, settings=settings_for(request),
                         stop=stop_strings(request.stop))


def by_length(messages: list[Message], system: str | None, window: int, per_token: int | None) -> list[Message]:
    """``messages`` without the oldest turns whose text cannot fit ``window`` tokens; 400 if the last one cannot.

    Counted in characters, with no tokenizing (a 30 MB message once took minutes and gigabytes to
    tokenize before the window refused it): one token covers at most ``per_token`` characters
    (``EngineInfo.max_token_chars``). The engine keeps the newest turns that fit (a turn starts at
    each user message) and always the last; a turn whose text, with everything after it and the
    system prompt, is over ``window * per_token`` characters can never be kept, so dropping it here
    changes nothing but the time. Template text and images are not counted: a request refused here
    is over the window whatever they add.
    """
    chars = len(system.strip()) if system else 0
    for index in range(len(messages) - 1, -1, -1):
        chars += len(messages[index].text.strip())  # the engine strips each message's text
        if cannot_fit(chars, window, per_token):
            break
    else:
        return messages
    starts = [i for i, m in enumerate(messages) if i > index and m.role == "user"]
    if not starts:
        what = "the last message is" if not system else "the last message and the system prompt are"
        raise RequestError(400, f"{what} {chars:,} characters, more than the {window:,}-token context "
                           f"window can hold (a token is at most {per_token} characters); shorten it",
                           code="context_length_exceeded")
    return messages[starts[0]:]


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


__all__ = ["ChatRequest", "EngineRequest", "Limits", "RequestError", "by_length", "decode_image", "parse_request",
           "to_engine"]
