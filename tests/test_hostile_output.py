"""Hostile text never reaches the terminal: file names, a transcript, the model's words.

A transcript whose messages, error field and image names hold escape
sequences, and image files named with them, are driven through the TUI
(headless) and the plain REPL. What the TUI would write to the terminal is
every segment of a full-screen update; what the REPL writes is its stderr.
Neither may hold an escape, a C0/C1 control (but newline and tab) or a
surrogate, except the REPL's own colour codes.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image
from tui_support import FIXED_INFO, ScriptedEngine, run_async, scripted_loader, wait_for

from dsvl_tui.commands.completion import path_matches
from dsvl_tui.core.conversation import Attachment, ChatMessage, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from dsvl_tui.tui.app import DsvlApp
from dsvl_tui.tui.widgets import AssistantMessage, PromptInput

# Retitle the window, write the clipboard (ST-terminated), clear the screen, reset the terminal.
HOSTILE = "\x1b]0;PWNED\x07\x1b]52;c;SGVsbG8=\x1b\\\x1b[2J\x1bc\x9b31m"
UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data and config folders are the test's own already (conftest.private_dirs)


def terminal_leaks(app) -> list[str]:
    """Text in a full redraw of the screen (what Textual writes) that a terminal would act on."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    leaks = []
    for line in update.strips:
        for strip in line:
            for segment in strip:
                if segment.control:  # Textual's own cursor moves
                    continue
                if UNSAFE.search(segment.text) or (segment.style and UNSAFE.search(segment.style.link or "")):
                    leaks.append(segment.text)
    return leaks


def hostile_files(folder: Path) -> Path:
    """Pictures named with escape sequences, and a transcript full of them; returns the transcript."""
    from dsvl_tui.storage.transcript import save_transcript

    picture = folder / f"pic{HOSTILE}.png"
    Image.new("RGB", (16, 12), "red").save(picture)
    Image.new("RGB", (16, 12), "blue").save(os.fsdecode(os.fsencode(str(folder)) + b"/pic\xff.png"))
    conv = Conversation(title=f"title{HOSTILE}")
    user = conv.add_user(f"question{HOSTILE}")
    user.images.append(Attachment.from_path(picture))
    conv.messages.append(ChatMessage("assistant", f"answer{HOSTILE}", error=f"boom{HOSTILE} at /x/[/b]"))
    return save_transcript(conv, folder / "chat.json")


def test_completion_never_offers_an_unprintable_name(tmp_path):
    hostile_files(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert path_matches("p") == ["plain.png"]


@pytest.mark.slow
@run_async
async def test_hostile_transcript_and_file_names_never_reach_the_tui_screen(tmp_path):
    transcript = hostile_files(tmp_path)
    app = DsvlApp(Options(model=FIXED_INFO.model_id), loader=scripted_loader(ScriptedEngine()))
    async with app.run_test(size=(160, 60)) as pilot:
        await wait_for(pilot, lambda: app.engine is not None)
        app.run_command(f"/load {transcript.name}")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2)
        await wait_for(pilot, lambda: app.active.query(AssistantMessage))
        marker = str(app.active.query_one(AssistantMessage).query_one(".marker").render())
        assert marker.startswith("error: boom") and "[/b]" in marker
        assert terminal_leaks(app) == []

        # Path completion as you type, before any Enter: the ghost text and the hint.
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await pilot.press(*"/image pic")
        await pilot.pause()
        assert not UNSAFE.search(prompt.suggestion)
        assert terminal_leaks(app) == []

        # /edit puts the hostile question back into the input box.
        prompt.load_text_at_end("")
        app.run_command("/edit")
        await pilot.pause()
        assert prompt.text.startswith("question") and not UNSAFE.search(prompt.text)
        assert terminal_leaks(app) == []

        # A notification naming a path: neither escapes nor markup ("[/b]" once crashed it).
        app.notify(f"could not save {tmp_path}/[/b]{HOSTILE}", severity="warning")
        await pilot.pause()
        assert terminal_leaks(app) == []


def test_hostile_transcript_never_reaches_the_repl_output(tmp_path):
    from dsvl_tui.storage.journal import Journal
    from dsvl_tui.storage.transcript import load_transcript

    transcript = hostile_files(tmp_path)
    assert Journal().record(load_transcript(transcript)) is None  # for /resume to list and open
    err = io.StringIO()
    repl = Repl(Options(model="none"), engine_factory=lambda model, progress: None, stdout=io.StringIO(),
                stderr=err, stdin=io.StringIO(), colour=True)
    for line in (f"/load {transcript.name}", "/resume", "/resume 1", "/pending", "/image pic"):
        repl.handle(line)
    repl._on_load_event("error", f"cannot load {HOSTILE}")
    repl._on_load_event("ready", f"model{HOSTILE}")
    repl._flush_notes()
    written = err.getvalue()
    assert "[image: pic.png] question" in written and "answer" in written and "model is ready" in written
    ours = written.replace("\x1b[2m", "").replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert not UNSAFE.search(ours), [m for m in UNSAFE.finditer(ours)][:3]
