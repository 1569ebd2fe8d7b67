"""The second model a conversation is compared with: ``/compare`` and ``ask --compare``.

``parse_request`` reads what to compare with (a model, a server, a quantization, other settings);
``load_side`` makes the ``CompareSide`` that answers: the very backend that answers already when only
the settings differ (one engine: with ``max_batch`` > 1 both answers decode together, else they take
turns), a second client for another server, or a second local model, loaded only once
``memory_need`` says it fits (what it needs and what is free is said before anything loads; a model
that does not fit is refused in one line). ``compared_turn`` answers a conversation on that side.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvl_tui.core.conversation import Conversation, side_label
from dsvl_tui.core.options import resolvable_model, user_settings

if TYPE_CHECKING:
    from dsvl_tui.core.options import Options
    from engine.types import ChatBackend, GenerationSettings

USAGE = ("/compare MODEL | --endpoint URL [MODEL] [--quantize none|int8|int4] [--temperature T] [--top-p P] "
         "[--top-k K] [--repetition-penalty R] [--max-new-tokens N] [--seed S] | /compare off")
# The compared server gets no API key of the main one (a key is for its own server): this one, if set.
COMPARE_API_KEY_ENV = "DSVL_COMPARE_API_KEY"
# Weights are not all a model needs: activations, the KV caches it keeps, the vision tower's work.
HEADROOM = 1.25
# About how many parameters the known checkpoints hold (weights, vision towers and all), for a model
# not downloaded yet: what it will need can be said before the download.
KNOWN_PARAMETERS = {"1.3b": 2_000_000_000, "7b": 7_340_000_000}
_SAFETENSORS_HEADER_LIMIT = 100 << 20  # a header larger than this is not a checkpoint's
_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                  "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_QUANTIZED_BYTES = {"int8": 1.0, "int4": 0.5}  # per language-model weight; scales are in the headroom


class CompareError(ValueError):
    """A comparison that cannot start; ``str()`` is one line saying what to do."""


@dataclass(frozen=True)
class CompareRequest:
    """What ``/compare`` or ``ask --compare`` asked for; None: as the main side."""

    model: str | None = None
    endpoint: str | None = None
    quantize: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of the conversation's


def parse_request(words: list[str]) -> CompareRequest:
    """``MODEL``, ``--endpoint URL``, ``--quantize MODE`` and settings (``--top-p 0.5`` or ``--top-p=0.5``);
    ``CompareError`` names a word it cannot use."""
    from engine.types import parse_quantize

    kinds = user_settings()
    model: str | None = None
    endpoint: str | None = None
    quantize: str | None = None
    settings: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            if model is not None:
                raise CompareError(f"one model to compare with, not {model!r} and {word!r}; usage: {USAGE}")
            model = word
            continue
        name, has_value, value = word[2:].partition("=")
        if not has_value:
            if index >= len(words):
                raise CompareError(f"{word} needs a value; usage: {USAGE}")
            value, index = words[index], index + 1
        key = name.replace("-", "_").lower()
        if key == "endpoint":
            endpoint = value
        elif key == "quantize":
            try:
                quantize = parse_quantize(value)
            except ValueError as exc:
                raise CompareError(str(exc)) from None
        elif key in kinds:
            settings[key] = _setting(key, value, kinds[key])
        else:
            raise CompareError(f"unknown option --{name}; usage: {USAGE}")
    return CompareRequest(model, endpoint, quantize, settings)


def _setting(key: str, text: str, kind: type) -> Any:
    if key == "seed" and text.lower() in ("none", "random", "off"):
        return None
    try:
        value = kind(text)
    except ValueError:
        raise CompareError(f"--{key.replace('_', '-')} must be {'a whole number' if kind is int else 'a number'}, "
                           f"not {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise CompareError(f"--{key.replace('_', '-')} must be a finite number, not {text!r}")
    return value


@dataclass
class CompareSide:
    """The backend that gives the compared answers, and what it answers with."""

    backend: ChatBackend
    model: str
    endpoint: str = ""  # the server (no credentials); "" for a model loaded here or dsvl-chat web's own
    quantize: str = "none"
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of the conversation's
    shared: bool = False  # the main side's own backend: only the settings differ

    @property
    def label(self) -> str:
        """How the answers are labelled: ``tiny-a (int4, temperature=1.0)``."""
        return side_label(self.model, self.endpoint, self.quantize, self.settings)

    def settings_for(self, conversation: Conversation) -> GenerationSettings:
        return dataclasses.replace(conversation.settings, **self.settings)


# -- memory -----------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryNeed:
    """What loading a model will take (bytes, about), and what is free where it loads."""

    need: int | None
    free: int | None
    where: str  # "GPU cuda:0 memory", "memory"

    @property
    def fits(self) -> bool:
        return self.need is not None and (self.free is None or self.need <= self.free)

    def facts(self) -> str:
        """``needs about 3.10 GiB; 5.20 GiB of memory is free``."""
        needs = f"needs about {_gib(self.need)}" if self.need is not None else "needs an amount that cannot be told"
        free = f"{_gib(self.free)} of {self.where} is free" if self.free is not None else \
            f"free {self.where} cannot be told"
        return f"{needs}; {free}"


def _gib(count: int | None) -> str:
    count = count or 0
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def checkpoint_parameters(folder: Path) -> int | None:
    """How many parameters a checkpoint folder's weights hold: from its safetensors headers (read, not the
    weights), else its .bin files' size as 16-bit numbers; None when it has neither or they cannot be read."""
    from engine.files import open_regular

    total = 0
    files = sorted(folder.glob("*.safetensors"))
    try:
        for path in files:
            with open_regular(path) as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > _SAFETENSORS_HEADER_LIMIT:
                    return None
                header = json.loads(handle.read(size))
            for name, entry in header.items():
                if name != "__metadata__":
                    total += math.prod(int(n) for n in entry["shape"])
        if not files:
            total = sum(path.stat().st_size for path in folder.glob("*.bin")) // 2
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return None
    return total or None


