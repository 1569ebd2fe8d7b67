"""The app's side of ``dsvl-chat web``: files from the browser user's computer, and downloads to it.

``dsvl-chat web`` serves the app to browsers: each browser tab runs one app
process, a thin client (``--endpoint``) of the one model server, with three
variables in its environment (``WebMode.from_environ`` reads them):

- ``DSVL_WEB=1``;
- ``DSVL_WEB_URL``: the public base URL of the web server (``http://127.0.0.1:8080``);
- ``DSVL_WEB_UPLOADS``: a private folder where the web server hands uploads over;
- ``DSVL_WEB_MAX_IMAGES``, ``DSVL_WEB_MAX_BODY_MIB``: what the model server
  takes in one request (``ServerLimits``).

The model API is stateless: every message sends the whole conversation with
all its pictures, and the model server refuses a request over its limits
(413). A picture that would take a conversation past them is refused when it
is attached (``fit_to_server``, by ``/image`` and ``/upload``), with one line
saying why: once attached, the app would put it back after each refusal and
every later message would be refused too.

An upload (``/upload``, ``/load`` alone): the app makes a one-time token,
creates ``$DSVL_WEB_UPLOADS/<token>/`` (mode 0700) and opens
``$DSVL_WEB_URL/upload/<token>`` in a new browser tab (``App.open_url``). The
web server writes the files the user picks there into that folder, each
atomically, then a ``.done`` marker last. The app polls for the marker
(``WebClient``, twice a second, for at most ten minutes), takes the plain files
(``Upload.received``; dot files are the server's own, a link or a folder is
refused), runs them through the checks of ``/image`` or ``/load``, and
deletes the folder. Only the process that made the token knows it, so an
upload reaches the tab it was made for and no other.

Downloads: ``/save`` and ``/export`` write on the server as they always do and
then hand the file to the browser (``App.deliver_binary``/``deliver_text``,
which textual-serve turns into a download).

Nothing here imports torch or Textual: the app of ``dsvl-chat web`` is a thin
client and must stay one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvl_tui.backends.image_urls import MAX_IMAGE_BYTES
from engine.files import FileTooLargeError, kind_of, read_regular, shown_path

if TYPE_CHECKING:  # pragma: no cover
    from textual.app import App
    from textual.timer import Timer

    from dsvl_tui.core.conversation import Attachment, Conversation

ENV_WEB = "DSVL_WEB"
ENV_URL = "DSVL_WEB_URL"
ENV_UPLOADS = "DSVL_WEB_UPLOADS"
ENV_MAX_IMAGES = "DSVL_WEB_MAX_IMAGES"
ENV_MAX_BODY = "DSVL_WEB_MAX_BODY_MIB"
DONE = ".done"  # written by the web server after the last file of an upload
POLL_SECONDS = 0.5
WAIT_SECONDS = 600.0  # an upload page left open longer is given up
MAX_FILES = 32  # files taken from one upload
MAX_UPLOAD_BYTES = MAX_IMAGE_BYTES  # one picture: as much as the model server is sent of one (--endpoint)
KEPT = "uploads"  # uploaded pictures are kept in the data folder under this name, by content hash

#: What ``/upload`` says outside ``dsvl-chat web``.
NOT_WEB = ("/upload works only in the app that `dsvl-chat web` serves to a browser; here /image PATH attaches "
           "a picture and /load FILE opens a transcript")

DOWNLOAD_NAME = "dsvl-download"  # names our deliveries in the DeliveryComplete/DeliveryFailed events


class UploadError(Exception):
    """An upload that cannot be started or taken; ``str()`` is one line for the user."""


def is_web(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this app runs under ``dsvl-chat web`` (in a browser)."""
    return (os.environ if environ is None else environ).get(ENV_WEB) == "1"


@dataclass(frozen=True)
class ServerLimits:
    """What the model server takes in one request: pictures (over the whole conversation) and body bytes."""

    max_images: int
    max_body_bytes: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServerLimits | None:
        """The limits ``dsvl-chat web`` gave, or None (not given, or not whole numbers)."""
        try:
            images, body = int(environ.get(ENV_MAX_IMAGES, "")), int(environ.get(ENV_MAX_BODY, ""))
        except ValueError:
            return None
        return cls(images, body << 20) if images >= 0 and body > 0 else None

    def fit(self, conversation: Conversation, adding: list[Attachment]) -> tuple[list[Attachment], str | None]:
        """The pictures of ``adding``, in order, that ``conversation`` can still take, and one line naming the
        others (None if all fit).

        Counted: every picture a message sends (the history's that are not missing, the pending ones). The
        body is estimated from the pictures' sizes as base64, with a sixteenth of the limit left for the
        text and JSON around them.
        """
        sent = [image for message in conversation.messages for image in message.images if not image.missing]
        sent += conversation.pending
        count = len(sent)
        size = sum(_encoded_size(image) for image in sent)
        budget = self.max_body_bytes - self.max_body_bytes // 16
        fitting: list[Attachment] = []
        over_count: list[str] = []
        over_size: list[str] = []
        for image in adding:
            extra = _encoded_size(image)
            if count + 1 > self.max_images:
                over_count.append(image.label)
            elif size + extra > budget:
                over_size.append(image.label)
            else:
                fitting.append(image)
                count, size = count + 1, size + extra
        if not over_count and not over_size:
            return fitting, None
        if over_count:
            why = (f"the model server takes at most {self.max_images} pictures per conversation (each message "
                   f"sends them all) and this one has {count}")
        else:
            why = f"the model server takes at most {self.max_body_bytes >> 20} MiB per message, pictures included"
        refused = ", ".join(shown_path(label) for label in over_count + over_size)
        return fitting, f"not attached: {refused}: {why}; /new starts a conversation with room for them"


def _encoded_size(image: Attachment) -> int:
    """About the bytes ``image`` takes in a request: its file's size as base64 (0 when it cannot be known)."""
    if image.data is not None:
        size = len(image.data)
    else:
        try:
            size = os.stat(image.usable_path() or "").st_size
        except OSError:
            return 0  # the send will say what is wrong with it
    return (size + 2) // 3 * 4


def fit_to_server(session: object, conversation: Conversation,
                  adding: list[Attachment]) -> tuple[list[Attachment], str | None]:
    """``ServerLimits.fit`` under ``dsvl-chat web`` (the session's ``web`` knows the model server's limits);
    elsewhere every picture fits (no limits known)."""
    web = getattr(session, "web", None)
    limits = web.mode.limits if isinstance(web, WebClient) else None
    return (adding, None) if limits is None else limits.fit(conversation, adding)


@dataclass(frozen=True)
class WebMode:
    """Where the web server is, where it hands uploads over, and what the model server takes."""

    url: str  # the public base URL, without a trailing slash
    uploads: Path
    limits: ServerLimits | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WebMode | None:
        """The web mode ``dsvl-chat web`` set up, or None (not in a browser, or set up incompletely)."""
        environ = os.environ if environ is None else environ
        url, uploads = environ.get(ENV_URL, "").strip(), environ.get(ENV_UPLOADS, "").strip()
        if not is_web(environ) or not url or not uploads:
            return None
        return cls(url.rstrip("/"), Path(uploads), ServerLimits.from_environ(environ))

    def new_upload(self, kind: str) -> Upload:
        """A fresh token and its private folder; ``UploadError`` if the folder cannot be made."""
        token = secrets.token_urlsafe(24)
        folder = self.uploads / token
        try:
            self.uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # whatever the umask
        except OSError as exc:
            raise UploadError(f"cannot make an upload folder in {self.uploads}: {exc.strerror or exc}; "
                              "restart dsvl-chat web") from None
        return Upload(token, folder, f"{self.url}/upload/{token}", kind)


@dataclass(frozen=True)
class Received:
    """One uploaded file: where it lies and its name as the user's computer called it (printable, without the
    web server's ``N-`` numbering)."""

    path: Path
    name: str


@dataclass
class Upload:
    """One upload page, tied to this app process by its token."""

    token: str
    folder: Path
    url: str
    kind: str  # "images" or "transcript"
    deadline: float = field(default_factory=lambda: time.monotonic() + WAIT_SECONDS)

    def arrived(self) -> bool:
        """The web server has written everything (its ``.done`` marker is there)."""
        return os.path.lexists(self.folder / DONE)

    def received(self) -> tuple[list[Received], list[str]]:
        """The plain files uploaded (by name), and one line for each thing refused."""
        try:
            with os.scandir(self.folder) as entries:
                found = sorted(entries, key=lambda entry: _order(entry.name))
        except OSError as exc:
            return [], [f"cannot read the upload: {exc.strerror or exc}"]
        files: list[Received] = []
        problems: list[str] = []
        for entry in found:
            if entry.name.startswith("."):  # the marker, the server's temporary files
                continue
            name = shown_path(_NUMBERED.sub('', entry.name, count=1))
            if not plain_name(entry.name):
                problems.append(f"upload {name} refused: not a plain file name")
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                problems.append(f"cannot read the upload {name}: {exc.strerror or exc}")
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"upload {name} refused: {kind_of(mode)}, not a file")
            elif len(files) == MAX_FILES:
                problems.append(f"only the first {MAX_FILES} files of an upload are taken; {name} was not")
            else:
                files.append(Received(Path(entry.path), name))
        return files, problems

    def remove(self) -> None:
        """Delete the folder and what is in it (links are removed, never followed)."""
        shutil.rmtree(self.folder, ignore_errors=True)


