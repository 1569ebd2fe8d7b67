"""The browser's side of files in ``dsvl-chat web``: /upload, ``/load`` alone, and the downloads of /save and /export.

A front end served by ``dsvl-chat web`` has a ``web`` attribute
(``dsvl_tui.web.client.WebClient``) that opens upload pages and hands files
to the browser; any other front end has none, and these commands say what
to use there instead. An upload goes through the very checks of ``/image``
(``check_images``) or ``/load`` (the transcript reader), off the event loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dsvl_tui.commands.builtin._conversation import attach_checked, check_images
from dsvl_tui.commands.builtin._shared import shell_words
from dsvl_tui.commands.builtin.opening import open_with_notice, read_transcript
from dsvl_tui.commands.completion import IMAGE_SUFFIXES
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import Session
from dsvl_tui.web.client import MAX_UPLOAD_BYTES, NOT_WEB, WAIT_SECONDS, Upload, UploadError, WebClient, keep_image

if TYPE_CHECKING:
    from dsvl_tui.core.conversation import Attachment, Conversation


def web_side(session: Session) -> WebClient | None:
    """The session's link to the browser, when it runs under ``dsvl-chat web``."""
    web = getattr(session, "web", None)
    return web if isinstance(web, WebClient) else None


# The app's only (the browser shows the app, never the REPL): /help and Tab in the REPL do not offer it.
@registry.command("upload", "Attach pictures from your computer (dsvl-chat web)", "/upload [transcript]",
                  frontends=("tui",))
def upload(session: Session, args: str) -> None:
    """In the app that `dsvl-chat web` serves: opens a page in a new browser tab to pick or drop
    pictures from your computer; they attach to this tab's next message, checked as /image checks
    them. `/upload transcript` (or `/load` alone) opens a transcript from your computer the same way."""
    words = shell_words(args)
    if words not in ([], ["transcript"]):
        raise CommandError("usage: /upload [transcript]")
    web = web_side(session)
    if web is None:
        raise CommandError(NOT_WEB)
    if words:
        upload_transcript(session, web)
    else:
        _upload_images(session, web)


def _start(session: Session, web: WebClient, kind: str, received: Callable[[Upload], None]) -> None:
    def expired(upload: Upload) -> None:
        session.info(f"the upload page waited {int(WAIT_SECONDS // 60)} minutes and got nothing; "
                     "/upload opens a new one")

    try:
        page = web.upload(kind, received, expired)
    except UploadError as exc:
        raise CommandError(str(exc)) from None
    what = "a transcript (.json)" if kind == "transcript" else "pictures"
    session.info(f"pick or drop {what} on the page that opened in a new browser tab (if none did: {page.url})")


def _upload_images(session: Session, web: WebClient) -> None:
    conv = session.conversation  # the tab the command was typed in gets the pictures

    def received(upload: Upload) -> None:
        session.read_then(lambda: take_images(upload), lambda result: attach_checked(session, conv, result))

    _start(session, web, "images", received)


def take_images(upload: Upload) -> tuple[list[Attachment], list[str]]:
    """The uploaded pictures kept in the data folder and checked as ``/image`` checks them; the folder removed."""
    from dsvl_tui.storage.paths import data_dir

    try:
        files, problems = upload.received()
        if not files and not problems:
            problems.append("nothing was uploaded; /upload opens the page again")
        checked: list[Attachment] = []
        for received in files:
            try:
                kept, made = keep_image(received, data_dir(), MAX_UPLOAD_BYTES, IMAGE_SUFFIXES)
            except UploadError as exc:
                problems.append(str(exc))
                continue
            good, bad = check_images([kept])
            for attachment in good:
                attachment.name = received.name
            checked += good
            problems += [line.replace(str(kept), received.name) for line in bad]
            if bad and made:
                kept.unlink(missing_ok=True)
        return checked, problems
    finally:
        upload.remove()


def upload_transcript(session: Session, web: WebClient) -> None:
    """``/upload transcript``, and ``/load`` alone in ``dsvl-chat web``."""
    def received(upload: Upload) -> None:
        def opened(conv: Conversation) -> None:
            open_with_notice(session, conv, f"opened {conv.title or 'the uploaded transcript'}")

        session.read_then(lambda: take_transcript(upload), opened)

    _start(session, web, "transcript", received)


def take_transcript(upload: Upload) -> Conversation:
    """The one uploaded file read as ``/load`` reads a transcript (a ``CommandError`` if it is not one)."""
    from dsvl_tui.storage import transcript

    try:
        files, problems = upload.received()
        if problems:
            raise CommandError(problems[0])
        if len(files) != 1:
            raise CommandError(f"upload one transcript at a time (got {len(files)} files); /upload transcript "
                               "opens the page again")
        [received] = files
        try:
            conv = read_transcript(received.path, lambda: transcript.load_transcript(received.path))
        except CommandError as exc:
            raise CommandError(str(exc).replace(str(received.path), received.name)) from None
        conv.path, conv.path_stamp = None, None  # its file goes with the upload: /save writes a new one
        return conv
    finally:
        upload.remove()


# --- downloads ------------------------------------------------------------------------------------------


def deliver_transcript(session: Session, conv: Conversation, saved: Path, *, embedded: bool) -> str:
    """In ``dsvl-chat web``: hand the transcript just saved to the browser, with its pictures inside (an
    embedded copy when they were saved beside it). Returns what to add to the notice ('' elsewhere)."""
    web = web_side(session)
    if web is None:
        return ""
    from dsvl_tui.storage.transcript import TranscriptError, transcript_bytes

    pictures = any(message.images for message in conv.messages)
    try:
        if embedded or not pictures:
            web.deliver_file(saved, text=False)
        else:
            web.deliver_bytes(transcript_bytes(conv), saved.name, "application/json")
    except (OSError, TranscriptError) as exc:
        return f"; no download: {getattr(exc, 'strerror', None) or exc}"
    return f"; your browser downloads {saved.name}" + (" with its pictures inside" if pictures else "")


def deliver_export(session: Session, written: Path) -> str:
    """In ``dsvl-chat web``: hand the Markdown just exported to the browser. Returns what to add to the notice."""
    web = web_side(session)
    if web is None:
        return ""
    try:
        web.deliver_file(written, text=True)
    except OSError as exc:
        return f"; no download: {exc.strerror or exc}"
    return f"; your browser downloads {written.name} (its pictures stay on the server; /save's download holds them)"


def web_export_target(session: Session) -> Path:
    """Where ``/export`` alone writes in ``dsvl-chat web``: a new file under the data folder's ``exports/``."""
    from dsvl_tui.storage.paths import data_dir

    folder = data_dir() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9]+", "-", session.conversation.title).strip("-")[:40].lower() or "chat"
    return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.md"


def load_needs_upload(session: Session) -> bool:
    """``/load`` alone: an upload page in ``dsvl-chat web`` (True, started), else a usage error (False)."""
    web = web_side(session)
    if web is None:
        return False
    upload_transcript(session, web)
    return True
