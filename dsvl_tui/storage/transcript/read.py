"""Reading a transcript: a file or a decoded JSON value to a ``Conversation``, with validation.

``parse()`` turns a decoded JSON value (our object, or upstream DeepSeek-VL's
conversation list) back into a ``Conversation``; ``read()`` does the same for a
file. Reading only reads: image files are opened to check their hash, nothing
is written, nothing is executed. Every problem is a ``TranscriptError`` naming
the field (``messages[3].images[0].sha256``).

The size limits are read from ``transcript_format`` when a file is read, so
lowering them there (as a test does) takes effect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any, NoReturn, get_args

from dsvl_tui.core.branches import ROOT, Tree
from dsvl_tui.core.conversation import (
    TITLE_CHARS,
    Attachment,
    ChatMessage,
    ComparedAnswer,
    Conversation,
    new_message_id,
)
from dsvl_tui.core.text import shorten, valid_text
from dsvl_tui.storage.transcript import format as fmt
from dsvl_tui.storage.transcript.format import (
    FORMAT,
    READABLE_VERSIONS,
    SETTINGS_FIELDS,
    STATS_FIELDS,
    UPSTREAM_TAG,
    VERSION,
    TranscriptError,
    one_line,
    parse_time,
)
from dsvl_tui.storage.transcript.image_files import Place, attachment, locate
from engine.files import open_regular
from engine.types import LAYOUTS, QUANTIZE_MODES, GenerationSettings, GenerationStats, StopReason

_REQUIRED = object()
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STOP_REASONS = get_args(StopReason)


def decode(raw: bytes, source: str) -> Any:
    """Bytes to a JSON value; anything that is not strict JSON is a ``TranscriptError``."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TranscriptError(source, "", f"not UTF-8 text (bad byte at offset {error.start}); not a transcript") \
            from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}: {error.msg}"
        raise TranscriptError(source, "", f"not JSON ({where})") from None
    except (ValueError, RecursionError) as error:
        raise TranscriptError(source, "", f"not JSON ({one_line(str(error)) or 'nested too deeply'})") from None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_A_KIND = {"null": "null", "boolean": "true or false", "integer": "an integer", "number": "a number",
           "string": "a string", "array": "an array", "object": "an object"}


def _got(value: Any) -> str:
    kind = _kind(value)
    if kind in ("string", "integer", "number", "boolean"):
        shown = repr(value) if kind == "string" else json.dumps(value)
        return f"{kind} {shown[:40]}{'...' if len(shown) > 40 else ''}"
    return kind


