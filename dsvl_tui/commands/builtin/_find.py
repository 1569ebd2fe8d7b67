"""``/find``: search every conversation the app keeps (``storage.search_index``), and open one at the match."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from dsvl_tui.commands.builtin._shared import plural
from dsvl_tui.commands.builtin.opening import open_journaled, open_with_notice, read_transcript
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import FoundConversation, Session
from dsvl_tui.core.conversation import TITLE_CHARS, Conversation
from dsvl_tui.core.text import error_line, shorten

if TYPE_CHECKING:
    from dsvl_tui.storage.search_index import Hit, Record

FIND_LIMIT = 20  # as /resume lists: more than a screen holds, and each costs a snippet
USAGE = "/find WORDS"


def found_detail(hit: Hit) -> str:
    """What goes beside a found conversation's title: "2026-05-01 14:03, 2 pictures" (the pictures only if any)."""
    parts = [time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.updated))]
    if hit.pictures:
        parts.append(plural(hit.pictures, "picture"))
    if hit.kind == "saved":
        parts.append(f"saved as {shorten(str(hit.path), 60)}")
    return ", ".join(parts)


def search(text: str, limit: int = FIND_LIMIT) -> list[Hit]:
    """The index's answer; a problem with it (a locked or unwritable data folder) as one ``CommandError`` line."""
    import sqlite3

    from dsvl_tui.storage.search_index import QueryError, SearchIndex

    index = SearchIndex()
    try:
        return index.search(text, limit)
    except QueryError as exc:
        raise CommandError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise CommandError(f"cannot search ({index.path}): {error_line(exc)}") from None
    finally:
        index.close()


def index_saved(path: Path, record: Record) -> None:
    """Index a transcript saved or loaded here (best effort: the index is never the source of truth)."""
    from dsvl_tui.storage.search_index import SearchIndex

    index = SearchIndex()
    try:
        index.put_saved(path, record)
    except Exception:  # noqa: BLE001 - a search misses it at worst; the transcript itself is safe
        pass
    finally:
        index.close()


@registry.command("find", "Find words in every saved and autosaved conversation", USAGE)
def find(session: Session, args: str) -> None:
    """Lists the conversations with a message holding all the WORDS (any case and accents; a word
    ending in * is a prefix; picture names count), best match first, with the text around it. In the
    app, Enter opens the one picked at that message; in the plain REPL, `/find --open N WORDS` does.
    Searched: every autosaved conversation and every transcript /save wrote or /load read."""
    text, number = args.strip(), None
    if text.startswith("--open"):
        flag, _, rest = text.partition(" ")
        number_word, _, text = rest.strip().partition(" ")
        if flag != "--open" or not number_word.isdigit() or not text.strip():
            raise CommandError("usage: /find --open N WORDS (N as the list of /find WORDS numbers them)")
        number = int(number_word)
    if not text:
        raise CommandError(f"usage: {USAGE}")

    def show(hits: list[Hit]) -> None:
        choices = [FoundConversation(hit, shorten(hit.title, TITLE_CHARS) or "untitled", found_detail(hit))
                   for hit in hits]
        if number is None:
            if not choices:
                session.info(f"nothing found for {shorten(text, 60)}")
                return
            session.choose_found(choices, lambda choice: open_found(session, choice), text)
            return
        if not 1 <= number <= len(choices):
            raise CommandError(f"no conversation {number}; /find {shorten(text, 40)} lists {len(choices)}")
        open_found(session, choices[number - 1])

    _words_of(text)
    if _first_build():
        session.info("building the search index of your conversations (once: some seconds for thousands)")
    session.read_then(lambda: search(text), show)


def _words_of(text: str) -> str:
    """The FTS5 query for ``text``; a ``CommandError`` when it holds no word (said before anything is built)."""
    from dsvl_tui.storage.search_index import QueryError, match_query

    try:
        return match_query(text)
    except QueryError as exc:
        raise CommandError(str(exc)) from None


def _first_build() -> bool:
    """Whether this search builds the index from scratch (a stat: fine on the event loop)."""
    from dsvl_tui.storage.paths import data_dir
    from dsvl_tui.storage.search_index import INDEX_FILE

    return not (data_dir() / INDEX_FILE).exists()


def open_found(session: Session, choice: FoundConversation) -> None:
    """Open a found conversation the way /resume (autosaved) or /load (a transcript) does, at its message."""
    hit = choice.hit

    def at_message(conv: Conversation) -> None:
        if conv.messages:
            session.show_message(conv, min(hit.message, len(conv.messages) - 1))

    if hit.kind == "journal":
        from dsvl_tui.storage.journal import Journal

        journal = Journal()
        open_journaled(session, journal, journal.path_for(hit.path.stem), choice.title, at_message)
        return
    from dsvl_tui.storage import transcript

    def opened(conv: Conversation) -> None:
        open_with_notice(session, conv, f"opened {conv.path or hit.path}")
        at_message(conv)

    session.read_then(lambda: read_transcript(hit.path, lambda: transcript.load_transcript(hit.path)), opened)


def run_find(text: str, *, json_output: bool = False, limit: int = FIND_LIMIT) -> int:
    """``dsvl-chat find``: the list (or ``--json``) on stdout, problems on stderr; returns the exit code."""
    import json
    import sys

    from dsvl_tui.core.text import printable

    try:
        _words_of(text)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if _first_build():
        print("building the search index of your conversations (once: some seconds for thousands)", file=sys.stderr)
    try:
        hits = search(text, limit)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    if json_output:
        results = [{
            "title": hit.title, "updated": _iso(hit.updated), "kind": hit.kind, "path": printable(str(hit.path)),
            "id": hit.path.stem if hit.kind == "journal" else None, "message": hit.message,
            "messages": hit.messages, "pictures": hit.pictures, "snippet": hit.snippet_text,
            "matches": _matches(hit), "score": hit.score,
        } for hit in hits]
        print(json.dumps({"query": printable(text), "results": results}, ensure_ascii=False, indent=2))
    elif hits:
        for number, hit in enumerate(hits, 1):
            where = ("dsvl-chat --resume, or /find in the app" if hit.kind == "journal"
                     else f"/load {printable(str(hit.path))}")
            print(f"{number:>3}. {printable(hit.title) or 'untitled'} ({printable(found_detail(hit))})\n"
                  f"     {printable(hit.snippet_text)}\n     message {hit.message + 1} of {hit.messages}; {where}")
    else:
        print(f"nothing found for {printable(shorten(text, 60))}", file=sys.stderr)
    return 0 if hits else 1


def _iso(epoch: float) -> str:
    from dsvl_tui.storage.transcript.format import format_time

    try:
        return format_time(epoch)
    except (ValueError, OverflowError, OSError):
        return ""


def _matches(hit: Hit) -> list[list[int]]:
    """Where the matched words are in ``snippet_text``: [start, end) character offsets."""
    spans, at = [], 0
    for text, matched in hit.snippet:
        if matched:
            spans.append([at, at + len(text)])
        at += len(text)
    return spans
