"""Writing a transcript: a conversation to its JSON object and bytes, images written or embedded.

``document()`` builds the JSON object for a conversation (images go through a
callback, usually ``ImageFolder.entry``, that writes or embeds them);
``encode()`` turns it into the bytes of the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path, PurePath

from dsvl_tui.core.branches import Tree
from dsvl_tui.core.conversation import Attachment, ChatMessage, ComparedAnswer, Conversation, file_sha256
from dsvl_tui.storage.atomic import atomic_write_bytes
from dsvl_tui.storage.transcript.format import FORMAT, STATS_FIELDS, VERSION, format_time
from engine.types import GenerationStats

ImageEntry = Callable[[Attachment], dict]  # an attachment -> its image object in the JSON


def document(conv: Conversation, image_entry: ImageEntry, *, updated: float) -> dict:
    """The transcript object for ``conv``; ``image_entry`` turns each attachment into its JSON object.

    ``messages`` is the current path; ``branches`` the messages off it (``core.branches``), parents first,
    each with the id of the message it follows."""
    messages = [_message_document(message, image_entry) for message in conv.messages]
    kept = []
    if conv.alternatives:
        tree = Tree(conv)
        on = {message.id for message in conv.messages}
        for message in tree.reachable():
            if message.id not in on:
                parent = tree.parent[message.id]
                kept.append({**_message_document(message, image_entry), "parent": parent or None})
    return {
        "format": FORMAT,
        "version": VERSION,
        "title": conv.title,
        "created": format_time(conv.created),
        "updated": format_time(updated),
        "model": conv.model,
        **({"endpoint": conv.endpoint} if conv.endpoint else {}),  # optional: older readers ignore it
        **({"quantize": conv.quantize} if conv.quantize != "none" else {}),  # optional, as endpoint
        **({"layout": conv.layout} if conv.layout else {}),  # optional, as endpoint
        "system": conv.system,
        "settings": asdict(conv.settings),
        "messages": messages,
        "branches": kept,
    }


def _message_document(message: ChatMessage, image_entry: ImageEntry) -> dict:
    return {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "created": format_time(message.created),
        "images": [image_entry(a) for a in message.images],
        "stats": _stats_document(message.stats),
        "stopped": message.stopped,
        "error": message.error,
        **({"compared": _compared_document(message.compared)} if message.compared is not None else {}),
    }


def _compared_document(compared: ComparedAnswer) -> dict:
    """The compared model's answer (``/compare``): optional, so a reader that does not know it reads the rest."""
    return {
        "model": compared.model,
        "text": compared.text,
        **({"endpoint": compared.endpoint} if compared.endpoint else {}),
        **({"quantize": compared.quantize} if compared.quantize != "none" else {}),
        "settings": asdict(compared.settings) if compared.settings is not None else None,
        "stats": _stats_document(compared.stats),
        "stopped": compared.stopped,
        "error": compared.error,
    }


def _stats_document(stats: GenerationStats | None) -> dict | None:
    """Stats as JSON; a non-finite number (another backend's 0/0) is stored as null, or 0 where null is not allowed."""
    if stats is None:
        return None
    out = asdict(stats)
    for key, value in out.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None if "null" in STATS_FIELDS.get(key, ("null",)) else 0.0
    return out


def encode(doc: dict) -> bytes:
    """UTF-8 JSON; text with lone surrogates (undecodable terminal input) falls back to \\u escapes."""
    try:
        return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def image_extension(att: Attachment, head: bytes = b"") -> str:
    """The file extension to store an image under: from its name or path, else sniffed from its bytes."""
    for candidate in (att.name, att.path):
        if candidate:
            suffix = PurePath(candidate).suffix.lower()
            if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
                return suffix
    for magic, suffix in _MAGIC:
        if head.startswith(magic):
            return suffix
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return ".img"


_MAGIC = [(b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif")]


class ImageFolder:
    """Turns attachments into image entries, writing each image once into a folder beside a transcript.

    Files are named by content hash (``<sha256><ext>``); one already there
    with the right content is not written again. ``prefix`` is how the JSON
    refers to the folder (``"chat.images/"``). With ``embed`` the bytes go into
    the JSON as base64 instead and nothing is written. With ``source`` an
    entry also records the absolute path the image was attached from.

    An image whose bytes cannot be read (its file was deleted since) is
    written as a reference that will load as missing, and listed in
    ``unreadable``. ``rollback()`` removes what this instance created.
    """

    def __init__(self, folder: Path, prefix: str, *, embed: bool = False, source: bool = False,
                 known: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.prefix = prefix
        self.embed = embed
        self.source = source
        self.known = known if known is not None else {}  # sha256 -> file name checked to be in the folder
        self.unreadable: list[Attachment] = []
        self.created: list[Path] = []
        self.made_folder = False

    def entry(self, att: Attachment) -> dict:
        ext = image_extension(att)
        if not att.missing and not self.embed and att.sha256:
            if att.sha256 in self.known:  # the same picture earlier in the conversation
                return self._reference(att, att.sha256, self.known[att.sha256])
            if att.data is None and ext != ".img" and self._stored(att.sha256, f"{att.sha256}{ext}"):
                return self._reference(att, att.sha256, f"{att.sha256}{ext}")
        # The checked bytes (Attachment.checked_bytes): a file changed or swapped (for a link to a key, say)
        # since it was attached or loaded is never copied; it is saved as a reference and marked missing.
        was_missing = att.missing
        data = att.read_or_leave_out()
        if data is None:
            if not was_missing:
                self.unreadable.append(att)
            if att.sha256:
                filename = self.known.get(att.sha256) or f"{att.sha256}{ext}"
                return {"name": att.label, "sha256": att.sha256, "path": self.prefix + filename}
            return {"name": att.label, "sha256": None, "path": att.path or att.label}
        sha = hashlib.sha256(data).hexdigest()
        if self.embed:
            return {"name": att.label, "sha256": sha, "data": base64.b64encode(data).decode("ascii")}
        if sha in self.known:
            return self._reference(att, sha, self.known[sha])
        filename = f"{sha}{image_extension(att, data[:16])}"
        if not self._stored(sha, filename):
            self._write(filename, data)
        self.known[sha] = filename
        return self._reference(att, sha, filename)

    def _reference(self, att: Attachment, sha: str, filename: str) -> dict:
        entry = {"name": att.label, "sha256": sha, "path": self.prefix + filename}
        if self.source and att.path and Path(att.path).is_absolute() and Path(att.path).parent != self.folder:
            entry["source"] = att.path
        return entry

    def _stored(self, sha: str, filename: str) -> bool:
        if self.known.get(sha) == filename:
            return True
        try:
            if file_sha256(self.folder / filename) == sha:
                self.known[sha] = filename
                return True
        except OSError:
            pass
        return False

    def _write(self, filename: str, data: bytes) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir()
            self.made_folder = True
        target = self.folder / filename
        existed = target.exists()
        atomic_write_bytes(target, data)
        if not existed:
            self.created.append(target)

    def rollback(self) -> None:
        for path in self.created:
            try:
                path.unlink()
            except OSError:
                pass
        if self.made_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass

