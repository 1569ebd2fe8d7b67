"""The image files a transcript names: which ones a loaded transcript may read, and reading them safely.

A transcript is often someone else's file, unpacked from an archive with its
pictures. It may only make the app read pictures in its own image folder:
``chat.images/`` for ``chat.json`` (the folder saving writes), or for an
upstream DeepSeek-VL list the list's folder and below. ``locate`` resolves
every link and refuses a path that leads out of that folder (a link in it to
``../.ssh/id_rsa``, or an image folder that is itself a link); ``attachment``
then opens the file through no link at all (``open_beneath``, so a link
swapped in since is refused), refuses anything but a regular file with a
single name (a hard link's other name could be a key anywhere on the disk),
and hashes the bytes as it reads them. That hash is what the conversation
keeps: later every use of the picture takes only bytes that have it
(``Attachment.checked_bytes``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePath

from dsvl_tui.core.conversation import MAX_IMAGE_FILE_BYTES, Attachment
from engine.files import FileTooLargeError, UnusableFileError, open_beneath, open_regular


@dataclass(frozen=True)
class Place:
    """Where an image file is: ``path``; for a file a loaded transcript names, also the folder ``root`` and the
    link-free ``beneath`` parts under it that ``open_beneath`` opens (None: the journal's own, opened as is)."""

    path: Path
    root: str = ""
    beneath: tuple[str, ...] | None = None


def locate(text: str, base: Path, stem: str, *, upstream: bool) -> tuple[Place | None, str]:
    """Where the image path ``text`` of a transcript in folder ``base`` may be read, or (None, why it is refused).

    For our format (``stem``: the transcript's file name without ``.json``)
    only inside ``<stem>.images/``; for an upstream list inside ``base``. The
    path must be relative, without ``..``; links are resolved first and one
    leading out of that folder is refused, as is a ``<stem>.images`` that is
    itself a link.
    """
    path = Path(text)
    parts = PurePath(text.replace("\\", "/")).parts
    if path.is_absolute() or text.startswith(("/", "\\")):
        return None, f"absolute path {text!r:.60} refused; a transcript may only use images in its own folder"
    if ".." in parts:
        return None, f"path {text!r:.60} refused: '..' leaves the transcript's folder"
    root = os.path.realpath(base)
    if upstream:
        folder = root
    else:
        own = f"{stem}.images"
        if len(parts) < 2 or parts[0] != own:
            return None, f"path {text!r:.60} refused: not in {own}/, the image folder of this transcript"
        folder = os.path.join(root, own)
        if os.path.islink(folder):
            return None, f"path {text!r:.60} refused: {own} is a link; a transcript's image folder must be a folder"
    real = os.path.realpath(os.path.join(root, *parts))
    if real == folder or os.path.commonpath([folder, real]) != folder:
        return None, f"path {text!r:.60} refused: a link out of the transcript's image folder"
    return Place(Path(real), root, PurePath(os.path.relpath(real, root)).parts), ""


def attachment(place: Place, sha: str | None, name: str) -> tuple[Attachment, str]:
    """An attachment for the image file at ``place``, checked against ``sha``; marked missing (with why) if unusable.

    A file a loaded transcript names (``place.beneath``) is opened through no
    link, must be a regular file with no other hard link, and is hashed as
    read; with no hash in the transcript, that hash is recorded. The journal's
    own files (``beneath`` None) are opened as they are: only bytes with their
    recorded hash are taken from them.
    """
    path = place.path
    try:
        handle = open_regular(path) if place.beneath is None else open_beneath(place.root, place.beneath)
        with handle:
            info = os.fstat(handle.fileno())
            if place.beneath is not None and info.st_nlink > 1:
                raise UnusableFileError(path, f"has {info.st_nlink} hard links; a transcript's image must be "
                                              "a file of its own (copy it)")
            digest = hashlib.sha256()
            size = 0
            for block in iter(lambda: handle.read(1 << 20), b""):
                size += len(block)
                if size > MAX_IMAGE_FILE_BYTES:
                    raise FileTooLargeError(path, MAX_IMAGE_FILE_BYTES)
                digest.update(block)
    except UnusableFileError as error:
        return Attachment(path=str(path), sha256=sha, missing=True, name=name), str(error)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return Attachment(path=str(path), sha256=sha, missing=True, name=name), f"{reason}: {path}"
    if sha is not None and digest.hexdigest() != sha:
        return Attachment(path=str(path), sha256=sha, missing=True, name=name), f"hash does not match: {path}"
    return Attachment(path=str(path), sha256=digest.hexdigest(), name=name), ""
