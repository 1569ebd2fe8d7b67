"""Commands that read and write transcripts: /save, /load, /export and /resume."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvl_tui.commands.builtin._find import index_saved
from dsvl_tui.commands.builtin._shared import plural, shell_words, split_flags
from dsvl_tui.commands.builtin._web import (
    deliver_export,
    deliver_transcript,
    load_needs_upload,
    web_export_target,
    web_side,
)
from dsvl_tui.commands.builtin.opening import open_journaled, open_with_notice, read_transcript
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import RecentConversation, Session
from dsvl_tui.core.branches import all_messages
from dsvl_tui.core.conversation import TITLE_CHARS, Conversation
from dsvl_tui.core.text import shorten
from dsvl_tui.storage import atomic, transcript

if TYPE_CHECKING:
    from dsvl_tui.storage.journal import JournalEntry

RESUME_LIMIT = 20


def _quoted(path: Path | str) -> str:
    return shlex.quote(str(path))


def _target(word: str, suffix: str) -> Path:
    path = Path(word).expanduser()
    return path if path.suffix else path.with_suffix(suffix)


def _refuse_overwrite(target: Path, command: str, flags: set[str]) -> None:
    if target.exists() and not flags & {"--force", "-f"}:
        raise CommandError(f"{target} exists; /{command} {_quoted(target)} --force overwrites it")


def _refuse_changed(conv: Any, target: Path) -> None:
    """Refuse to replace ``target`` unless it is the file this program last wrote or read there:
    another dsvl-chat (or anything else) may have written it since."""
    now = atomic.stamp(target)
    if now is None:
        return
    own = conv.path is not None and os.path.realpath(conv.path) == os.path.realpath(target)
    expected = conv.path_stamp if own else atomic.last_written(target)
    if now != expected:
        raise CommandError(f"{target} changed on disk since this dsvl-chat last saved or loaded it; "
                           f"/save {_quoted(target)} --force replaces it, or /save NEW.json keeps both")


def _entry_detail(entry: JournalEntry, now: float) -> str:
    """What tells apart conversations with the same title: "4 messages, 2026-05-01 14:03 (2 hours ago),
    image cat.jpg" (the first image's name, if any)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.updated))
    parts = [plural(entry.message_count, "message"), f"{when} ({_ago(entry.updated, now)})"]
    if entry.first_image:
        parts.append(f"image {shorten(entry.first_image, 40)}")
    return ", ".join(parts)


def _ago(epoch: float, now: float | None = None) -> str:
    seconds = max(0.0, (now or time.time()) - epoch)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return f"{plural(int(seconds // size), unit)} ago"
    return "just now"


@registry.command("save", "Save the conversation as a transcript", "/save [FILE] [--force] [--embed]",
                  completes_paths=True)
def save(session: Session, args: str) -> None:
    """Without FILE: the file the conversation came from or was last saved to, else a new file
    in the app's data folder. An existing other file is only replaced with --force. --embed
    stores the images inside the transcript, so it travels on its own. In `dsvl-chat web`
    your browser also downloads it, with its pictures inside."""
    usage = "/save [FILE] [--force] [--embed]"
    files, flags = split_flags(shell_words(args), {"--force", "-f", "--embed"}, usage)
    if len(files) > 1:
        raise CommandError(f"/save takes one file name (quote names with spaces); usage: {usage}")
    conv = session.conversation
    if not conv.message_count():  # after /edit 1 the path is empty, and its branches are worth saving
        raise CommandError("nothing to save yet")
    if files:
        target = _target(files[0], ".json")
        if transcript.would_overwrite(conv, target):
            _refuse_overwrite(target, "save", flags)
    else:
        target = conv.path or transcript.default_save_path(conv)
    if not flags & {"--force", "-f"}:
        _refuse_changed(conv, target)
    for message in all_messages(conv):  # an original deleted since it was attached: autosave's copy stands in
        for att in message.images:
            att.recover()
    try:
        saved = transcript.save_transcript(conv, target, embed_images="--embed" in flags)
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot save {target}: {exc.strerror or exc}") from None
    conv.path_stamp = atomic.last_written(saved)
    _index_saved_later(session, saved, conv)
    session.refresh()
    session.info(f"saved to {saved}{deliver_transcript(session, conv, saved, embedded='--embed' in flags)}")