def model_parameters(model: str, revision: str | None = None) -> int | None:
    """Parameters of ``model``: a local folder's or the hub cache's checkpoint, else a known model's size."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, revision=revision, local_files_only=True,
                                            allow_patterns=["*.json", "*.safetensors"]))
        except Exception:  # noqa: BLE001 - not in the cache (or not a hub id): the table below, or unknown
            folder = Path()
    counted = checkpoint_parameters(folder) if folder.is_dir() and str(folder) != "." else None
    if counted is not None:
        return counted
    name = model.lower()
    if name.startswith(("deepseek-ai/", "deepseek-community/")):
        for size, parameters in KNOWN_PARAMETERS.items():
            if f"-{size}-" in name:
                return parameters
    return None


def free_memory(device: Any) -> int | None:
    """Bytes free on ``device`` (a ``torch.device``): the GPU's free memory, or the system's available memory
    for a CPU; None where it cannot be told."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        # What torch's allocator holds but does not use (a finished answer's blocks) is free for the new model too.
        idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free) + max(int(idle), 0)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def memory_need(options: Options, model: str, quantize: str, *,
                free: Callable[[Any], int | None] = free_memory) -> MemoryNeed:
    """What loading ``model`` with ``quantize`` on ``options.device`` will need, and what is free there."""
    from engine.resolve import pick_device, pick_dtype

    device = pick_device(options.device)
    dtype = str(pick_dtype(options.dtype, device)).replace("torch.", "")
    parameters = model_parameters(model, options.revision)
    need = None
    if parameters is not None:
        per_weight = min(_DTYPE_BYTES.get(dtype, 4), _QUANTIZED_BYTES.get(quantize, 4.0))
        need = int(parameters * per_weight * HEADROOM)
    where = f"GPU {device} memory" if device.type == "cuda" else "memory"
    return MemoryNeed(need, free(device), where)


