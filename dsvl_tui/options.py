"""The typed settings the CLI builds once and passes to a front end."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.types import GenerationSettings

DEFAULT_MODEL = "deepseek-ai/deepseek-vl-1.3b-chat"


@dataclass
class Options:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    compile: bool = False  # compiled decode on CUDA (the engine falls back to eager, with a note, elsewhere)
    system: str | None = None  # None: the model's default system prompt
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    theme: str | None = None  # None: the remembered one, else the default
    resume: bool = False  # open the list of recent conversations at start
    images: str = "halfblock"  # how image previews are drawn: halfblock, kitty or sixel (run_tui picks)
