"""A loaded transcript's pictures: read only from its own ``NAME.images/``, and only the bytes checked.

The attack (issue 20): an archive unpacked into ``$HOME`` holds ``chat.json``
and ``chat.images/photo.png -> ../.ssh/id_rsa``. The link stays inside the
transcript's folder ($HOME), so a check for "inside its folder" let it
through, and ``/load``, a message and ``/save --embed`` copied the key into
the journal and, in base64, into the saved file. Every way to the key (a link,
an image folder that is a link, a hard link, a file swapped after ``/load``)
is refused here, and what is sent or copied is always the bytes whose hash
was checked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from tui_support import ScriptedEngine, notices, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.transcript import load_transcript, load_transcript_report, missing_images, save_transcript

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA not really\n"


def _png(colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (5, 5), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A home folder with a private key, where a downloaded archive was unpacked (``chat.json``)."""
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_bytes(KEY)
    (folder / "chat.images").mkdir()
    monkeypatch.chdir(folder)
    return folder


def _transcript(folder: Path, *paths: str, name: str = "chat.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"format": "dsvl-chat.transcript", "version": 1, "messages": [
        {"role": "user", "text": "look", "images": [{"sha256": None, "path": p} for p in paths]},
        {"role": "assistant", "text": "a picture"}]}))
    return path


def _leaks(*roots: Path) -> list[str]:
    """Files under ``roots`` holding the key, as is or in base64 (any alignment)."""
    needles = [KEY[:40]] + [base64.b64encode(KEY[i:])[:32] for i in range(3)]
    return [str(p) for root in roots for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and ".ssh" not in p.parts
            and any(n in p.read_bytes() for n in needles)]


def _repl(backend: ScriptedEngine, lines: str) -> tuple[Repl, io.StringIO]:
    err = io.StringIO()
    repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: backend,
                stdin=io.StringIO(lines), stdout=io.StringIO(), stderr=err, colour=False)
    return repl, err


def _sent(backend: ScriptedEngine) -> list[list[bytes]]:
    """The pictures of each call to the model, as bytes."""
    return [[image.data for m in messages for image in m.images] for messages in backend.calls]


def test_the_reported_attack_a_link_to_a_key_beside_the_transcript(home, tmp_path):
    (home / "chat.images" / "photo.png").symlink_to(Path("..") / ".ssh" / "id_rsa")
    _transcript(home, "chat.images/photo.png")
    backend = ScriptedEngine(["ok"])
    repl, err = _repl(backend, "/load chat.json\nwhat is in the picture?\n/save out.json --embed\n")
    assert repl.run() == 0
    assert "1 image missing" in err.getvalue()
    assert _sent(backend) == [[]]  # the model never saw it
    assert _leaks(tmp_path / "data", home) == []  # neither the journal nor out.json (embedded) holds it
    saved = json.loads((home / "out.json").read_text())
    assert "data" not in saved["messages"][0]["images"][0]
    assert (home / ".ssh" / "id_rsa").read_bytes() == KEY


def test_an_image_folder_that_is_itself_a_link_is_refused(home, tmp_path):
    (home / "chat.images").rmdir()
    (home / "chat.images").symlink_to(home / ".ssh", target_is_directory=True)  # inside the transcript's folder
    conv, warnings = load_transcript_report(_transcript(home, "chat.images/id_rsa"))
    assert conv.messages[0].images[0].missing
    [warning] = warnings
    assert "chat.images is a link" in warning and "\n" not in warning
    assert Journal().record(conv) is None
    save_transcript(conv, home / "out.json", embed_images=True)
    assert _leaks(tmp_path / "data", home) == []


def test_a_hard_link_is_refused(home, tmp_path):
    os.link(home / ".ssh" / "id_rsa", home / "chat.images" / "photo.png")
    conv, warnings = load_transcript_report(_transcript(home, "chat.images/photo.png"))
    assert conv.messages[0].images[0].missing
    [warning] = warnings
    assert "2 hard links" in warning
    assert Journal().record(conv) is None
    save_transcript(conv, home / "out.json", embed_images=True)
    assert conv.engine_messages()[0].images == []
    assert _leaks(tmp_path / "data", home / "out.json", home / "out.images") == []