@registry.command("load", "Open a saved transcript", "/load FILE", completes_paths=True)
def load(session: Session, args: str) -> None:
    """Opens a transcript saved by /save (or upstream DeepSeek-VL's conversation list). Images
    the transcript names but that are gone are shown as missing and not sent to the model.
    In `dsvl-chat web`, `/load` alone opens a page to upload a transcript from your computer."""
    words = shell_words(args)
    if not words and load_needs_upload(session):
        return
    if len(words) != 1:
        raise CommandError("usage: /load FILE (quote names with spaces)")
    path = Path(words[0]).expanduser()
    def read() -> Conversation:
        conv = read_transcript(path, lambda: transcript.load_transcript(path))
        _index_saved(conv.path or path, conv)
        return conv

    session.read_then(read, lambda conv: open_with_notice(session, conv, f"opened {conv.path or path}"))


def _index_saved(path: Path, conv: Conversation) -> None:
    """For /find: a transcript saved or loaded here is indexed (it cannot know of any other)."""
    from dsvl_tui.storage.search_index import Record

    index_saved(path, Record.of_conversation(conv))


def _index_saved_later(session: Session, path: Path, conv: Conversation) -> None:
    """``_index_saved`` off the event loop, for what the conversation holds now."""
    from dsvl_tui.storage.search_index import Record

    record = Record.of_conversation(conv)
    session.read_then(lambda: index_saved(path, record), lambda _: None)


@registry.command("export", "Write the conversation as Markdown", "/export FILE.md [--force]",
                  completes_paths=True)
def export(session: Session, args: str) -> None:
    """Writes a readable Markdown copy (it cannot be loaded back; /save for that). An
    existing file is only replaced with --force. In `dsvl-chat web` your browser also
    downloads it, and `/export` alone names the file for you."""
    usage = "/export FILE.md [--force]"
    files, flags = split_flags(shell_words(args), {"--force", "-f"}, usage)
    conv = session.conversation
    if not files and web_side(session) is not None:  # a browser user has no server path to name
        if not conv.messages:
            raise CommandError("nothing to export yet")
        files = [str(web_export_target(session))]
    if len(files) != 1:
        raise CommandError(f"usage: {usage}")
    if not conv.messages:
        raise CommandError("nothing to export yet")
    target = _target(files[0], ".md")
    _refuse_overwrite(target, "export", flags)
    try:
        written = transcript.export_markdown(conv, target)
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    session.info(f"exported to {written}{deliver_export(session, written)}")


@registry.command("resume", "List recent conversations, or open one", "/resume [N]")
def resume(session: Session, args: str) -> None:
    """Every conversation is saved as you go; `/resume` lists the most recent ones (in the
    app: a list with a preview, Enter opens one) and `/resume N` opens number N."""
    words = args.split()
    if len(words) > 1 or (words and not words[0].isdigit()):
        raise CommandError("usage: /resume [N]")
    from dsvl_tui.storage.journal import Journal

    journal = Journal()

    def open_entry(choice: RecentConversation) -> None:
        open_journaled(session, journal, choice.entry.path, choice.title)

    def show(entries: list[JournalEntry]) -> None:
        now = time.time()
        choices = [RecentConversation(entry, shorten(entry.title, TITLE_CHARS) or "untitled",
                                      _entry_detail(entry, now)) for entry in entries]
        if not words:
            if not entries:
                session.info("no saved conversations yet")
                return
            session.choose_conversation(choices, open_entry)
            return
        number = int(words[0])
        if not 1 <= number <= len(entries):
            raise CommandError(f"no conversation {number}; /resume lists {len(entries)}")
        open_entry(choices[number - 1])

    # Up to RESUME_LIMIT JSON files: read where it cannot freeze the TUI's event loop.
    session.read_then(lambda: journal.recent(RESUME_LIMIT), show)
