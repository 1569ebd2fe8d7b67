"""The app's side of ``dsvl-chat web`` (no browser): uploads into the tab, downloads to the browser, previews.

The web server (``dsvl_tui.web``) is stood in for by the test: it reads the URL
the app opens (``App.open_url``, captured), writes files and the ``.done``
marker into the token folder, and captures what the app hands to the browser
(``App.deliver_binary``/``deliver_text``). The browser tests of ``tests/web``
run the real thing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from textual.command import CommandPalette
from tui_support import ScriptedEngine, notices, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage import transcript
from dsvl_tui.tui import image_protocols
from dsvl_tui.tui.app import DsvlApp
from dsvl_tui.web import client as web_client

BASE_URL = "http://127.0.0.1:8080"


@pytest.fixture
def uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Web mode as ``dsvl-chat web`` sets it up for an app process; the hand-over folder."""
    folder = tmp_path / "web-uploads"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("DSVL_WEB", "1")
    monkeypatch.setenv("DSVL_WEB_URL", BASE_URL)
    monkeypatch.setenv("DSVL_WEB_UPLOADS", str(folder))
    return folder


def picture(path: Path, colour: tuple[int, int, int] = (0, 128, 255)) -> Path:
    Image.new("RGB", (32, 24), colour).save(path)
    return path


class Browser:
    """What the browser sees of one app: the pages it is sent to and the downloads it gets."""

    def __init__(self, app: DsvlApp) -> None:
        self.opened: list[str] = []
        self.downloads: list[dict[str, Any]] = []
        app.open_url = self.open_url  # type: ignore[method-assign]
        app.deliver_binary = self.deliver_binary  # type: ignore[method-assign]
        app.deliver_text = self.deliver_text  # type: ignore[method-assign]

    def open_url(self, url: str, *, new_tab: bool = True) -> None:
        self.opened.append(url)

    def deliver_binary(self, path_or_file: Any, **options: Any) -> str:
        data = Path(path_or_file).read_bytes() if isinstance(path_or_file, (str, Path)) else path_or_file.read()
        self.downloads.append({"kind": "binary", "source": path_or_file, "data": data, **options})
        return "key"

    def deliver_text(self, path_or_file: Any, **options: Any) -> str:
        self.downloads.append({"kind": "text", "source": path_or_file, "data": Path(path_or_file).read_bytes(),
                               **options})
        return "key"


def upload_folder(uploads: Path, browser: Browser) -> Path:
    """The token folder of the last page opened, checked against its URL."""
    token = browser.opened[-1].removeprefix(f"{BASE_URL}/upload/")
    assert len(token) >= 32 and "/" not in token  # secrets.token_urlsafe(24)
    return uploads / token


def hand_over(folder: Path, files: dict[str, bytes | Path]) -> None:
    """Part A's server: each file, then the ``.done`` marker last."""
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    (folder / ".done").write_bytes(b"")


def errors(app: DsvlApp) -> list[str]:
    return notices(app, error=True)


# --- uploads -------------------------------------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_upload_opens_a_page_for_a_fresh_token_and_attaches_what_arrives(uploads, tmp_path, private_dirs):
    backend = ScriptedEngine()
    app = scripted_app(backend)
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/upload")
        folder = upload_folder(uploads, browser)
        assert [p.name for p in uploads.iterdir()] == [folder.name]
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert browser.opened == [f"{BASE_URL}/upload/{folder.name}"]
        assert "new browser tab" in notices(app)[-1] and browser.opened[0] in notices(app)[-1]
        await pilot.pause(0.6)  # a poll or two: nothing is taken before the marker
        assert folder.is_dir() and app.active.conversation.pending == []

        hand_over(folder, {"my cat.png": picture(tmp_path / "cat.png")})
        await wait_for(pilot, lambda: len(app.active.conversation.pending) == 1)
        [attached] = app.active.conversation.pending
        assert attached.name == "my cat.png"
        assert Path(attached.path or "").parent == private_dirs.data / "uploads"  # kept: it outlives the upload
        await wait_for(pilot, lambda: not folder.exists())
        assert "attached my cat.png" in notices(app)[-1] and errors(app) == []
        assert app.session.web is not None and app.session.web.waiting == []

        await type_line(pilot, "what is this?")
        await wait_for(pilot, lambda: len(backend.calls) == 1)
        [question] = backend.calls[0]
        assert [p.data for p in question.images] == [(tmp_path / "cat.png").read_bytes()]  # its checked bytes


