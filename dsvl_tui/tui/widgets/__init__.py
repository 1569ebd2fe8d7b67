"""The TUI's widgets, one per private module."""

from dsvl_tui.tui.widgets._assistant_message import AssistantMessage
from dsvl_tui.tui.widgets._chat_pane import WELCOME as WELCOME  # the first text; not a widget, so not in __all__
from dsvl_tui.tui.widgets._chat_pane import ChatPane
from dsvl_tui.tui.widgets._compared import ComparedJob as ComparedJob  # the compared side's thread: not a widget
from dsvl_tui.tui.widgets._compared import ComparedPair, SideAnswer
from dsvl_tui.tui.widgets._conversation_tabs import ConversationTabs
from dsvl_tui.tui.widgets._image_preview import ImagePreview
from dsvl_tui.tui.widgets._notice import Notice
from dsvl_tui.tui.widgets._prompt_input import PromptInput
from dsvl_tui.tui.widgets._status_bar import StatusBar
from dsvl_tui.tui.widgets._user_message import UserMessage
from dsvl_tui.tui.widgets._user_message import (
    VersionClicked as VersionClicked,  # a message, not a widget: not in __all__
)

__all__ = [
    "AssistantMessage",
    "ChatPane",
    "ComparedPair",
    "ConversationTabs",
    "ImagePreview",
    "Notice",
    "PromptInput",
    "SideAnswer",
    "StatusBar",
    "UserMessage",
]
