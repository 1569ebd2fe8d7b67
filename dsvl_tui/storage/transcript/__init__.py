"""Save, load and export conversations: the API the slash commands and the TUI call.

    path = save_transcript(conv, Path("chat.json"))          # chat.json + chat.images/
    path = save_transcript(conv, Path("chat.json"), embed_images=True)  # one file
    conv = load_transcript(Path("chat.json"))                # ours, or upstream's list
    export_markdown(conv, Path("chat.md"))

Every failure is a ``TranscriptError`` whose ``str()`` is one line naming the
file and the field. Writes are atomic: on failure the previous file is as it
was and the conversation is unchanged. The format itself is in
``format`` (its version, limits and field names), read by ``read`` (with
``image_files``: where a transcript's pictures may be read) and written by
``write``, and documented in ``docs/transcripts.md``; autosave is
``storage.journal.Journal``.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from dsvl_tui.core.branches import all_messages
from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.core.stats import stats_line
from dsvl_tui.core.text import printable
from dsvl_tui.storage.atomic import atomic_write_bytes, is_temp_file
from dsvl_tui.storage.paths import data_dir
from dsvl_tui.storage.transcript.format import FORMAT, VERSION, TranscriptError
from dsvl_tui.storage.transcript.read import read
from dsvl_tui.storage.transcript.write import ImageFolder, document, encode

__all__ = [
    "FORMAT", "VERSION", "TranscriptError", "default_save_path", "export_markdown",
    "load_transcript", "load_transcript_report", "missing_images", "save_transcript", "transcript_bytes",
    "would_overwrite",
]


def transcript_bytes(conv: Conversation) -> bytes:
    """``conv`` as the bytes of a transcript that holds its pictures (what ``/save --embed`` writes), written
    nowhere: for a copy handed elsewhere (a browser download); ``conv`` stays tied to its own file."""
    try:
        return encode(document(conv, ImageFolder(Path("."), "", embed=True).entry, updated=time.time()))
    except (ValueError, OverflowError) as error:  # a time or number JSON cannot hold
        raise TranscriptError(Path(conv.title or "transcript"), "", f"not made: {error}") from error


def save_transcript(conv: Conversation, path: Path, *, embed_images: bool = False) -> Path:
    """Write ``conv`` to ``path`` (images into ``<stem>.images/`` beside it, or embedded); return the path.

    ``conv.path`` is set only once the file is in place. An image whose file
    has gone since it was attached is saved as a reference and marked missing
    in ``conv`` (``missing_images`` counts it).
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise TranscriptError(path, "", "is a folder; give a file name such as chat.json")
    if not path.parent.is_dir():
        raise TranscriptError(path, "", f"not saved: folder {path.parent} does not exist")
    images = ImageFolder(path.parent / f"{path.stem}.images", f"{path.stem}.images/", embed=embed_images)
    try:
        atomic_write_bytes(path, encode(document(conv, images.entry, updated=time.time())))
    except OSError as error:
        images.rollback()
        raise TranscriptError(path, "", f"not saved: {_reason(error, path)}") from error
    except (ValueError, OverflowError) as error:  # a time or number JSON cannot hold
        images.rollback()
        raise TranscriptError(path, "", f"not saved: {error}") from error
    for att in images.unreadable:
        att.missing = True
    conv.path = path
    return path


def load_transcript(path: Path) -> Conversation:
    """Read a transcript (ours or upstream DeepSeek-VL's list); unusable images load marked missing."""
    return read(path)[0]


def load_transcript_report(path: Path) -> tuple[Conversation, list[str]]:
    """``load_transcript`` plus one line per image that loaded as missing, naming its field and why."""
    conv, warnings, _ = read(path)
    return conv, warnings


def missing_images(conv: Conversation) -> int:
    """Pictures marked missing, in every message: the branches' too (``core.branches``)."""
    return sum(att.missing for message in all_messages(conv) for att in message.images)


