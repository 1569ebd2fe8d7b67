"""The transcript file format: its name and version, size limits, field types and error.

``transcript_write`` turns a conversation into a transcript (``document()``,
``encode()``, ``ImageFolder``); ``transcript_read`` turns a file or a decoded
JSON value back into a ``Conversation``, with validation (``read()``,
``parse()``). Every problem is a ``TranscriptError`` naming the field
(``messages[3].images[0].sha256``).

The format is documented in ``docs/transcripts.md``; keep the two in step.
"""

from __future__ import annotations

import os
from dataclasses import fields
from datetime import datetime, timezone

from engine.types import GenerationSettings, GenerationStats

FORMAT = "dsvl-chat.transcript"
VERSION = 2  # what this dsvl-chat writes; 2 added message ids and branches (docs/transcripts.md)
READABLE_VERSIONS = (1, 2)  # what it reads: a version-1 file is a conversation without branches
# Limits a real chat never meets; past them a file is refused with a one-line error (docs/transcripts.md).
MAX_FILE_BYTES = 512 * 2**20  # a transcript file larger than this is refused before it is read
MAX_IMAGE_BYTES = 64 * 2**20  # one embedded (base64) image, decoded
MAX_TEXT_CHARS = 2**20  # one message's text (also the system prompt and the title), in characters
MAX_MESSAGES = 10_000  # messages in one transcript
UPSTREAM_TAG = "<image_placeholder>"


class TranscriptError(Exception):
    """A transcript that cannot be read or written; ``str()`` is one line for the user.

    ``source`` is the file, ``field`` the JSON path of the problem (empty when
    it concerns the whole file), ``problem`` what is wrong and what to do.
    """

    def __init__(self, source: str | os.PathLike, field: str, problem: str) -> None:
        self.source = str(source)
        self.field = field
        self.problem = problem
        parts = [self.source, field, problem] if field else [self.source, problem]
        super().__init__(one_line(": ".join(parts)))


def one_line(text: str) -> str:
    """``text`` on one line, every run of whitespace or unprintable characters one space (file names
    in a transcript error may hold anything); errors elsewhere use ``dsvl_tui.core.text.error_line``."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


# --- times --------------------------------------------------------------------


def format_time(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the millisecond: ``2024-05-01T12:03:07.250Z``."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO 8601 (``Z`` or any offset; no offset is read as UTC) to epoch seconds; ``ValueError`` if not."""
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    epoch = moment.timestamp()
    datetime.fromtimestamp(epoch, timezone.utc)  # refuse what could not be written back
    return epoch


# --- field types --------------------------------------------------------------

# JSON kinds for the annotations used by GenerationSettings and GenerationStats.
# (An annotation not listed accepts any JSON scalar; a test checks every field is listed.)
_KINDS = {"bool": ("boolean",), "int": ("integer",), "float": ("number",), "str": ("string",),
          "int | None": ("integer", "null"), "float | None": ("number", "null"), "str | None": ("string", "null"),
          "StopReason | None": ("string", "null")}
_ANY_SCALAR = ("null", "boolean", "number", "string")
SETTINGS_FIELDS = {f.name: _KINDS.get(str(f.type), _ANY_SCALAR) for f in fields(GenerationSettings)}
STATS_FIELDS = {f.name: _KINDS.get(str(f.type), _ANY_SCALAR) for f in fields(GenerationStats)}