_NUMBERED = re.compile(r"^[0-9]+-(?=.)")  # the web server stores the files of an upload as N-NAME


def _order(name: str) -> tuple[int, str]:
    """Files in the order they were uploaded (``2-b.png`` before ``10-a.png``)."""
    number = re.match(r"[0-9]+(?=-.)", name)
    return (int(number.group()) if number else 0, name)


def plain_name(name: str) -> bool:
    """A name that is one file name on every system: no separator, no control character, not '.' or '..'."""
    return bool(name) and name not in (".", "..") and not any(c in "/\\\0" or not c.isprintable() for c in name)


def keep_image(received: Received, data_dir: Path, limit: int, suffixes: frozenset[str]) -> tuple[Path, bool]:
    """Copy an uploaded picture to ``data_dir/uploads/<sha256><suffix>``, where it outlives the upload.

    Returns the copy and whether this call made it. The file is read once,
    without following a link, up to ``limit`` bytes (else ``UploadError``);
    what is kept is what is checked after.
    """
    try:
        data = read_regular(received.path, limit, follow_symlinks=False)
    except FileTooLargeError:
        raise UploadError(f"{received.name} is larger than {limit >> 20} MB; scale it down and upload it "
                          "again") from None
    except OSError as exc:
        raise UploadError(f"cannot read the upload {received.name}: {exc.strerror or exc}") from None
    suffix = Path(received.name).suffix.lower()
    folder = data_dir / KEPT
    target = folder / f"{hashlib.sha256(data).hexdigest()}{suffix if suffix in suffixes else ''}"
    if target.is_file():
        return target, False
    from dsvl_tui.storage.atomic import atomic_write_bytes

    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise UploadError(f"cannot keep {received.name} in {folder}: {exc.strerror or exc}") from None
    return target, True


class WebClient:
    """The app's end of web mode: opens upload pages and watches them, hands files to the browser."""

    def __init__(self, app: App[Any], mode: WebMode) -> None:
        self.app = app
        self.mode = mode
        self._watching: dict[str, tuple[Upload, Timer]] = {}

    @classmethod
    def for_app(cls, app: App[Any], environ: Mapping[str, str] | None = None) -> WebClient | None:
        """A client when the app runs under ``dsvl-chat web``, else None."""
        mode = WebMode.from_environ(environ)
        return None if mode is None else cls(app, mode)

    def upload(self, kind: str, received: Callable[[Upload], None], expired: Callable[[Upload], None]) -> Upload:
        """Open an upload page in a new browser tab; ``received(upload)`` once its files are all there,
        or ``expired(upload)`` (its folder removed) after ``WAIT_SECONDS``. Both on the app's thread."""
        upload = self.mode.new_upload(kind)

        def poll() -> None:
            if upload.arrived():
                self._forget(upload)
                received(upload)
            elif time.monotonic() > upload.deadline:
                self._forget(upload)
                upload.remove()
                expired(upload)

        self._watching[upload.token] = (upload, self.app.set_interval(POLL_SECONDS, poll, name="upload"))
        self.app.open_url(upload.url, new_tab=True)
        return upload

    @property
    def waiting(self) -> list[Upload]:
        """The upload pages opened and not yet answered."""
        return [upload for upload, _ in self._watching.values()]

    def _forget(self, upload: Upload) -> None:
        watched = self._watching.pop(upload.token, None)
        if watched is not None:
            watched[1].stop()

    def deliver_file(self, path: Path, *, text: bool) -> None:
        """Hand the file at ``path`` to the browser as a download (its name is the file's)."""
        if text:
            self.app.deliver_text(path, name=DOWNLOAD_NAME)
        else:
            self.app.deliver_binary(path, name=DOWNLOAD_NAME)

    def deliver_bytes(self, data: bytes, filename: str, mime_type: str) -> None:
        """Hand ``data`` to the browser as a download called ``filename``."""
        self.app.deliver_binary(io.BytesIO(data), save_filename=filename, mime_type=mime_type, name=DOWNLOAD_NAME)

    def close(self) -> None:
        """Stop watching and remove every upload folder not taken (the app is ending)."""
        for upload in self.waiting:
            self._forget(upload)
            upload.remove()