@pytest.mark.slow
@run_async
async def test_an_upload_goes_through_the_checks_of_image_and_refuses_links_and_odd_names(
        uploads, tmp_path, private_dirs):
    outside = picture(tmp_path / "outside.png", (255, 0, 0))
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/upload")
        folder = upload_folder(uploads, browser)
        (folder / "link.png").symlink_to(outside)  # a picture, but not one that was uploaded
        (folder / "sub").mkdir()
        hand_over(folder, {
            "10-2024 also good.png": picture(tmp_path / "also.png", (0, 255, 0)),  # the server's N-NAME
            "2-good.png": picture(tmp_path / "good.png"),
            "broken.png": b"this is not a picture",
            "x\\..\\..\\evil.png": outside,
            "red\x1b]0;owned\x07.png": outside,
            ".partial": b"the server's own",
        })
        await wait_for(pilot, lambda: errors(app) != [] and not folder.exists())
        assert [a.name for a in app.active.conversation.pending] == ["good.png", "2024 also good.png"]
        [line] = errors(app)
        assert "\n" not in line
        assert "not an image file" in line and "broken.png" in line
        assert "link.png refused: a symbolic link" in line
        assert "sub refused: a folder" in line
        assert "x\\..\\..\\evil.png refused: not a plain file name" in line
        assert "red\\x1b]0;owned\\x07.png refused: not a plain file name" in line  # shown escaped
        assert str(private_dirs.data) not in line  # named as the user named them, not where they were kept
        kept = sorted(p.name for p in (private_dirs.data / "uploads").iterdir())
        assert kept == sorted(Path(a.path or "").name for a in app.active.conversation.pending)  # not the bad one
        assert outside.is_file()  # a link is removed with the folder, never followed


@pytest.mark.slow
@run_async
async def test_an_empty_upload_and_a_page_left_alone_say_so(uploads, monkeypatch):
    monkeypatch.setattr(web_client, "WAIT_SECONDS", 0.3)
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/upload")
        hand_over(upload_folder(uploads, browser), {})
        await wait_for(pilot, lambda: errors(app) != [])
        assert errors(app) == ["nothing was uploaded; /upload opens the page again"]
        await type_line(pilot, "/upload")
        folder = upload_folder(uploads, browser)
        await wait_for(pilot, lambda: not folder.exists())
        await wait_for(pilot, lambda: "got nothing" in notices(app)[-1])
        assert "/upload opens a new one" in notices(app)[-1]
        await type_line(pilot, "/upload")  # still open when the app ends: its folder goes with it
        folder = upload_folder(uploads, browser)
        monkeypatch.setattr(web_client, "WAIT_SECONDS", 600.0)
    assert not folder.exists() and list(uploads.iterdir()) == []


@pytest.mark.slow
@run_async
async def test_outside_web_mode_upload_explains_itself_and_nothing_is_delivered(tmp_path):
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/upload")
        await type_line(pilot, "/upload transcript")
        await type_line(pilot, "/load")
        assert errors(app) == [web_client.NOT_WEB, web_client.NOT_WEB, "usage: /load FILE (quote names with spaces)"]
        assert "dsvl-chat web" in web_client.NOT_WEB and "/image PATH" in web_client.NOT_WEB
        await type_line(pilot, "hello")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2)
        await type_line(pilot, f"/save {tmp_path / 'chat.json'}")
        await type_line(pilot, f"/export {tmp_path / 'chat.md'}")
        assert (tmp_path / "chat.json").is_file() and (tmp_path / "chat.md").is_file()
        assert notices(app)[-1] == f"exported to {tmp_path / 'chat.md'}"
    assert browser.opened == [] and browser.downloads == []


@pytest.mark.slow
@run_async
async def test_upload_in_the_palette_help_and_completion(uploads):
    from dsvl_tui.commands.registry import registry

    command = registry.get("upload")
    assert command is not None and command.usage == "/upload [transcript]" and "tui" in command.frontends
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test(size=(100, 40)) as pilot:
        assert app.argument_choices("upload") == ["transcript"]
        await ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"upload")
        await pilot.pause(0.3)
        await pilot.press("enter")  # its argument is optional: it runs at once
        await wait_for(pilot, lambda: len(browser.opened) == 1)
        assert upload_folder(uploads, browser).is_dir()


