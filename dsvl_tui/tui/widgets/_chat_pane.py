"""One conversation pane: its messages in a scrolling column.

The pane shows its ``Conversation`` (the one model of messages) and, while
an answer is on its way, one ``AssistantMessage`` after the last message.
Notices (command output, errors) go in between, in the order things were
typed: a notice sits after the messages there were when its command ran (and
the answer to the last one), whatever was drawn meanwhile; they are not part
of the conversation and a rebuild drops them. The column is anchored, so it follows
a streaming answer until the user scrolls up, and again once they scroll
back to the end.

Only the newest messages are mounted (``BATCH_MESSAGES``, at most about
``BATCH_CHARS`` of text); the older ones wait behind one "earlier messages"
line and are mounted a batch at a time when the user scrolls to the top (or
presses Home there, or clicks the line). Every widget is styled, laid out and
its text wrapped on the event loop: mounting all of a 10,000-message
transcript froze the app for about a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static

from dsvl_tui.core import branches
from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.tui.widgets._assistant_message import AssistantMessage
from dsvl_tui.tui.widgets._compared import answer_widget
from dsvl_tui.tui.widgets._notice import Notice
from dsvl_tui.tui.widgets._user_message import UserMessage
from engine.types import GenerationStats

BATCH_MESSAGES = 50  # messages mounted at once: the newest when a conversation is shown, then per batch
BATCH_CHARS = 200_000  # ... and about this much of their text (at least one message)

WELCOME = (
    "Type a message and press Enter to send (Ctrl+J for a new line).\n"
    "Attach images with /image PATH, or paste or drop a file path.\n"
    "/help lists the commands; Ctrl+P opens the command palette."
)


class EarlierMessages(Static):
    """The line standing for the messages not mounted yet; a click mounts the next batch."""

    def __init__(self, count: int) -> None:
        super().__init__(self.text(count), classes="earlier")

    @staticmethod
    def text(count: int) -> Content:
        noun = "message" if count == 1 else "messages"
        return Content(f"{count:,} earlier {noun}: scroll up (or Home) to show them")

    async def on_click(self) -> None:
        pane = self.parent
        if isinstance(pane, ChatPane):
            await pane.show_earlier()


class ChatPane(VerticalScroll):
    """The messages of one conversation."""

    DEFAULT_CSS = """
    ChatPane {
        height: 1fr;
        padding: 0 1;
        background: $background;
        scrollbar-size-vertical: 1;
        & > .welcome {
            color: $text-muted;
            padding: 1 1;
        }
        & > .earlier {
            color: $text-muted;
            padding: 0 1;
        }
    }
    """

    def __init__(self, conversation: Conversation, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.conversation = conversation
        self.pending_answer: AssistantMessage | None = None
        self._shown: list[ChatMessage] = []
        self._hidden = 0  # the first this many of _shown are not mounted (behind EarlierMessages)
        self._showing = False  # show_earlier is mounting a batch
        self._early_notices: list[Notice] = []

    def compose(self) -> ComposeResult:
        yield from self._message_widgets()
        if self.pending_answer is not None:
            yield self.pending_answer
        yield from self._early_notices

    def on_mount(self) -> None:
        self.anchor()

    def _message_widgets(self) -> Iterator[Widget]:
        """Widgets for the conversation's messages (not the answer in progress)."""
        self._shown = list(self.conversation.messages)
        self._hidden = self._batch_start(len(self._shown))
        if not self._shown and self.pending_answer is None:
            yield Static(Content(WELCOME), classes="welcome")
        if self._hidden:
            yield EarlierMessages(self._hidden)
        for index in range(self._hidden, len(self._shown)):
            yield self._widget(index)

    def _batch_start(self, end: int) -> int:
        """Where the batch of messages that ends before ``end`` starts (newest first, within the batch limits)."""
        start, chars = end, 0
        while start > 0 and end - start < BATCH_MESSAGES:
            chars += len(self._shown[start - 1].text)
            if chars > BATCH_CHARS and start < end:
                break
            start -= 1
        return start

    async def show_earlier(self) -> None:
        """Mount the next batch of the messages not shown yet, above those shown, keeping the view where it is."""
        if not self._hidden or self._showing:
            return
        self._showing = True
        try:
            marker = self.query(EarlierMessages).first()
            start = self._batch_start(self._hidden)
            widgets = [self._widget(index) for index in range(start, self._hidden)]
            was_first = next((child for child in self.children if getattr(child, "message", None) is not None), None)
            await self.mount_all(widgets, after=marker)
            self._hidden = start
            if start:
                marker.update(EarlierMessages.text(start))
            else:
                await marker.remove()
            if was_first is not None:
                self.scroll_to_widget(was_first, top=True, animate=False, immediate=True)
        finally:
            self._showing = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value and self._hidden:  # scrolled to the top: the next batch
            self.call_later(self.show_earlier)

    async def rebuild(self) -> None:
        """Show the conversation afresh (after a command changed it); keeps an answer in progress."""
        keep = self.pending_answer if self.pending_answer in self.children else None
        await self.remove_children([child for child in self.children if child is not keep])
        widgets = list(self._message_widgets())
        if widgets:
            await self.mount_all(widgets, before=keep)
        self.anchor()

    async def catch_up(self) -> None:
        """Show messages added to the conversation since the last call (rebuild if it changed otherwise)."""
        shown, current = self._shown, self.conversation.messages
        if len(current) >= len(shown) and all(a is b for a, b in zip(shown, current, strict=False)):
            for index in range(len(shown), len(current)):
                message = current[index]
                await self._remove_welcome()
                widget = self._widget(index)
                await self.mount(widget, before=self._place(self._key(widget)))
                self._shown.append(message)
        else:
            await self.rebuild()

    async def _remove_welcome(self) -> None:
        await self.query(".welcome").remove()

    async def start_answer(self) -> AssistantMessage:
        """Mount the widget an answer streams into (it waits until its generation starts)."""
        await self._remove_welcome()
        self.pending_answer = AssistantMessage(versions=branches.next_position(self.conversation))
        await self.mount(self.pending_answer, before=self._place(self._key(self.pending_answer)))
        self.anchor()
        return self.pending_answer

    async def finish_answer(self, answer: ChatMessage | None, stats: GenerationStats | None, *,
                            stopped: bool = False, error: str | None = None) -> None:
        """End the answer's widget; ``answer`` is what its turn recorded in the conversation
        (``core.turn.Turn.record``; None: a command removed the question meanwhile)."""
        widget, self.pending_answer = self.pending_answer, None
        if answer is not None and widget is not None:
            widget.message = answer
            self._shown.append(answer)
        if widget is not None and widget.is_attached:
            await widget.finish(stats, stopped=stopped, error=error)

    async def give_back(self, asked: ChatMessage, error: str) -> bool:
        """The model refused ``asked`` before generating (a bad image, too long): drop the turn (a
        regenerated question stays, with its kept answer shown again), put its images back in the pending
        list and say why. True if ``asked`` was taken out (its text goes back to the input)."""
        self.pending_answer = None
        taken = self.conversation.take_back(asked)
        if taken:
            self.conversation.pending[:0] = asked.images
        await self.rebuild()
        await self.notice(f"not sent: {error}", error=True)
        return taken

    def scroll_where(self, where: str) -> None:
        """Scroll for the keyboard: ``page_up``, ``page_down``, ``home``, or ``end`` (follow again)."""
        if where == "end":
            self.anchor()
        elif where == "home" and self.scroll_y <= 0 and self._hidden:
            self.call_later(self.show_earlier)
        else:
            {"page_up": self.scroll_page_up, "page_down": self.scroll_page_down, "home": self.scroll_home}[where]()

    async def notice(self, text: str, *, error: bool = False, after: int | None = None) -> Notice:
        """Show ``text`` after the first ``after`` messages (see ``Notice.after``; ``None``: at the end)."""
        widget = Notice(text, error=error, after=after)
        if not self.is_attached:  # a pane still on its way in: show the notice once it is
            self._early_notices.append(widget)
            return widget
        await self.mount(widget, before=self._place(self._key(widget)))
        self.anchor()
        return widget

    def _key(self, widget: Widget, places: dict[int, int] | None = None) -> tuple[int, int] | None:
        """Where ``widget`` goes in the column: message ``i`` at ``(i, 1)``, an answer right after its
        question at ``(i, 2)``, a notice that came after ``n`` messages at ``(n, 0)``; ``None``: anywhere
        (the welcome text, a notice not tied to a place)."""
        messages = self.conversation.messages
        if isinstance(widget, Notice):
            return None if widget.after is None else (widget.after, 0)
        if widget is self.pending_answer:
            return (len(messages) - 1, 2)
        message = getattr(widget, "message", None)
        if message is None:
            return None
        if places is None:
            places = {id(m): i for i, m in enumerate(messages)}
        index = places.get(id(message))
        if index is None:
            return None
        if message.role == "assistant" and index and messages[index - 1].role == "user":
            return (index - 1, 2)
        return (index, 1)

    def _place(self, key: tuple[int, int] | None) -> Widget | None:
        """The child a widget with ``key`` is mounted before (``None``: at the end)."""
        if key is None:
            return None
        places = {id(m): i for i, m in enumerate(self.conversation.messages)}
        before = None
        for child in reversed(self.children):
            placed = self._key(child, places)
            if placed is None:
                continue
            if placed <= key:
                break
            before = child
        return before


    def _widget(self, index: int) -> Widget:
        """The widget for message ``index`` of the conversation's path, with its "k/n" among its versions."""
        message, versions = self.conversation.messages[index], branches.position(self.conversation, index)
        return UserMessage(message, versions=versions) if message.role == "user" else \
            answer_widget(message, versions=versions)  # side by side when it carries a compared answer