def would_overwrite(conv: Conversation, path: Path) -> bool:
    """Whether saving ``conv`` to ``path`` replaces a file other than its own (ask the user first)."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        return False
    return conv.path is None or os.path.realpath(conv.path) != os.path.realpath(path)


def default_save_path(conv: Conversation) -> Path:
    """A new name in ``data_dir()/saved`` from the date and title (the folder is created, best effort)."""
    folder = data_dir() / "saved"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # saving there then fails with a one-line error naming the folder
    day = datetime.fromtimestamp(conv.created).strftime("%Y-%m-%d")
    slug = re.sub(r"[\W_]+", "-", conv.title.lower()).strip("-")[:40].strip("-") or "conversation"
    for n in itertools.count(1):
        stem = f"{day}-{slug}" if n == 1 else f"{day}-{slug}-{n}"
        if not (folder / f"{stem}.json").exists() and not (folder / f"{stem}.images").exists():
            return folder / f"{stem}.json"
    raise AssertionError("unreachable")


def _reason(error: OSError, path: Path) -> str:
    """One line for an ``OSError``: the reason, and the file if it is not the transcript itself."""
    reason = error.strerror or str(error) or type(error).__name__
    name = error.filename
    if name and not is_temp_file(Path(name)) and Path(name) != path:
        try:
            shown = os.path.relpath(name, path.parent)
        except ValueError:
            shown = str(name)
        reason = f"{shown}: {reason}"
    return reason


# --- Markdown -----------------------------------------------------------------


def export_markdown(conv: Conversation, path: Path) -> Path:
    """Write ``conv`` as readable Markdown; images are linked (embedded ones are written beside it)."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise TranscriptError(path, "", "is a folder; give a file name such as chat.md")
    images = ImageFolder(path.parent / f"{path.stem}.images", f"{path.stem}.images/")
    try:
        # A model's answer or a pasted prompt may hold escape sequences: the file is read in terminals too.
        text = printable(_markdown(conv, path, images))
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as error:
        images.rollback()
        raise TranscriptError(path, "", f"not exported: {_reason(error, path)}") from error
    except (ValueError, OverflowError) as error:
        images.rollback()
        raise TranscriptError(path, "", f"not exported: {error}") from error
    return path


def _markdown(conv: Conversation, path: Path, images: ImageFolder) -> str:
    out = [f"# {_inline(conv.title) or 'Conversation'}", ""]
    facts = [f"Model: `{conv.model}`" if conv.model else "", f"Started {_when(conv.created)}",
             f"updated {_when(conv.updated)}"]
    out += ["_" + " · ".join(f for f in facts if f) + "_", ""]
    if conv.system:
        out += ["> **System prompt:** " + "\n> ".join(conv.system.splitlines()), ""]
    for message in conv.messages:
        out += [f"## {'You' if message.role == 'user' else 'Assistant'}", ""]
        for att in message.images:
            out += [_image_line(att, path, images), ""]
        if message.text:
            out += [message.text.rstrip("\n"), ""]
        if message.error:
            out += [f"**Error:** {_inline(message.error)}", ""]
        notes = ["stopped" if message.stopped else "", stats_line(message.stats, "markdown")]
        if any(notes):
            out += ["<sub>" + " · ".join(n for n in notes if n) + "</sub>", ""]
        if message.compared is not None:  # /compare: the other model's answer to the same message
            other = message.compared
            where = f" at {_inline(other.endpoint)}" if other.endpoint else ""
            weights = f" ({other.quantize})" if other.quantize != "none" else ""
            out += [f"### Compared: `{_inline(other.model)}`{where}{weights}", ""]
            if other.text:
                out += [other.text.rstrip("\n"), ""]
            if other.error:
                out += [f"**Error:** {_inline(other.error)}", ""]
            notes = ["stopped" if other.stopped else "", stats_line(other.stats, "markdown")]
            if any(notes):
                out += ["<sub>" + " · ".join(n for n in notes if n) + "</sub>", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _image_line(att: Attachment, path: Path, images: ImageFolder) -> str:
    label = _inline(att.label).replace("[", "(").replace("]", ")")
    if att.missing or (att.data is None and not att.path):
        return f"_[image missing: {label}]_"
    if att.data is not None:
        target = path.parent / images.entry(att)["path"]
    else:
        assert att.path is not None  # an image with neither data nor path returned above
        target = Path(att.path)
    try:
        link = Path(os.path.relpath(target, path.parent)).as_posix()
    except ValueError:  # another drive
        link = target.as_uri()
    return f"![{label}]({quote(link, safe='/:')})"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def _inline(text: str) -> str:
    return " ".join(text.split())