# --- transcripts ------------------------------------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_load_alone_uploads_a_transcript_that_opens_in_a_tab(uploads, tmp_path):
    saved = Conversation(model="tiny", title="from my laptop")
    saved.add_user("a question from home")
    saved.add_answer("an answer")
    transcript.save_transcript(saved, tmp_path / "home.json")
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/load")
        folder = upload_folder(uploads, browser)
        assert "transcript" in notices(app)[-1]
        hand_over(folder, {"home.json": tmp_path / "home.json"})
        await wait_for(pilot, lambda: [m.text for m in app.active.conversation.messages][:1]
                       == ["a question from home"])
        assert app.active.conversation.path is None  # its file went with the upload: /save makes a new one
        await wait_for(pilot, lambda: not folder.exists())
        assert notices(app)[-1] == "opened from my laptop (2 messages)"

        await type_line(pilot, "/upload transcript")
        folder = upload_folder(uploads, browser)
        hand_over(folder, {"notes.json": b"{not json"})
        await wait_for(pilot, lambda: errors(app) != [])
        [line] = errors(app)
        assert "notes.json" in line and str(folder) not in line and "\n" not in line
        await type_line(pilot, "/upload transcript")
        hand_over(upload_folder(uploads, browser), {"a.json": b"[]", "b.json": b"[]"})
        await wait_for(pilot, lambda: len(errors(app)) == 2)
        assert errors(app)[-1].startswith("upload one transcript at a time (got 2 files)")
        assert list(uploads.iterdir()) == []


# --- downloads ----------------------------------------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_save_and_export_download_in_the_browser_and_the_download_loads_back(uploads, tmp_path):
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        app.active.conversation.pending.append(Attachment.from_path(picture(tmp_path / "boat.png")))
        await type_line(pilot, "what is this?")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2)

        await type_line(pilot, f"/save {tmp_path / 'chat.json'}")
        assert (tmp_path / "chat.json").is_file() and (tmp_path / "chat.images").is_dir()  # the server's copy
        [download] = browser.downloads
        assert download["kind"] == "binary" and download["save_filename"] == "chat.json"
        assert download["mime_type"] == "application/json"
        [image] = json.loads(download["data"])["messages"][0]["images"]
        assert "data" in image  # the download holds its picture: the browser user has no server folder
        assert notices(app)[-1] == (f"saved to {tmp_path / 'chat.json'}; your browser downloads chat.json "
                                    "with its pictures inside")
        assert app.active.conversation.path == tmp_path / "chat.json"  # tied to the server's file, not the copy

        await type_line(pilot, f"/export {tmp_path / 'chat.md'}")
        download = browser.downloads[-1]
        assert download["kind"] == "text" and download["source"] == tmp_path / "chat.md"
        assert b"what is this?" in download["data"]
        assert notices(app)[-1].startswith(f"exported to {tmp_path / 'chat.md'}; your browser downloads chat.md")

        await type_line(pilot, "/upload transcript")  # what was downloaded comes back with its picture
        hand_over(upload_folder(uploads, browser), {"chat.json": browser.downloads[0]["data"]})
        await wait_for(pilot, lambda: len(app.tabs.panes) == 2)
        [loaded] = app.active.conversation.messages[0].images
        assert not loaded.missing and loaded.data == (tmp_path / "boat.png").read_bytes()

        await type_line(pilot, f"/save {tmp_path / 'one.json'} --embed")  # already whole: the file itself goes
        assert browser.downloads[-1]["data"] == (tmp_path / "one.json").read_bytes()


def test_help_says_save_and_export_download_in_the_browser():
    from dsvl_tui.commands.registry import registry

    for name in ("save", "export", "load"):
        command = registry.get(name)
        assert command is not None and "dsvl-chat web" in (command.handler.__doc__ or "")


# --- previews and the thin client ---------------------------------------------------------------------


@pytest.mark.parametrize("requested", [None, "auto", "kitty", "sixel"])
def test_web_mode_draws_half_blocks_whatever_the_server_terminal_says(requested, monkeypatch):
    kitty = {"TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1", "COLORTERM": "truecolor"}
    assert image_protocols.choose(requested, {**kitty, "DSVL_WEB": "1"}, interactive=True) == "halfblock"
    if requested != "sixel":
        assert image_protocols.choose(requested, kitty, interactive=True) == "kitty"  # the rule is web mode's
    monkeypatch.setattr(image_protocols, "_interactive", lambda: True)
    environ = {**kitty, "DSVL_WEB": "1", image_protocols.ENV_VAR: requested or ""}
    assert image_protocols.prepare(environ) == "halfblock"


