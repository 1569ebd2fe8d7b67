"""What ``app.DsvlApp`` keeps on disk as it runs: each conversation's autosave, the prompt history, the config.

Each is written off the event loop: the autosaver and the prompt history each have a thread
(started in ``DsvlApp.on_mount``), the config a thread worker per change (``_remember``). A problem
becomes one warning toast; the app goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import work
from textual.message import Message

from dsvl_tui.storage.config import save_config
from dsvl_tui.tui.workers import reported_from_a_thread

if TYPE_CHECKING:
    from textual.app import App

    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.storage.autosave import Autosaver
    from dsvl_tui.storage.prompt_history import PromptHistory
    from dsvl_tui.tui.widgets import PromptInput

    _AppBase = App[int]
else:
    _AppBase = object


@dataclass
class PromptsLoaded(Message):
    """The prompt history worker read the prompts of earlier runs (oldest first)."""

    prompts: list[str]


class Saving(_AppBase):
    """A mixin of ``DsvlApp`` (Textual finds ``on_prompts_loaded`` on the app's class).
    ``DsvlApp.__init__`` makes ``autosaver`` and ``prompt_history``."""

    autosaver: Autosaver
    prompt_history: PromptHistory

    if TYPE_CHECKING:  # what saving uses of the app (``DsvlApp``)
        @property
        def prompt(self) -> PromptInput: ...

    def autosave(self, conversation: Conversation) -> None:
        self.autosaver.save(conversation)

    def _prompt_history_worker(self) -> None:
        # Reads the shared history file, then appends each new prompt; post_message is thread-safe.
        self.prompt_history.run(lambda prompts: self.post_message(PromptsLoaded(prompts)))

    @reported_from_a_thread
    def on_prompts_loaded(self, message: PromptsLoaded) -> None:
        self.prompt.add_earlier(message.prompts)

    def _report_autosave(self, problem: str) -> None:  # from the autosave and prompt history workers
        self.call_from_thread(self.notify, problem, severity="warning", markup=False)  # it names a path

    @work(thread=True, group="config", exit_on_error=False)
    def _remember(self, **choices: Any) -> None:
        try:
            save_config(**choices)
        except OSError as exc:
            self.call_from_thread(self.notify, f"could not save the config: {exc}", severity="warning", markup=False)