def test_an_upstream_list_refuses_hard_links_and_links_out_too(home, tmp_path):
    (home / "pics").mkdir()
    os.link(home / ".ssh" / "id_rsa", home / "pics" / "a.png")
    (home / "pics" / "b.png").symlink_to(home / ".ssh" / "id_rsa")
    (home / "pics" / "c.png").write_bytes(_png("green"))
    (home / "pics" / "d.png").symlink_to("c.png")  # a link that stays in the folder is fine
    path = home / "ask.json"
    path.write_text(json.dumps([{"role": "User", "content": "<image_placeholder>" * 4 + "hi",
                                 "images": ["pics/a.png", "pics/b.png", "pics/c.png", "pics/d.png"]}]))
    conv, warnings = load_transcript_report(path)
    assert [a.missing for a in conv.messages[0].images] == [True, True, False, False]
    assert len(warnings) == 2 and "hard links" in warnings[0]
    assert [image.data for image in conv.engine_messages()[0].images] == [_png("green")] * 2


def test_only_the_transcripts_own_image_folder_is_read(home):
    (home / "other.images").mkdir()
    (home / "other.images" / "a.png").write_bytes(_png())
    conv, warnings = load_transcript_report(_transcript(home, "other.images/a.png"))
    assert conv.messages[0].images[0].missing and "not in chat.images/" in warnings[0]