THIN_CLIENT = textwrap.dedent("""
    import asyncio, os, sys, time
    from pathlib import Path

    from PIL import Image

    from dsvl_tui.cli import build_options
    from dsvl_tui.tui.app import DsvlApp


    async def main():
        app = DsvlApp(build_options({"endpoint": "http://127.0.0.1:9/v1"}))  # what `dsvl-chat web` runs
        opened = []
        app.open_url = lambda url, new_tab=True: opened.append(url)
        async with app.run_test() as pilot:
            app.run_command("/upload")
            while not opened:
                await pilot.pause(0.05)
            folder = Path(os.environ["DSVL_WEB_UPLOADS"]) / opened[0].rsplit("/", 1)[1]
            Image.new("RGB", (16, 16), (200, 0, 0)).save(folder / "red.png")
            (folder / ".done").write_bytes(b"")
            deadline = time.monotonic() + 30
            while not app.active.conversation.pending and time.monotonic() < deadline:
                await pilot.pause(0.05)
            print(len(app.active.conversation.pending), "torch" in sys.modules)

    asyncio.run(main())
""")


@pytest.mark.slow
def test_the_app_of_dsvl_chat_web_checks_an_upload_without_importing_torch(uploads):
    """Every browser tab is an app process: a thin client of the one model server, which alone loads torch."""
    proc = subprocess.run([sys.executable, "-c", THIN_CLIENT], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "False"]  # the picture attached, checked as /image checks it; no torch


def test_an_upload_error_is_one_line(tmp_path):
    mode = web_client.WebMode(BASE_URL, tmp_path / "file")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(web_client.UploadError) as caught:
        mode.new_upload("images")
    assert "\n" not in str(caught.value) and str(tmp_path / "file") in str(caught.value)
    received = web_client.Received(tmp_path / "big.png", "big.png")
    received.path.write_bytes(b"x" * (2 << 20))
    with pytest.raises(web_client.UploadError, match="big.png is larger than 1 MB"):
        web_client.keep_image(received, tmp_path, 1 << 20, frozenset({".png"}))
    assert web_client.WebMode.from_environ({"DSVL_WEB": "1", "DSVL_WEB_URL": BASE_URL + "/"}) is None
    assert web_client.WebMode.from_environ(
        {"DSVL_WEB": "1", "DSVL_WEB_URL": BASE_URL + "/", "DSVL_WEB_UPLOADS": "/x"}) == \
        web_client.WebMode(BASE_URL, Path("/x"))


@pytest.mark.slow
@run_async
async def test_a_download_that_fails_in_the_browser_is_one_line_and_the_app_goes_on(uploads, tmp_path):
    from textual import events

    from dsvl_tui.web.client import DOWNLOAD_NAME

    app = scripted_app()
    Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "hello")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2)
        await type_line(pilot, f"/export {tmp_path / 'chat.md'}")
        app.post_message(events.DeliveryFailed(key="k", exception=ConnectionResetError("the tab closed"),
                                               name=DOWNLOAD_NAME))
        await wait_for(pilot, lambda: bool(errors(app)))
        [error] = errors(app)
        assert "did not reach your browser (the tab closed)" in error and "\n" not in error
        assert (tmp_path / "chat.md").is_file()  # the server's copy stays
        app.post_message(events.DeliveryFailed(key="s", exception=OSError("x"), name="screenshot"))  # not ours
        await type_line(pilot, "still here?")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 4)
        assert len(errors(app)) == 1


@pytest.mark.slow
@run_async
async def test_export_alone_in_a_browser_names_the_file_and_downloads_it(uploads, private_dirs):
    app = scripted_app()
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/export")
        assert errors(app) == ["nothing to export yet"]
        await type_line(pilot, "Why is the sky blue?")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2)
        await type_line(pilot, "/export")
        [download] = browser.downloads
        written = Path(download["source"])
        assert written.parent.name == "exports" and written.name.startswith("why-is-the-sky-blue-")
        assert written.suffix == ".md" and b"Why is the sky blue?" in download["data"]
        assert notices(app)[-1].startswith(f"exported to {written}; your browser downloads {written.name}")


