"""The conversation panes as tabs: one ``ChatPane`` per tab, one of them active.

Which pane is active changes at once (a command may read the new pane's
conversation straight after ``/new``); mounting and removing tabs follow on
the event loop, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import TabbedContent, TabPane

from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.text import printable, shorten
from dsvl_tui.tui.widgets._chat_pane import ChatPane

TAB_TITLE_CHARS = 16  # the least of a tab's title (the conversation's) shown, cut at a word
TAB_TITLE_MAX = 60  # the most, however wide the terminal
TAB_SHARE = 3  # the width is shared as if there were at least this many tabs
TAB_CHROME = 6  # cells of a tab that are not its title: padding, its number, a mark (● or …)


def tab_id(pane: ChatPane) -> str:
    return f"tab-{pane.id}"


class ConversationTabs(Widget):
    """Tabs of conversations; posts ``ActivePaneChanged`` when the user picks another tab."""

    DEFAULT_CSS = """
    ConversationTabs {
        height: 1fr;
        & > TabbedContent {
            height: 1fr;
        }
        & ContentTabs {
            background: $surface;
        }
        & TabPane {
            padding: 0;
        }
    }
    """

    @dataclass
    class ActivePaneChanged(Message):
        pane: ChatPane

    def __init__(self, first: Conversation, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.panes: list[ChatPane] = [self._make(first)]
        self.active: ChatPane = self.panes[0]
        self._marks: dict[ChatPane, str] = {}  # what goes before a tab's title (an answer running or waiting)

    def compose(self) -> ComposeResult:
        with TabbedContent():
            yield TabPane(Content(self.title_of(self.active)), self.active, id=tab_id(self.active))

    @staticmethod
    def _make(conversation: Conversation) -> ChatPane:
        return ChatPane(conversation, id=f"chat-{conversation.id[:12]}")

    def title_of(self, pane: ChatPane) -> str:
        title = shorten(printable(pane.conversation.title), self.title_chars()) or "new chat"
        return f"{self.panes.index(pane) + 1} {title}"

    def title_chars(self) -> int:
        """How much of a title each tab shows: the tabs share the width (as if there were at least
        ``TAB_SHARE`` of them, so that a new tab does not cut the others much), each gets at least
        ``TAB_TITLE_CHARS`` (they scroll when they do not fit) and at most ``TAB_TITLE_MAX``."""
        width = self.size.width or (self.app.size.width if self.is_attached else 0)
        share = width // max(TAB_SHARE, len(self.panes)) - TAB_CHROME
        return max(TAB_TITLE_CHARS, min(TAB_TITLE_MAX, share))

    def on_resize(self) -> None:
        for pane in self.panes:
            self.set_mark(pane, self._marks.get(pane, ""))

    @property
    def _tabbed(self) -> TabbedContent:
        return self.query_one(TabbedContent)

    def add(self, conversation: Conversation) -> ChatPane:
        """Open ``conversation`` in a new tab and make it the active one."""
        pane = self._make(conversation)
        self.panes.append(pane)
        self.active = pane
        self.app.call_later(self._mount_pane, pane)
        return pane

    async def _mount_pane(self, pane: ChatPane) -> None:
        if pane in self.panes:
            await self._tabbed.add_pane(TabPane(Content(self.title_of(pane)), pane, id=tab_id(pane)))
            self.show(self.active)

    def close(self, pane: ChatPane) -> ChatPane | None:
        """Close ``pane``; the tab after it (or before) becomes active. None if it was the last."""
        index = self.panes.index(pane)
        self.panes.remove(pane)
        self._marks.pop(pane, None)
        self.app.call_later(self._remove_pane, pane)
        if not self.panes:
            return None
        self.active = self.panes[min(index, len(self.panes) - 1)]
        return self.active

    async def _remove_pane(self, pane: ChatPane) -> None:
        if pane.is_mounted:
            await self._tabbed.remove_pane(tab_id(pane))
        if self.active.is_mounted:
            self.show(self.active)

    def step(self, offset: int) -> ChatPane:
        """Make the pane ``offset`` tabs away (wrapping round) the active one."""
        self.show(self.panes[(self.panes.index(self.active) + offset) % len(self.panes)])
        return self.active

    def show(self, pane: ChatPane) -> None:
        changed = pane is not self.active
        self.active = pane
        if pane.is_mounted:
            self._tabbed.active = tab_id(pane)
        if changed:  # _tab_activated will find it already active: tell the app here (/next, /prev)
            self.post_message(self.ActivePaneChanged(pane))

    def set_mark(self, pane: ChatPane, mark: str) -> None:
        """Label ``pane``'s tab: ``mark`` and its title, as long as the width allows (again on a resize)."""
        self._marks[pane] = mark
        if pane.is_mounted:
            self._tabbed.get_tab(tab_id(pane)).label = Content(printable(mark + self.title_of(pane)))

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
        pane = event.pane.query_one(ChatPane)
        if pane is not self.active and pane in self.panes:
            self.active = pane
            self.post_message(self.ActivePaneChanged(pane))
