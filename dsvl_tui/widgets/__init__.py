"""The TUI's widgets, one per private module."""

from ._assistant_message import AssistantMessage
from ._chat_pane import ChatPane
from ._conversation_tabs import ConversationTabs
from ._image_preview import ImagePreview
from ._notice import Notice
from ._prompt_input import PromptInput
from ._status_bar import StatusBar
from ._user_message import UserMessage

__all__ = [
    "AssistantMessage",
    "ChatPane",
    "ConversationTabs",
    "ImagePreview",
    "Notice",
    "PromptInput",
    "StatusBar",
    "UserMessage",
]
