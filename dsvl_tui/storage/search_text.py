"""What the search index keeps and shows: a conversation's ``Record``, a search's ``Hit``, the user's words made
an FTS5 query (``match_query``), and a snippet's pieces. ``search_index`` is the index itself.

An answer's compared answer (``/compare``: ``ChatMessage.compared``, a transcript's ``compared``) is indexed too,
as a row of its own under the same message number: a word only the compared model said finds the conversation,
at that message, and the snippet starts with the compared model's name (``compared_label``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsvl_tui.core.conversation import side_label
from dsvl_tui.core.text import printable, shorten
from dsvl_tui.storage.transcript.format import FORMAT, MAX_FILE_BYTES, parse_time

MAX_WORDS = 32
MATCH_START, MATCH_END = "\x02", "\x03"  # snippet markers: controls, so never in the (printable) indexed text
LABEL_CHARS = 60  # a compared model's name in a snippet: a path or a long hub id is cut to this


class QueryError(ValueError):
    """A search with nothing to look for; ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Record:
    """What the index keeps of one conversation: its title, when it changed, per message (text, picture names),
    and per compared answer (the number of the message it is kept on, the compared model's label, its text)."""

    title: str
    updated: float
    messages: tuple[tuple[str, str], ...]
    pictures: int
    saved: str = ""  # a journal entry's /save file, if any
    compared: tuple[tuple[int, str, str], ...] = ()

    @classmethod
    def of_conversation(cls, conv: Any) -> Record:
        messages = tuple((m.text, ", ".join(a.label for a in m.images)) for m in conv.messages)
        pictures = sum(len(m.images) for m in conv.messages)
        saved = str(conv.path) if getattr(conv, "path", None) else ""
        compared = tuple((number, compared_label(m.compared.model, m.compared.quantize), m.compared.text)
                         for number, m in enumerate(conv.messages) if getattr(m, "compared", None) is not None)
        return cls(conv.title, conv.updated, messages, pictures, saved, compared)

    @classmethod
    def of_document(cls, doc: Any) -> Record | None:
        """From a transcript's JSON object (ours); None if it is not one. Types are checked, nothing else."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("messages"), list):
            return None
        messages: list[tuple[str, str]] = []
        compared: list[tuple[int, str, str]] = []
        pictures = 0
        for message in doc["messages"]:
            if not isinstance(message, dict):
                continue
            text = message.get("text")
            text = text if isinstance(text, str) else ""
            images = message.get("images")
            images = images if isinstance(images, list) else []
            names = [i["name"] for i in images if isinstance(i, dict) and isinstance(i.get("name"), str)]
            pictures += len(images)
            other = message.get("compared")
            if isinstance(other, dict) and isinstance(other.get("text"), str):
                model, quantize = other.get("model"), other.get("quantize")
                compared.append((len(messages), compared_label(model if isinstance(model, str) else "",
                                                               quantize if isinstance(quantize, str) else "none"),
                                 other["text"]))
            messages.append((text, ", ".join(names)))
        try:
            updated = parse_time(doc["updated"]) if isinstance(doc.get("updated"), str) else 0.0
        except (ValueError, OverflowError):
            updated = 0.0
        title = doc["title"] if isinstance(doc.get("title"), str) else ""
        saved = doc["saved_path"] if isinstance(doc.get("saved_path"), str) else ""
        return cls(title, updated, tuple(messages), pictures, saved, tuple(compared))


def compared_label(model: str, quantize: str = "none") -> str:
    """How a snippet names the compared model: as its answers are labelled in the app (``side_label``), made
    printable and cut, for it comes from a file."""
    return shorten(printable(side_label(model or "the compared model", quantize=quantize or "none")), LABEL_CHARS)


@dataclass(frozen=True)
class Hit:
    """One conversation found: where it is, and its best message with a snippet around the match."""

    kind: str  # "journal" (autosaved; opened as /resume opens it) or "saved" (a transcript; as /load opens it)
    path: Path  # the journal entry or the transcript
    title: str  # printable
    updated: float
    pictures: int
    messages: int
    message: int  # the index of the best matching message
    snippet: tuple[tuple[str, bool], ...]  # (text, matched) pieces, printable, on one line
    score: float | None  # bm25: lower is better; None when listed newest first (see ``RANKED_MATCHES``)
    compared: str = ""  # the best match is that message's compared answer: the compared model's label

    @property
    def snippet_text(self) -> str:
        return "".join(text for text, _ in self.snippet)


def match_query(text: str) -> str:
    """The user's words as an FTS5 query: each a quoted phrase (a trailing ``*``: a prefix), all required.

    Nothing of FTS5's syntax gets through: quotes are doubled inside the phrase, operators are words.
    Raises ``QueryError`` when no word is left (only punctuation, or nothing).
    """
    words = []
    for chunk in printable(text).split():  # no controls: a NUL would end the query early
        core = chunk.rstrip("*")
        if not any(c.isalnum() for c in core):
            continue
        words.append('"' + core.replace('"', '""') + '"' + ("*" if core != chunk else ""))
    if not words:
        raise QueryError("nothing to find: give a word or more")
    if len(words) > MAX_WORDS:
        raise QueryError(f"too many words ({len(words)}); give at most {MAX_WORDS}")
    return " ".join(words)


def read_record(path: Path, kind: str) -> Record | None:
    """A conversation file read again for the index; None if it cannot be read or is not a transcript."""
    from engine.files import read_regular

    if kind == "saved":  # anything /load opens (upstream's format too), through the validated reader
        from dsvl_tui.storage.transcript.format import TranscriptError
        from dsvl_tui.storage.transcript.read import read

        try:
            return Record.of_conversation(read(path)[0])
        except (TranscriptError, OSError, ValueError):
            return None
    try:  # the journal's own files: read as JSON, only the fields the index keeps
        return Record.of_document(json.loads(read_regular(path, MAX_FILE_BYTES)))
    except (OSError, ValueError, RecursionError):
        return None


def snippet_pieces(snippet: str, compared: str = "") -> tuple[tuple[str, bool], ...]:
    """A snippet with its match markers as (text, matched) pieces, each made printable, all on one line; a compared
    answer's starts with the compared model's label, so every front end says whose answer it is."""
    pieces: list[tuple[str, bool]] = [(f"[{printable(compared)}] ", False)] if compared else []
    for n, part in enumerate(" ".join(snippet.split()).split(MATCH_START)):
        matched, _, rest = part.partition(MATCH_END) if n else ("", "", part)
        for text, hit in ((matched, True), (rest, False)):
            text = printable(text)
            if text:
                pieces.append((text, hit))
    return tuple(pieces)