class Reader:
    """Turns a decoded JSON value into a ``Conversation``, naming the field of any problem.

    ``base`` is the transcript's folder: relative image paths resolve against
    it; ``stem`` its file name without the extension (``chat`` for
    ``chat.json``), which names its image folder. ``warnings`` collects one
    line per image that could not be used (the attachment is kept, marked
    missing).

    A file the user loads may only refer to image files inside its own image
    folder (see ``locate`` and ``file``). ``trusted`` is for the app's own
    autosave journal: there an image with a recorded hash may also come from
    an absolute path, through ``..`` or from its ``source``, since only bytes
    with that hash are accepted.
    """

    def __init__(self, source: str, base: Path, *, trusted: bool = False, stem: str | None = None) -> None:
        self.source = source
        self.base = base
        self.trusted = trusted
        self.stem = PurePath(source).stem if stem is None else stem
        self.warnings: list[str] = []
        self.version: int = 0  # the file's format version, once read (``transcript``); 0 for upstream's lists
        self.ids: set[str] = set()  # the message ids read so far

    def fail(self, where: str, problem: str) -> NoReturn:
        raise TranscriptError(self.source, where, problem)

    def take(self, obj: dict, key: str, where: str, kinds: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in obj:
            if default is _REQUIRED:
                self.fail(path, "missing")
            return default
        value = obj[key]
        kind = _kind(value)
        if not (kind in kinds or (kind == "integer" and "number" in kinds)):
            wanted = " or ".join(_A_KIND[k] for k in kinds)
            self.fail(path, f"expected {wanted}, got {_got(value)}")
        if kind == "number" and not math.isfinite(value):
            self.fail(path, "must be a finite number")
        return value

    def object(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected an object, got {_got(value)}")
        return value

    def text(self, obj: dict, key: str, where: str, kinds: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        """``take`` for text the app shows and the model reads: at most ``MAX_TEXT_CHARS`` characters."""
        value = self.take(obj, key, where, kinds, default)
        if isinstance(value, str) and len(value) > fmt.MAX_TEXT_CHARS:
            self.fail(f"{where}.{key}" if where else key,
                      f"{len(value):,} characters is more than the {fmt.MAX_TEXT_CHARS:,} a message may hold; "
                      "not a chat transcript")
        # JSON's "\ud800" is valid JSON but not text: no tokenizer or UTF-8 file takes it. U+FFFD instead.
        return valid_text(value) if isinstance(value, str) else value

    def count(self, items: list, where: str) -> None:
        if len(items) > fmt.MAX_MESSAGES:
            self.fail(where, f"{len(items):,} messages is more than the {fmt.MAX_MESSAGES:,} a transcript may hold; "
                             "split the conversation")

    def time(self, obj: dict, key: str, where: str, default: float) -> float:
        text = self.take(obj, key, where, ("string",), None)
        if text is None:
            return default
        try:
            return parse_time(text)
        except (ValueError, OverflowError, OSError):
            shown = repr(text)[:40]
            self.fail(f"{where}.{key}" if where else key,
                      f"expected an ISO 8601 time such as '2024-05-01T12:00:00Z', got {shown}")

    # --- our format -----------------------------------------------------------

    def transcript(self, doc: dict) -> Conversation:
        kind = self.take(doc, "format", "", ("string",))
        if kind != FORMAT:
            self.fail("format", f"expected {FORMAT!r}, got {_got(kind)}; this is not a dsvl-chat transcript")
        self.version = self.take(doc, "version", "", ("integer",))
        if self.version > VERSION:
            self.fail("version", f"version {self.version} is newer than this dsvl-chat reads ({VERSION}); "
                                 "update dsvl-chat to open it")
        if self.version not in READABLE_VERSIONS:
            self.fail("version", f"unknown version {self.version}; this dsvl-chat reads versions "
                                 f"{', '.join(map(str, READABLE_VERSIONS))}")
        items = self.take(doc, "messages", "", ("array",))
        self.count(items, "messages")
        kept = self.take(doc, "branches", "", ("array",), []) if self.version >= 2 else []
        if len(items) + len(kept) > fmt.MAX_MESSAGES:
            self.fail("branches", f"{len(items) + len(kept):,} messages with the branches is more than the "
                                  f"{fmt.MAX_MESSAGES:,} a transcript may hold; split the conversation")
        created = self.time(doc, "created", "", datetime.now(timezone.utc).timestamp())
        conv = Conversation(
            system=self.text(doc, "system", "", ("string", "null"), None),
            settings=self.settings(doc),
            model=self.take(doc, "model", "", ("string",), ""),
            endpoint=self.take(doc, "endpoint", "", ("string",), ""),
            quantize=self.quantize(doc),
            layout=self.layout(doc),
            created=created,
            updated=self.time(doc, "updated", "", created),
        )
        conv.messages = [self.message(item, f"messages[{i}]", created) for i, item in enumerate(items)]
        self.branches(conv, kept, created)
        title = self.text(doc, "title", "", ("string",), None)
        conv.title = title if title is not None else _title(conv.messages)
        return conv

    def branches(self, conv: Conversation, items: list, created: float) -> None:
        """Version 2's ``branches``: messages off the current path, each under the message it follows."""
        if not items:
            return
        parents = []
        for i, item in enumerate(items):
            where = f"branches[{i}]"
            message = self.message(item, where, created)
            parent = self.take(item, "parent", where, ("string", "null"))
            parents.append((message, ROOT if parent is None else parent, f"{where}.parent"))
        for message, parent, where in parents:
            if parent != ROOT and parent not in self.ids:
                self.fail(where, f"no message has the id {parent!r:.40}")
            conv.alternatives.setdefault(parent, []).append(message)
        reached = {message.id for message in Tree(conv).reachable()}
        for message, _, where in parents:
            if message.id not in reached:
                self.fail(where, "its parents lead back to itself, never to the conversation's start")

    def quantize(self, doc: dict) -> str:
        value = self.take(doc, "quantize", "", ("string",), "none")
        if value not in QUANTIZE_MODES:
            self.fail("quantize", f"expected one of {', '.join(QUANTIZE_MODES)}, got {repr(value)[:40]}")
        return value

    def layout(self, doc: dict) -> str:
        value = self.take(doc, "layout", "", ("string",), "")
        if value and value not in LAYOUTS:
            self.fail("layout", f"expected one of {', '.join(LAYOUTS)}, got {repr(value)[:40]}")
        return value

    def settings(self, doc: dict, where: str = "") -> GenerationSettings:
        """``doc``'s settings (the conversation's; with ``where``, a compared answer's)."""
        obj = self.take(doc, "settings", where, ("object",), None)
        if obj is None:
            return GenerationSettings()
        path = f"{where}.settings" if where else "settings"
        for key in obj:
            if key not in SETTINGS_FIELDS:
                shown = key if len(key) <= 40 else key[:40] + "..."
                self.fail(f"{path}.{shown}", f"unknown setting; known: {', '.join(SETTINGS_FIELDS)}")
        values = {k: self.take(obj, k, path, kinds) for k, kinds in SETTINGS_FIELDS.items() if k in obj}
        try:
            return GenerationSettings(**values)
        except (ValueError, TypeError) as error:
            self.fail(path, str(error))

    def message(self, value: Any, where: str, created: float) -> ChatMessage:
        obj = self.object(value, where)
        role = self.take(obj, "role", where, ("string",))
        if role not in ("user", "assistant"):
            self.fail(f"{where}.role", f"expected 'user' or 'assistant', got {_got(role)}")
        text = self.text(obj, "text", where, ("string",))
        images = self.take(obj, "images", where, ("array",), [])
        stats = self.take(obj, "stats", where, ("object", "null"), None)
        return ChatMessage(
            id=self.message_id(obj, where),
            role=role,
            text=text,
            images=[self.image(item, f"{where}.images[{i}]") for i, item in enumerate(images)],
            created=self.time(obj, "created", where, created),
            stats=None if stats is None else self.stats(stats, f"{where}.stats"),
            stopped=self.take(obj, "stopped", where, ("boolean",), False),
            error=self.text(obj, "error", where, ("string", "null"), None),
            compared=self.compared(obj, where) if role == "assistant" else None,
        )

    def compared(self, obj: dict, where: str) -> ComparedAnswer | None:
        """An answer's optional ``compared``: the second model's answer (``/compare``), checked as the answer is."""
        value = self.take(obj, "compared", where, ("object", "null"), None)
        if value is None:
            return None
        where = f"{where}.compared"
        quantize = self.take(value, "quantize", where, ("string",), "none")
        if quantize not in QUANTIZE_MODES:
            self.fail(f"{where}.quantize", f"expected one of {', '.join(QUANTIZE_MODES)}, got {repr(quantize)[:40]}")
        settings = self.take(value, "settings", where, ("object", "null"), None)
        stats = self.take(value, "stats", where, ("object", "null"), None)
        model = self.text(value, "model", where, ("string",), "")
        return ComparedAnswer(
            model=model,
            text=self.text(value, "text", where, ("string",)),
            endpoint=self.text(value, "endpoint", where, ("string",), ""),
            quantize=quantize,
            settings=None if settings is None else self.settings(value, where),
            stats=None if stats is None else self.stats(stats, f"{where}.stats"),
            stopped=self.take(value, "stopped", where, ("boolean",), False),
            error=self.text(value, "error", where, ("string", "null"), None),
        )

    def message_id(self, obj: dict, where: str) -> str:
        """Version 2's ``id``: unique in the file (branches name the message they follow by it); a new one
        for a message without (version 1, upstream's lists)."""
        if self.version < 2 or "id" not in obj:
            message_id = new_message_id()
        else:
            found = obj["id"]  # not through take: it costs a tenth of reading a message
            message_id = found if isinstance(found, str) else str(self.take(obj, "id", where, ("string",)))
            if not _ID.fullmatch(message_id):
                self.fail(f"{where}.id", f"expected 1 to 64 letters, digits, '-' or '_', got {_got(message_id)}")
            if message_id in self.ids:
                self.fail(f"{where}.id", f"{message_id!r:.40} is the id of an earlier message too; each message "
                                         "needs its own")
        self.ids.add(message_id)
        return message_id

    def stats(self, obj: dict, where: str) -> GenerationStats:
        values = {}
        for key, kinds in STATS_FIELDS.items():
            if key not in obj:
                continue
            value = self.take(obj, key, where, kinds)
            if isinstance(value, (int, float)) and value < 0:
                self.fail(f"{where}.{key}", f"must not be negative, got {_got(value)}")
            if key == "stop_reason" and value is not None and value not in _STOP_REASONS:
                self.fail(f"{where}.{key}", f"expected one of {', '.join(_STOP_REASONS)} or null, got {_got(value)}")
            values[key] = value
        return GenerationStats(**values)

    def image(self, value: Any, where: str) -> Attachment:
        obj = self.object(value, where)
        name = self.take(obj, "name", where, ("string",), None)
        sha = self.take(obj, "sha256", where, ("string", "null"))
        if sha is not None:
            if not _HEX64.fullmatch(sha):
                self.fail(f"{where}.sha256", f"expected 64 hex digits, got {_got(sha)}")
            sha = sha.lower()
        if ("path" in obj) == ("data" in obj):
            self.fail(where, "needs either 'path' (a file) or 'data' (base64), not both or neither")
        if "data" in obj:
            data = self.base64(self.take(obj, "data", where, ("string",)), f"{where}.data")
            name = name or "image"
            actual = hashlib.sha256(data).hexdigest()
            if sha is not None and actual != sha:
                self.warnings.append(f"{where} ({name}): embedded data does not match its sha256")
                return Attachment(sha256=sha, missing=True, name=name)
            return Attachment(data=data, sha256=actual, name=name)
        text = self.take(obj, "path", where, ("string",))
        target, problem = self.locate(text, f"{where}.path", upstream=False, hashed=sha is not None)
        name = name or PurePath(text).name or "image"
        if target is None:  # kept as written, so saving again keeps the reference
            att = Attachment(path=text, sha256=sha, missing=True, name=name)
        else:
            att, problem = self.file(target, sha, name)
        source = self.take(obj, "source", where, ("string",), None)
        if att.missing and self.trusted and sha is not None and source and "\0" not in source \
                and Path(source).is_absolute():
            fallback, _ = self.file(Place(Path(source)), sha, name)
            if not fallback.missing:
                return fallback
        if problem:
            self.warnings.append(f"{where} ({name}): {problem}")
        return att

    def base64(self, text: str, where: str) -> bytes:
        compact = "".join(text.split())
        if len(compact) > (fmt.MAX_IMAGE_BYTES + 2) // 3 * 4:
            self.fail(where, f"image larger than {fmt.MAX_IMAGE_BYTES >> 20} MB; refer to a file instead")
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            self.fail(where, "not valid base64")

    def locate(self, text: str, where: str, *, upstream: bool, hashed: bool) -> tuple[Place | None, str]:
        """Where an image path from the file may be read, or (None, why it is refused): see
        ``image_files.locate``. Only the journal (``trusted``) may use absolute paths and ``..``, and only
        for an image with a recorded hash (its bytes are checked against it)."""
        if not text or "\0" in text:
            self.fail(where, f"not a usable file path: {text!r:.40}")
        if self.trusted and hashed:
            path = Path(text)
            return Place(path if path.is_absolute() else self.base / path), ""
        return locate(text, self.base, self.stem, upstream=upstream)

    def file(self, place: Place, sha: str | None, name: str) -> tuple[Attachment, str]:
        """An attachment for an image file, checked against ``sha``; marked missing (with why) if unusable."""
        return attachment(place, sha, name)

    # --- upstream DeepSeek-VL's list ---------------------------------------------

    def upstream(self, items: list) -> Conversation:
        """``[{"role": "User", "content": "<image_placeholder>...", "images": [...]}, ...]``."""
        if items and isinstance(items[-1], dict) and str(items[-1].get("role", "")).lower() == "assistant" \
                and items[-1].get("content") == "" and not items[-1].get("images"):
            items = items[:-1]  # upstream's open turn
        self.count(items, "")
        conv = Conversation()
        for index, value in enumerate(items):
            where = f"[{index}]"
            obj = self.object(value, where)
            role = self.take(obj, "role", where, ("string",))
            if role.lower() not in ("user", "assistant"):
                self.fail(f"{where}.role", f"expected 'User' or 'Assistant', got {_got(role)}")
            content = self.text(obj, "content", where, ("string",))
            paths = self.take(obj, "images", where, ("array",), [])
            tags = content.count(UPSTREAM_TAG)
            if tags != len(paths):
                self.fail(f"{where}.content", f"{tags} {UPSTREAM_TAG} tag(s) but {len(paths)} image(s); "
                                              "give one tag per image")
            text = content.replace(UPSTREAM_TAG, "").strip()
            images = []
            for i, item in enumerate(paths):
                spot = f"{where}.images[{i}]"
                if not isinstance(item, str):
                    self.fail(spot, f"expected a file path string, got {_got(item)}")
                target, problem = self.locate(item, spot, upstream=True, hashed=False)
                name = PurePath(item).name or "image"
                if target is None:
                    att = Attachment(path=item, missing=True, name=name)
                else:
                    att, problem = self.file(target, None, name)
                if problem:
                    self.warnings.append(f"{spot} ({att.name}): {problem}")
                images.append(att)
            conv.messages.append(ChatMessage(role.lower(), text, images=images, created=conv.created))
        conv.title = _title(conv.messages)
        return conv


def _title(messages: list[ChatMessage]) -> str:
    first = next((m for m in messages if m.role == "user"), None)
    if first is None:
        return ""
    words = []  # the first words only: splitting a whole long message costs seconds and memory
    for word in re.finditer(r"\S+", first.text):
        words.append(word.group())
        if sum(map(len, words)) + len(words) > TITLE_CHARS + 1:
            break
    return shorten(" ".join(words), TITLE_CHARS) or "image"


def parse(value: Any, source: str, base: Path, *, trusted: bool = False,
          stem: str | None = None) -> tuple[Conversation, list[str]]:
    """A decoded JSON value (our object or upstream's list) to a conversation and image warnings.

    ``trusted`` only for the app's own journal (see ``Reader``); ``stem`` names the image folder
    (``NAME.images``), by default the stem of ``source``.
    """
    reader = Reader(source, base, trusted=trusted and isinstance(value, dict), stem=stem)
    if isinstance(value, list):
        conv = reader.upstream(value)
    elif isinstance(value, dict):
        conv = reader.transcript(value)
    else:
        raise TranscriptError(source, "", f"expected a transcript object or a DeepSeek-VL conversation list, "
                                          f"got {_got(value)}")
    return conv, reader.warnings


def read(path: Path, *, trusted: bool = False) -> tuple[Conversation, list[str], Any]:
    """Load a transcript file: the conversation, one line per unusable image, and the decoded JSON.

    Only reads. ``conv.path`` is the file for our format and None for an
    upstream list (so saving never overwrites a user's prompt file with ours).
    ``trusted`` is for the app's own journal files only (see ``Reader``).
    """
    path = Path(path).expanduser()
    source = str(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise TranscriptError(source, "", "is a folder, not a transcript file")
        if not stat.S_ISREG(info.st_mode):
            raise TranscriptError(source, "", "not a regular file")
        if info.st_size > fmt.MAX_FILE_BYTES:
            raise TranscriptError(source, "", f"larger than {fmt.MAX_FILE_BYTES >> 20} MB; not a transcript")
        with open_regular(path) as handle:  # never blocks on a FIFO swapped in since the stat
            # read(n) allocates n bytes up front: ask for the file's size, not the limit.
            raw = handle.read(info.st_size + 1)
            if len(raw) > info.st_size:  # it grew since: the rest, still within the limit
                raw += handle.read(fmt.MAX_FILE_BYTES + 1 - len(raw))
    except FileNotFoundError:
        raise TranscriptError(source, "", "no such file") from None
    except OSError as error:
        raise TranscriptError(source, "", f"cannot be read: {error.strerror or error}") from None
    except ValueError:  # a NUL in the name
        raise TranscriptError(source, "", "not a usable file path") from None
    if len(raw) > fmt.MAX_FILE_BYTES:
        raise TranscriptError(source, "", f"larger than {fmt.MAX_FILE_BYTES >> 20} MB; not a transcript")
    value = decode(raw, source)
    absolute = Path(os.path.abspath(path))
    conv, warnings = parse(value, source, absolute.parent, trusted=trusted, stem=absolute.stem)
    conv.path = absolute if isinstance(value, dict) else None
    return conv, warnings, value