def test_a_picture_swapped_after_load_is_not_sent_nor_copied_and_is_told_once(home, tmp_path):
    picture = home / "chat.images" / "photo.png"
    picture.write_bytes(_png("red"))
    _transcript(home, "chat.images/photo.png")

    class Swapping(ScriptedEngine):
        def stream(self, messages, settings=None, **kwargs):
            result = super().stream(messages, settings, **kwargs)
            if len(self.calls) == 1:  # after the first answer the file becomes another picture
                picture.write_bytes(_png("blue"))
            return result

    backend = Swapping(["ok"])
    repl, err = _repl(backend, "/load chat.json\nfirst\nsecond\nthird\n/save out.json --embed\n")
    assert repl.run() == 0
    assert _sent(backend) == [[_png("red")], [], []]  # the swapped bytes never reach the model
    notices = [line for line in err.getvalue().splitlines() if "left out" in line]
    assert len(notices) == 1 and "photo.png" in notices[0] and "changed since" in notices[0]
    blue = [base64.b64encode(_png("blue")).decode(), hashlib.sha256(_png("blue")).hexdigest()]
    saved = (home / "out.json").read_text()
    assert not any(b in saved for b in blue) and not (home / "out.images").exists()
    journal = "".join(p.read_bytes().hex() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert _png("blue").hex() not in journal


def test_a_picture_swapped_for_a_link_to_the_key_after_load(home, tmp_path):
    picture = home / "chat.images" / "photo.png"
    picture.write_bytes(_png())
    conv = load_transcript(_transcript(home, "chat.images/photo.png"))
    picture.unlink()
    picture.symlink_to(home / ".ssh" / "id_rsa")
    conv.add_user("and now?")
    assert conv.engine_messages()[0].images == []
    [notice] = conv.image_notices()
    assert "photo.png" in notice and conv.image_notices() == []  # once
    assert Journal().record(conv) is None
    save_transcript(conv, tmp_path / "out.json", embed_images=True)
    assert _leaks(tmp_path / "data", tmp_path / "out.json") == []


def test_an_attached_picture_changed_before_sending_is_left_out(tmp_path):
    """The recorded hash decides for a picture attached with /image too: not the file as it is now."""
    picture = tmp_path / "photo.png"
    picture.write_bytes(_png("red"))
    conv = Conversation()
    conv.pending.append(Attachment.from_path(picture))
    conv.add_user("what is this?")
    picture.write_bytes(_png("blue"))  # another picture under the same name
    assert conv.engine_messages()[0].images == []
    assert conv.messages[0].images[0].missing and len(conv.image_notices()) == 1


def test_a_recorded_sha256_that_does_not_match_is_refused(home, tmp_path):
    (home / "chat.images" / "photo.png").write_bytes(_png("blue"))
    path = home / "chat.json"
    path.write_text(json.dumps({"format": "dsvl-chat.transcript", "version": 1, "messages": [
        {"role": "user", "text": "look", "images": [
            {"sha256": hashlib.sha256(_png("red")).hexdigest(), "path": "chat.images/photo.png"}]}]}))
    conv, warnings = load_transcript_report(path)
    assert conv.messages[0].images[0].missing and "hash does not match" in warnings[0]
    assert conv.engine_messages()[0].images == []
    save_transcript(conv, tmp_path / "out.json", embed_images=True)
    assert base64.b64encode(_png("blue")).decode() not in (tmp_path / "out.json").read_text()


def test_saved_transcripts_with_pictures_still_round_trip(tmp_path):
    pictures = []
    for colour in ("red", "green"):
        pictures.append(tmp_path / "in" / f"{colour}.png")
        pictures[-1].parent.mkdir(exist_ok=True)
        pictures[-1].write_bytes(_png(colour))
    conv = Conversation()
    conv.pending += [Attachment.from_path(p) for p in pictures]
    conv.add_user("two pictures")
    conv.add_answer("red and green")
    (tmp_path / "a").mkdir()
    path = save_transcript(conv, tmp_path / "a" / "chat.json")
    again = load_transcript(path)
    assert missing_images(again) == 0
    assert [image.data for image in again.engine_messages()[0].images] == [_png("red"), _png("green")]
    again.add_user("more")
    copy = save_transcript(again, tmp_path / "a" / "second.json")  # its own second.images/
    third = load_transcript(copy)
    assert missing_images(third) == 0
    assert Path(third.messages[0].images[0].path).parent == tmp_path / "a" / "second.images"
    embedded = load_transcript(save_transcript(third, tmp_path / "one.json", embed_images=True))
    assert [a.data for a in embedded.messages[0].images] == [_png("red"), _png("green")]
    assert Journal().record(embedded) is None
    assert Journal().open(embedded.id).messages[0].images[0].missing is False


@pytest.mark.slow
@run_async
async def test_the_tui_says_once_that_a_picture_changed_since_load(home):
    picture = home / "chat.images" / "photo.png"
    picture.write_bytes(_png("red"))
    _transcript(home, "chat.images/photo.png")
    backend = ScriptedEngine(["ok"])
    app = scripted_app(backend)

    def left_out() -> list[str]:
        return [n for n in notices(app) if "left out" in n]

    async with app.run_test() as pilot:
        await ready(pilot)
        app.run_command("/load chat.json")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2, timeout=60)
        await type_line(pilot, "first")
        await wait_for(pilot, lambda: len(backend.calls) == 1 and app.queue.for_pane(app.active) is None, timeout=60)
        picture.write_bytes(_png("blue"))
        await type_line(pilot, "second")
        await wait_for(pilot, lambda: len(backend.calls) == 2 and left_out(), timeout=60)
        await type_line(pilot, "third")
        await wait_for(pilot, lambda: len(backend.calls) == 3 and app.queue.for_pane(app.active) is None, timeout=60)
        assert _sent(backend) == [[_png("red")], [], []]
        [notice] = left_out()
        assert "photo.png" in notice and "changed since" in notice


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_a_link_swapped_in_between_the_check_and_the_open_is_not_followed(home, swap):
    """The path is resolved and checked, then opened folder by folder through no link: a link put in
    its place in between (a race) is refused, not followed to the key."""
    from dsvl_tui.storage.transcript.read import Reader

    (home / "chat.images" / "sub").mkdir()
    (home / "chat.images" / "sub" / "photo.png").write_bytes(_png())
    reader = Reader(str(home / "chat.json"), home)
    place, problem = reader.locate("chat.images/sub/photo.png", "images[0].path", upstream=False, hashed=False)
    assert place is not None and problem == ""
    if swap == "file":
        (home / "chat.images" / "sub" / "photo.png").unlink()
        (home / "chat.images" / "sub" / "photo.png").symlink_to(home / ".ssh" / "id_rsa")
    else:
        (home / "chat.images" / "sub").rename(home / "chat.images" / "old")
        (home / ".ssh" / "photo.png").symlink_to("id_rsa")
        (home / "chat.images" / "sub").symlink_to(home / ".ssh", target_is_directory=True)
    attachment, problem = reader.file(place, None, "photo.png")
    assert attachment.missing and attachment.sha256 is None and "symbolic link" in problem