# --- the model server's limits (issue 20) ----------------------------------------------------------


class LimitedServer(ScriptedEngine):
    """The model server as a tab sees it: a request with more than ``limit`` pictures in all is refused (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.refused = 0

    def stream(self, messages, settings=None, *, system=None, cancel=None, cache_key="default"):
        from dsvl_tui.backends.remote import RemoteError

        pictures = sum(len(message.images) for message in messages)
        if pictures > self.limit:
            self.refused += 1
            raise RemoteError(f"http://127.0.0.1:9 refused the request (HTTP 413): the request has {pictures} "
                              f"images; this server takes at most {self.limit} per request")
        return super().stream(messages, settings, system=system, cancel=cancel, cache_key=cache_key)


@pytest.mark.slow
@run_async
async def test_pictures_past_the_model_servers_limits_are_refused_when_attached_so_no_message_is_stuck(
        uploads, tmp_path, monkeypatch, private_dirs):
    monkeypatch.setenv("DSVL_WEB_MAX_IMAGES", "2")  # what `dsvl-chat web` tells its tabs
    monkeypatch.setenv("DSVL_WEB_MAX_BODY_MIB", "1")
    one, two, three, four = (picture(tmp_path / f"{name}.png", (n * 60, 0, 0))
                             for n, name in enumerate(("one", "two", "three", "four")))
    backend = LimitedServer(2)
    app = scripted_app(backend)
    browser = Browser(app)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, f"/image {one} {two} {three}")
        await wait_for(pilot, lambda: errors(app) != [])
        assert [a.name for a in app.active.conversation.pending] == ["one.png", "two.png"]
        [line] = errors(app)
        assert line == ("not attached: three.png: the model server takes at most 2 pictures per conversation "
                        "(each message sends them all) and this one has 2; /new starts a conversation with room "
                        "for them")
        await type_line(pilot, "what are these?")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2)

        await type_line(pilot, "/upload")  # the history holds two already: an uploaded one is refused too
        hand_over(upload_folder(uploads, browser), {"four.png": four})
        await wait_for(pilot, lambda: len(errors(app)) == 2)
        assert errors(app)[-1].startswith("not attached: four.png: the model server takes at most 2 pictures")
        assert "this one has 2" in errors(app)[-1] and app.active.conversation.pending == []
        for turns, question in enumerate(("and now?", "and then?"), start=2):  # every later message is answered
            await type_line(pilot, question)
            await wait_for(pilot, lambda turns=turns: len(app.active.conversation.messages) == 2 * turns)
        assert backend.refused == 0 and len(backend.calls) == 3

        await type_line(pilot, "/new")
        await wait_for(pilot, lambda: app.active.conversation.messages == [])
        noise = Image.frombytes("RGB", (520, 520), os.urandom(520 * 520 * 3))
        noise.save(tmp_path / "noise.png")  # about 800 KB: over 1 MiB as base64
        await type_line(pilot, f"/image {tmp_path / 'noise.png'} {one}")
        await wait_for(pilot, lambda: errors(app) != [])
        assert errors(app) == ["not attached: noise.png: the model server takes at most 1 MiB per message, pictures "
                               "included; /new starts a conversation with room for them"]
        assert [a.name for a in app.active.conversation.pending] == ["one.png"]


def test_the_model_servers_limits_come_from_the_environment_dsvl_chat_web_sets():
    environ = {"DSVL_WEB": "1", "DSVL_WEB_URL": BASE_URL, "DSVL_WEB_UPLOADS": "/x"}
    mode = web_client.WebMode.from_environ({**environ, "DSVL_WEB_MAX_IMAGES": "8", "DSVL_WEB_MAX_BODY_MIB": "32"})
    assert mode is not None and mode.limits == web_client.ServerLimits(8, 32 << 20)
    for bad in ({}, {"DSVL_WEB_MAX_IMAGES": "x", "DSVL_WEB_MAX_BODY_MIB": "32"},
                {"DSVL_WEB_MAX_IMAGES": "8", "DSVL_WEB_MAX_BODY_MIB": "0"}):
        mode = web_client.WebMode.from_environ({**environ, **bad})
        assert mode is not None and mode.limits is None  # unknown: nothing refused before the server says so
