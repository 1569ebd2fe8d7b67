"""dsvl-chat: a terminal chat app for the DeepSeek-VL models.

Kept free of imports so that ``--help`` and ``--version`` start fast.
"""

__version__ = "0.1.0"
