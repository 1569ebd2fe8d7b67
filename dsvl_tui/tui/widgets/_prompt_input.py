"""The multi-line input box: Enter sends, Ctrl+J adds a line, Up/Down recall, Tab completes.

Key handling, checked against what terminals deliver: Enter arrives as CR
everywhere and sends. Ctrl+J arrives as LF everywhere (xterm, tmux, SSH,
macOS Terminal) and inserts a newline; Shift+Enter and Alt+Enter do too on
terminals that report them (the kitty keyboard protocol: kitty, foot,
WezTerm, Ghostty, iTerm2 with the option on). On other terminals Alt+Enter
arrives as plain Enter and sends. Pasted text is inserted as is, newlines
and all, unless it is only the path(s) of image files (what a terminal pastes
when a file is dropped on it), which are posted up as ``FilesDropped``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from textual import events
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.widgets import TextArea

from dsvl_tui.commands.completion import Completion, complete, dropped_paths
from dsvl_tui.commands.registry import CommandRegistry
from dsvl_tui.commands.registry import registry as default_registry
from dsvl_tui.core.text import printable

NEWLINE_KEYS = frozenset({"ctrl+j", "shift+enter", "alt+enter", "shift+\r"})


class PromptInput(TextArea):
    """Where the user writes messages and slash commands.

    | Key | Does |
    | --- | --- |
    | Enter | send |
    | Ctrl+J (Shift+Enter, Alt+Enter where the terminal reports them) | new line |
    | Up / Down on the first / last line | earlier / later prompts |
    | Tab or Right at the end | take the completion shown |
    | Tab again (Shift+Tab back) where several fit | go through them |
    | PageUp / PageDown, Ctrl+Home / Ctrl+End | scroll the conversation |

    (The help screen shows this table as it is; scrolling keys post ``ScrollRequest``.)
    """

    BINDINGS = [
        Binding("enter", "submit", "Send", show=False),
        Binding("ctrl+j", "newline", "Newline", show=False),
        Binding("pageup", "scroll_chat('page_up')", "Scroll up", show=False),
        Binding("pagedown", "scroll_chat('page_down')", "Scroll down", show=False),
        Binding("ctrl+home", "scroll_chat('home')", "Scroll to the top", show=False),
        Binding("ctrl+end", "scroll_chat('end')", "Scroll to the end", show=False),
    ]

    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        min-height: 3;
        max-height: 8;
        border: round $primary 50%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        padding: 0 1;
        background: $surface;
        &:focus {
            border: round $primary;
        }
        & .text-area--cursor-line {
            background: transparent;
        }
    }
    """

    @dataclass
    class Submitted(Message):
        """The user pressed Enter on some text."""

        prompt_input: PromptInput
        text: str

        @property
        def control(self) -> PromptInput:
            return self.prompt_input

    @dataclass
    class FilesDropped(Message):
        """Image file paths were pasted (or dropped on the terminal)."""

        prompt_input: PromptInput
        paths: list[Path]

        @property
        def control(self) -> PromptInput:
            return self.prompt_input

    @dataclass
    class ScrollRequest(Message):
        """The user asked to scroll the conversation: ``page_up``, ``page_down``, ``home`` or ``end``."""

        where: str

    def __init__(self, *, registry: CommandRegistry | None = None, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes, soft_wrap=True, tab_behavior="focus",
                         show_line_numbers=False, highlight_cursor_line=False,
                         placeholder="Message DeepSeek-VL, or /command")
        self.registry = registry or default_registry
        self.path_suffixes: Mapping[str, frozenset[str] | None] = {}  # command -> file suffixes it completes
        self.argument_choices: Callable[[str], list[str]] | None = None  # command -> words its argument can be
        self.prompts: list[str] = []  # sent text, oldest first: what Up and Down go through
        self.remember: Callable[[str], None] | None = None  # called with each new prompt (to keep it)
        self._history_index: int | None = None  # None: editing the draft
        self._draft = ""
        self._completion = Completion()
        self._cycle: list[str] = []  # the lines Tab goes through while several completions fit
        self._cycle_at = 0
        self.border_title = "Enter send \u00b7 Ctrl+J new line"

    # -- keys ---------------------------------------------------------------
    async def _on_key(self, event: events.Key) -> None:
        handled = True
        if event.key not in ("tab", "shift+tab"):
            self._cycle = []
        if event.key in ("tab", "shift+tab") and self.text.startswith("/"):
            # A command line keeps the focus: Tab completes, or goes through the choices, never out of the input.
            self.complete_or_cycle(-1 if event.key == "shift+tab" else +1)
        elif event.key == "enter":
            self.action_submit()
        elif event.key in NEWLINE_KEYS:
            self.action_newline()
        elif event.key == "up" and self.cursor_location[0] == 0 and self.selection.is_empty:
            handled = self.recall(-1)
        elif event.key == "down" and self.cursor_location[0] == self.document.line_count - 1 \
                and self.selection.is_empty:
            handled = self.recall(+1)
        else:
            handled = False
        if handled:
            event.stop()
            event.prevent_default()

    async def _on_paste(self, event: events.Paste) -> None:
        paths = dropped_paths(event.text)
        if paths:
            event.stop()
            event.prevent_default()
            self.post_message(self.FilesDropped(self, paths))

    # -- actions ------------------------------------------------------------
    def action_submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        if not self.prompts or self.prompts[-1] != text:
            self.prompts.append(text)
            if self.remember is not None:
                self.remember(text)
        self._history_index = None
        self._draft = ""
        self.clear()
        self.post_message(self.Submitted(self, text))

    def action_scroll_chat(self, where: str) -> None:
        self.post_message(self.ScrollRequest(where))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)

    def recall(self, step: int) -> bool:
        """Move through the history (``-1`` earlier, ``+1`` later); False if there is nowhere to go."""
        if not self.prompts:
            return False
        index = len(self.prompts) if self._history_index is None else self._history_index
        target = index + step
        if target < 0 or target > len(self.prompts):
            return False
        if self._history_index is None:
            self._draft = self.text
        self._history_index = None if target == len(self.prompts) else target
        self.load_text_at_end(self._draft if self._history_index is None else self.prompts[target])
        return True

    def add_earlier(self, prompts: list[str]) -> None:
        """Put ``prompts`` (oldest first, from earlier runs) before the ones sent in this run."""
        if prompts and self.prompts and prompts[-1] == self.prompts[0]:
            prompts = prompts[:-1]
        self.prompts[:0] = prompts
        if self._history_index is not None:
            self._history_index += len(prompts)

    def load_text_at_end(self, text: str) -> None:
        """Replace the text (made ``printable``: it may come from a transcript) and put the cursor at its end."""
        self.load_text(printable(text))
        self.move_cursor(self.document.end)
        self.update_suggestion()

    # -- completion -----------------------------------------------------------
    def update_suggestion(self) -> None:
        at_end = self.cursor_location == self.document.end
        if at_end and self.selection.is_empty and self.text.startswith("/"):
            self._completion = complete(self.text, self.registry, choices=self.argument_choices,
                                        suffixes=self.path_suffixes)
        else:
            self._completion = Completion()
        self.suggestion = printable(self._completion.suggestion)
        hint = self._completion.hint
        if self._cycle and self.text == self._cycle[self._cycle_at]:
            hint = f"{self._cycle_at + 1}/{len(self._cycle)} \u00b7 Tab next \u00b7 Shift+Tab back"
        hint = printable(hint)[: max(self.size.width - 6, 10)]
        self.border_subtitle = Content(hint) if hint else None

    def complete_or_cycle(self, step: int) -> None:
        """Tab: take the completion if one fits; where several do, show the next (``step`` +1) or previous one."""
        if not self._cycle and self._completion.line is not None and step > 0:
            self.load_text_at_end(self._completion.line)
            return
        if not self._cycle:
            if len(self._completion.choices) < 2:
                return
            self._cycle, self._cycle_at = list(self._completion.choices), -1 if step > 0 else 0
        self._cycle_at = (self._cycle_at + step) % len(self._cycle)
        self.load_text_at_end(self._cycle[self._cycle_at])

    @property
    def completion(self) -> Completion:
        return self._completion
