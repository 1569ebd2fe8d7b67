"""Turn a model argument (hub id or folder) into a local folder, and pick device and dtype.

Hub ids go through huggingface_hub, so its cache, ``HF_HOME``,
``HF_HUB_OFFLINE`` and revisions behave as users expect; download progress
(bytes) is reported through the caller's callback.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import LoadProgress, ProgressCallback
from .errors import EngineError, ModelNotFoundError
from .types import DTYPE_NAMES, KNOWN_MODELS, check_device, check_dtype, local_model_problem

_CONFIG_FILES = ["*.json", "tokenizer*"]


def resolve_model(model: str, *, revision: str | None = None, progress: ProgressCallback | None = None) -> Path:
    """Return the local folder holding ``model``, downloading it from the hub if needed."""
    problem = local_model_problem(model)  # a folder that is not there, a file: the CLI checks the same before torch
    if problem is not None:
        raise ModelNotFoundError(problem)
    expanded = Path(model).expanduser()
    if expanded.is_dir():
        return expanded.resolve()
    return _download(model, revision=revision, progress=progress)


def _download(repo_id: str, *, revision: str | None, progress: ProgressCallback | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    tqdm_class = progress_tqdm(progress) if progress is not None else None
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, tqdm_class=tqdm_class,
                                        allow_patterns=_CONFIG_FILES + ["*.safetensors"]))
        if not any(folder.glob("*.safetensors")):  # older uploads ship only .bin weights
            folder = Path(snapshot_download(repo_id, revision=revision, tqdm_class=tqdm_class,
                                            allow_patterns=_CONFIG_FILES + ["*.bin"]))
    except GatedRepoError:
        raise ModelNotFoundError(f"{repo_id} needs you to accept its licence on the Hugging Face hub; "
                                 "log in with `hf auth login` and retry") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"no model {repo_id!r} on the Hugging Face hub; "
                                 f"try one of {', '.join(KNOWN_MODELS)} or a local folder") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo_id} has no revision {revision!r}; check the revision name") from None
    except HFValidationError:
        raise ModelNotFoundError(f"{repo_id!r} is neither a folder nor a valid hub id; "
                                 f"pass a local folder or an id like {KNOWN_MODELS[0]}") from None
    except LocalEntryNotFoundError:
        at = f" at revision {revision!r}" if revision else ""
        raise ModelNotFoundError(
            f"{repo_id}{at} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1); download it once with a network connection, or pass a local folder"
        ) from None
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"the Hugging Face hub refused {repo_id} ({' '.join(str(exc).split())[:120]}); "
                                 "check the id, your login and network") from None
    except OSError as exc:
        raise ModelNotFoundError(f"downloading {repo_id} failed ({' '.join(str(exc).split())[:120]}); "
                                 "check disk space and network, then retry") from None
    if progress is not None:
        progress(LoadProgress("download", 1, 1, f"{repo_id} is available locally"))
    return folder


def progress_tqdm(progress: ProgressCallback):
    """A tqdm class that forwards byte counts to ``progress`` instead of drawing bars."""
    from tqdm.auto import tqdm

    class ForwardingTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            # A disabled tqdm keeps no state, so remember what the bar is about.
            self._bytes = kwargs.get("unit") == "B"
            self._total = kwargs.get("total")
            self._what = kwargs.get("desc") or ""
            self._done = 0
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self._done += n or 0
            if self._bytes:
                total = int(self._total) if self._total else None
                progress(LoadProgress("download", int(self._done), total, f"downloading {self._what}".strip()))

    return ForwardingTqdm


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        try:
            chosen = torch.device(check_device(device))
        except (ValueError, RuntimeError):
            raise EngineError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
        if chosen.type == "cuda":
            if not torch.cuda.is_available():
                raise EngineError("CUDA was asked for but no CUDA GPU is available; use --device auto or cpu")
            return _cuda_device(chosen.index, device)
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise EngineError("MPS was asked for but is not available; use --device auto or cpu")
        return chosen
    if torch.cuda.is_available():
        return _cuda_device(None, device)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cuda_device(index: int | None, asked: str) -> torch.device:
    """``cuda:N`` with N checked against the GPUs there are; plain "cuda" is torch's current one (usually 0).

    Always with an index, so that every later per-device call (capability,
    synchronize, memory statistics) asks about this GPU, not the current one.
    """
    count = torch.cuda.device_count()
    if index is None:
        index = torch.cuda.current_device()
    if not 0 <= index < count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise EngineError(f"{asked} was asked for but this machine has {count} CUDA GPU{'' if count == 1 else 's'} "
                          f"({have}); pick one of those (CUDA_VISIBLE_DEVICES renumbers them)")
    return torch.device("cuda", index)


_DTYPES = {name: getattr(torch, meaning) for name, meaning in DTYPE_NAMES.items()}


def pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise EngineError(f"unsupported dtype {dtype}; use bfloat16, float16 or float32")
        return dtype
    if dtype != "auto":
        try:
            return _DTYPES[check_dtype(dtype)]
        except ValueError as exc:
            raise EngineError(str(exc)) from None
    if device.type == "cuda":
        return torch.bfloat16 if _native_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _native_bf16(device: torch.device) -> bool:
    """Whether ``device`` (not the current GPU) computes in bf16 natively: Ampere (8.0) or newer, or ROCm.

    Not ``torch.cuda.is_bf16_supported()``: it asks about the current GPU, and
    says yes to older ones that only emulate bf16 (slowly), where fp16 is the
    right choice.
    """
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8
