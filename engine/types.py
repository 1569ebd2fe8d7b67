"""The engine's public value types: messages in, settings, stats and info out.

These are plain dataclasses with no torch in their signatures so that a
front end (or a remote backend speaking an OpenAI-compatible protocol) can
use them without loading a model.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from PIL import Image as PILImage



@dataclass
class LoadProgress:
    """One step of loading, for a progress display (``engine.load``'s ``progress`` gets them).

    Defined here, with the light types, so that a front end can say "importing torch" before
    anything heavy is imported.
    """

    stage: str  # "import", "download", "load", "compile" (warming up compiled decoding) or "ready"
    done: int = 0
    total: int | None = None
    message: str = ""


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """An image file's bytes held in memory (a picture that came in a request, not from disk).

    The engine reads it like a file of that name, with the same checks and
    limits, and caches its decoded pixels by ``digest``, so a stateless client
    that sends the same picture every turn has it decoded once.
    """

    data: bytes
    name: str = "<image>"

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


ImageSource = Union[str, os.PathLike, "PILImage.Image", EncodedImage]
Role = Literal["user", "assistant"]
StopReason = Literal["eos", "stop_string", "length", "cancelled", "error"]
Variant = Literal["chat", "base"]  # a chat model (with its template) or a base one (plain text)
QuantizeMode = Literal["none", "int8", "int4"]  # the language model's weights: as loaded, or 8 or 4 bits (``quantize``)
QUANTIZE_MODES: tuple[QuantizeMode, ...] = ("none", "int8", "int4")
# A checkpoint's layout on disk: "original" (deepseek-ai/*) or "transformers" (deepseek_vl*, deepseek-community/*).
LAYOUTS = ("original", "transformers")


def parse_quantize(value: str | None) -> QuantizeMode:
    """``"int8"`` etc. (any case; None is "none"); a one-line ValueError names the modes otherwise."""
    mode = (value or "none").strip().lower()
    for known in QUANTIZE_MODES:
        if mode == known:
            return known
    raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, not {value!r}")


# --- device, dtype and model as a user gives them, checked without torch -------------------------------------
# The CLI checks them before it imports torch (seconds to a minute), so a typo is a usage error at once;
# engine.load checks them again with these very functions (resolve.py), so both say the same.

KNOWN_MODELS = (
    "deepseek-ai/deepseek-vl-1.3b-chat",
    "deepseek-ai/deepseek-vl-1.3b-base",
    "deepseek-ai/deepseek-vl-7b-chat",
    "deepseek-ai/deepseek-vl-7b-base",
    # The same models in transformers' converted layout (deepseek_vl, deepseek_vl_hybrid), as its docs use them.
    "deepseek-community/deepseek-vl-1.3b-chat",
    "deepseek-community/deepseek-vl-1.3b-base",
    "deepseek-community/deepseek-vl-7b-chat",
    "deepseek-community/deepseek-vl-7b-base",
)
_DEVICE = re.compile(r"(?:cpu|cuda|mps)(?::\d+)?")
# Every dtype name engine.load takes, and the torch dtype (its name in torch) each means.
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16", "half": "float16"}


def check_device(device: str) -> str:
    """``device`` if it names a device the engine can use (auto, cpu, cuda, cuda:N, mps), else a one-line
    ValueError. Only the name: whether this machine has that device is for ``engine.load`` to say."""
    if device == "auto" or _DEVICE.fullmatch(device):
        return device
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def check_dtype(dtype: str) -> str:
    """``dtype`` if the engine takes the name (auto, bfloat16, float16, float32 and their short forms)."""
    if dtype == "auto" or dtype in DTYPE_NAMES:
        return dtype
    raise ValueError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")


def looks_like_path(model: str) -> bool:
    """Whether ``model`` is meant as a folder: hub ids are exactly "owner/name", anything else is a path."""
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or os.sep == "\\" and "\\" in model


def local_model_problem(model: str) -> str | None:
    """Why ``model`` cannot be loaded as given, when that shows without the hub: a folder that is not
    there, or a file. None for an existing folder and for anything that may be a hub id."""
    from pathlib import Path

    try:
        expanded = Path(model).expanduser()
    except RuntimeError:  # "~someone" with no such user
        return f"model folder not found: {model}; check the path"
    if expanded.is_dir():
        return None
    if expanded.exists():
        return f"{model} is a file, not a model folder; pass the folder that holds config.json"
    if looks_like_path(model):
        return f"model folder not found: {model}; check the path, or pass a hub id such as {KNOWN_MODELS[0]}"
    return None


@dataclass
class Message:
    """One turn of a conversation.

    ``images`` are attached to the message in order; in the prompt they come
    before the message text, one image slot each.
    """

    role: Role
    text: str
    images: list[ImageSource] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ("user", "assistant"):
            raise ValueError(f"message role must be 'user' or 'assistant', not {self.role!r}")
        self.images = list(self.images)


@dataclass
class GenerationSettings:
    """Sampling settings; defaults are upstream DeepSeek-VL's CLI defaults.

    ``temperature == 0`` means greedy decoding. ``top_k`` defaults to 50, the
    value upstream's ``generate`` call inherits from transformers.
    """

    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.1
    max_new_tokens: int = 512
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks only: always generate max_new_tokens


    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be 0 (greedy) or more"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be 0 (off) or more"),
            (self.repetition_penalty > 0, "repetition_penalty must be more than 0"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ValueError(problem)


@dataclass
class GenerationStats:
    """What one generation did; complete once its stream has ended."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    time_to_first_token: float | None = None  # seconds from the call to the first new token
    tokens_per_second: float | None = None  # decode rate after the first token
    total_seconds: float = 0.0
    stop_reason: StopReason | None = None
    error: str | None = None
    dropped_turns: int = 0  # oldest turns left out to fit the context window
    reused_tokens: int = 0  # prompt positions taken from a kept KV cache (longest common prefix), not prefilled
    evicted_contexts: int = 0  # kept contexts' KV caches dropped (least recently used) to bound memory


@dataclass
class EngineInfo:
    """What was loaded and where."""

    model_id: str
    variant: Variant
    tower: str  # "siglip" or "hybrid"
    device: str
    dtype: str
    parameters: int
    context_length: int
    path: str = ""
    load_seconds: float = 0.0
    compiled: bool = False  # decoding runs a torch.compile'd step (CUDA graphs) on a static KV cache
    compile_note: str | None = None  # why not, when compile was asked for: "needs CUDA", ...
    quantize: str = "none"  # language-model weights in effect: "none", "int8" or "int4"
    quantize_note: str | None = None  # why not (or not all layers), when a mode was asked for
    # The most characters of text one token covers (engine.token_chars): text longer than
    # context_length * this cannot fit, known without tokenizing; None when the tokenizer gives no such bound.
    max_token_chars: int | None = None
    layout: str = "original"  # the checkpoint's layout (LAYOUTS): deepseek-ai's own, or transformers' converted one


@dataclass
class Prepared:
    """A conversation turned into model input, exactly as upstream would build it.

    ``input_ids`` is 1-D and includes BOS and every image token; ``images``
    holds one preprocessed pixel tensor per image slot, in prompt order.
    """

    input_ids: torch.Tensor
    images: list[torch.Tensor]
    image_keys: list[str]  # a content hash per image, in prompt order
    prompt: str  # the text prompt, image slots shown as the image tag
    dropped_turns: int = 0


class ChatBackend(Protocol):
    """What a front end needs from a model; ``Engine`` is one implementation.

    A client of an OpenAI-compatible server can implement the same protocol
    (``stream`` and ``info``) and stand in for the local engine.
    """

    info: EngineInfo

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        *,
        system: str | None = None,
        cancel: Any = None,
        cache_key: str = "default",
    ) -> AnswerStream: ...


class AnswerStream(Protocol):
    """One answer's text chunks, as the backend produces them (``ChatBackend.stream`` returns one).

    ``stats`` are final once iteration ends. ``token_ids`` are the ids generated so far where the
    backend has them (the engine's own stream); a server sends text, so a remote stream's stay
    empty. ``close()`` stops the answer if it still runs and frees what it holds; it may be called
    at any time, more than once, and after the stream has ended.
    """

    stats: GenerationStats

    @property
    def token_ids(self) -> Sequence[int]: ...

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class PreparesPrompts(Protocol):
    """A backend that can build a conversation's model input without generating (``Engine.prepare``).

    Optional: front ends use it, where a backend has it, to show how much of the context a conversation takes.
    """

    def prepare(self, messages: Sequence[Message], *, system: str | None = None) -> Prepared: ...