# -- loading ------------------------------------------------------------------------


def load_side(options: Options, request: CompareRequest, main: ChatBackend | None, *,
              say: Callable[[str], None] = lambda line: None, progress: Callable[[Any], None] | None = None,
              loader: Callable[..., ChatBackend] | None = None,
              free: Callable[[Any], int | None] = free_memory) -> CompareSide:
    """The ``CompareSide`` for ``request`` next to ``main`` (the backend answering now).

    ``say`` gets what the side needs and what is free before a second model loads (and that the one
    engine answers both, where it does). Raises ``CompareError`` (one line) for what cannot be compared
    (nothing differs, a server address from a browser tab, a model that does not fit), and whatever
    ``load_backend`` raises for a load that fails.
    """
    from dsvl_tui.backends.choose import load_backend
    from dsvl_tui.web.client import is_web

    if request.endpoint is not None:
        if is_web():  # the tab's process runs on the server: a typed address would be fetched from there
            raise CompareError("in dsvl-chat web the compared model is the same server with other settings "
                               "(/compare --temperature 1.0); --endpoint is not available here")
        if request.quantize is not None:
            raise CompareError("--quantize is for a model loaded here; a server chooses its own")
        remote_options = dataclasses.replace(options, endpoint=request.endpoint,
                                             api_key=os.environ.get(COMPARE_API_KEY_ENV) or None)
        backend = load_backend(remote_options, request.model, progress)
        return CompareSide(backend, backend.info.model_id or request.model or "", getattr(backend, "endpoint", ""),
                           settings=dict(request.settings))
    main_model = main.info.model_id if main is not None else options.model
    if options.endpoint:  # the same server: another of its models, or other settings
        if request.quantize is not None:
            raise CompareError("--quantize is for a model loaded here; the model server chooses its own")
        model = request.model or main_model
        if model == main_model and main is not None:
            _something_differs(request)
            return CompareSide(main, model, getattr(main, "endpoint", ""), settings=dict(request.settings), shared=True)
        backend = load_backend(options, model, progress)
        served = getattr(backend, "served", None)
        if isinstance(served, list) and served and model not in served:  # else it would answer with its first
            raise CompareError(f"the model server does not serve {model}; it serves {', '.join(served)[:200]}: "
                               "compare with other settings (/compare --temperature 1.0)")
        return CompareSide(backend, backend.info.model_id or model, getattr(backend, "endpoint", ""),
                           settings=dict(request.settings))
    model = resolvable_model(str(Path(request.model).expanduser()) if request.model else main_model)
    main_quantize = main.info.quantize if main is not None else options.quantize
    quantize = request.quantize if request.quantize is not None else main_quantize
    if main is not None and model == resolvable_model(main_model) and quantize == main_quantize:
        _something_differs(request)
        batch = getattr(main, "max_batch", 1)
        say(f"comparing on the one engine already loaded ({side_label(model)}): "
            + ("both answers decode together" if batch > 1 else "the answers take turns (--max-batch 1)"))
        return CompareSide(main, model, quantize=quantize, settings=dict(request.settings), shared=True)
    need = memory_need(options, model, quantize, free=free)
    if not need.fits:
        why = "what it needs cannot be told before it is downloaded" if need.need is None else "that does not fit"
        raise CompareError(f"not loading {side_label(model)} to compare: {need.facts()}; {why}; "
                           "compare with a smaller or quantized model (--quantize int4), or close other programs")
    say(f"{side_label(model)} {need.facts()}; loading it to compare")
    backend = load_backend(dataclasses.replace(options, quantize=quantize), model, progress, loader=loader)
    return CompareSide(backend, backend.info.model_id or model, quantize=getattr(backend.info, "quantize", quantize),
                       settings=dict(request.settings))


def _something_differs(request: CompareRequest) -> None:
    if not request.settings:
        raise CompareError("nothing to compare: that is the model answering now; give another model, "
                           "--quantize, or other settings (/compare --temperature 1.0)")
