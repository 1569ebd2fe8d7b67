"""The built-in slash commands, written once against ``Session`` for every front end.

Importing this package fills ``commands.registry``; the Textual app, its
command palette and the plain REPL all run these very handlers, so a command
behaves (and fails) the same everywhere. A handler parses its own arguments
and raises ``CommandError`` with one line for the user when they are wrong;
what it reports goes through ``session.info``. A handler's docstring is its
``/help COMMAND`` text.

Lists go out through one call, so a front end shows them together: ``/set``
as one multi-line ``session.info``; ``/help``, ``/resume`` and ``/find`` through
``session.show_help``, ``session.choose_conversation`` and ``session.choose_found``, which the TUI
shows as modal screens and the REPL as numbered lists.

The commands live by what they act on: ``_conversation`` (images, turns, the
system prompt, settings), ``_branches`` (what /edit and /regenerate keep), ``_files`` (transcripts),
``_find`` (searching them all), ``_web`` (uploads from and downloads to the browser in ``dsvl-chat
web``), ``_compare`` (a second model answering too) and ``_app`` (panes, the model, theme, help, quit);
``_completion`` says what their arguments complete to. What several of them share is
public: ``opening`` (read a transcript, open it, say so) and the argument helpers in ``_shared``. Only
this package imports the ``_`` modules; everything else imports from the package.
"""

from __future__ import annotations

from dsvl_tui.commands.builtin._app import close, help_command, model, new, next_pane, prev_pane, quit_command, theme
from dsvl_tui.commands.builtin._branches import branch
from dsvl_tui.commands.builtin._compare import compare
from dsvl_tui.commands.builtin._completion import PATH_SUFFIXES, argument_choices
from dsvl_tui.commands.builtin._conversation import (
    SETTING_TYPES,
    copy,
    edit,
    image,
    regenerate,
    reset,
    set_setting,
    settings_text,
    stop,
    system,
    undo,
)
from dsvl_tui.commands.builtin._files import RESUME_LIMIT, export, load, resume, save
from dsvl_tui.commands.builtin._find import FIND_LIMIT, find, found_detail, open_found, run_find
from dsvl_tui.commands.builtin._web import upload
from dsvl_tui.commands.completion import IMAGE_SUFFIXES

__all__ = [
    "FIND_LIMIT", "IMAGE_SUFFIXES", "PATH_SUFFIXES", "RESUME_LIMIT", "found_detail", "open_found", "run_find",
    "SETTING_TYPES", "argument_choices", "settings_text",
    # the handlers, each registered by its module
    "branch", "close", "compare", "copy", "edit", "export", "find", "help_command", "image", "load", "model", "new",
    "next_pane", "prev_pane", "quit_command", "regenerate", "reset", "resume", "save", "set_setting", "stop", "system",
    "theme", "undo", "upload",
]
