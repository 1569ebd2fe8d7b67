"""A transcript the user loads may only refer to image files in its own folder tree.

Absolute paths, ``..``, links out of the folder and the ``source`` fallback
would let a hostile transcript make the app copy any readable file into the
data folder (autosave) or into a saved transcript (``/save --embed``). Each of
those loads as "image missing" instead, and nothing of the file comes out.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.transcript import load_transcript, load_transcript_report, save_transcript

SECRET = b"TOP-SECRET-CONTENT 1234567890"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "private" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _png_bytes(colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 3), colour).save(out, "PNG")
    return out.getvalue()


def _ours(folder: Path, *images: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chat.json"
    path.write_text(json.dumps({"format": "dsvl-chat.transcript", "version": 1, "messages": [
        {"role": "user", "text": "look", "images": list(images)},
        {"role": "assistant", "text": "ok"}]}))
    return path


def _leaks(root: Path) -> list[str]:
    """Files under ``root`` holding the secret, as is or in base64."""
    encoded = base64.b64encode(SECRET)[:24]
    return [str(p) for p in root.rglob("*") if p.is_file() and (SECRET in p.read_bytes() or encoded in p.read_bytes())]


def _copies_out(conv, tmp_path: Path) -> None:
    """What the app does with a loaded conversation: autosave, /save and /save --embed."""
    assert Journal().record(conv) is None
    (tmp_path / "out").mkdir(exist_ok=True)
    save_transcript(conv, tmp_path / "out" / "saved.json")
    save_transcript(conv, tmp_path / "out" / "embedded.json", embed_images=True)


def _assert_refused(path: Path, tmp_path: Path, secret: Path) -> None:
    conv, warnings = load_transcript_report(path)
    image = conv.messages[0].images[0]
    assert image.missing and image.data is None
    assert len(warnings) == 1 and "refused" in warnings[0] and "\n" not in warnings[0]
    _copies_out(conv, tmp_path)
    assert _leaks(tmp_path / "data") == [] and _leaks(tmp_path / "out") == []
    # Reopening the journal (which may use absolute paths for hashed images) does not launder it either.
    journal = Journal()
    reopened = journal.open(journal.recent()[0])
    assert reopened.messages[0].images[0].missing
    assert journal.record(reopened) is None
    assert _leaks(tmp_path / "data") == []
    assert secret.read_bytes() == SECRET


def test_an_absolute_path_without_a_hash_is_refused(tmp_path, secret):
    path = _ours(tmp_path / "t", {"sha256": None, "path": str(secret)})
    _assert_refused(path, tmp_path, secret)


def test_an_absolute_path_with_the_right_hash_is_refused_too(tmp_path, secret):
    digest = hashlib.sha256(SECRET).hexdigest()
    path = _ours(tmp_path / "t", {"sha256": digest, "path": str(secret)})
    _assert_refused(path, tmp_path, secret)


def test_dot_dot_is_refused(tmp_path, secret):
    path = _ours(tmp_path / "t", {"sha256": None, "path": "chat.images/../../private/secret.txt"})
    _assert_refused(path, tmp_path, secret)


def test_a_file_beside_the_transcript_but_outside_an_image_folder_is_refused(tmp_path, secret):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(SECRET)
    path = _ours(folder, {"sha256": None, "path": "notes.txt"})
    conv, warnings = load_transcript_report(path)
    assert conv.messages[0].images[0].missing and "image folder" in warnings[0]


def test_a_link_in_the_image_folder_pointing_out_is_refused(tmp_path, secret):
    folder = tmp_path / "t"
    (folder / "chat.images").mkdir(parents=True)
    (folder / "chat.images" / "pic.png").symlink_to(secret)
    path = _ours(folder, {"sha256": None, "path": "chat.images/pic.png"})
    _assert_refused(path, tmp_path, secret)


def test_an_image_folder_that_is_a_link_out_is_refused(tmp_path, secret):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "chat.images").symlink_to(secret.parent, target_is_directory=True)
    path = _ours(folder, {"sha256": None, "path": "chat.images/secret.txt"})
    _assert_refused(path, tmp_path, secret)


def test_the_source_fallback_is_ignored_in_a_loaded_file(tmp_path, secret):
    digest = hashlib.sha256(SECRET).hexdigest()
    path = _ours(tmp_path / "t", {"sha256": digest, "path": "chat.images/gone.png", "source": str(secret)})
    conv = load_transcript(path)
    assert conv.messages[0].images[0].missing


@pytest.mark.parametrize("reference", ["../private/secret.txt", "PRIVATE", "images/secret.png"])
def test_upstream_lists_reach_only_their_own_folder(tmp_path, secret, reference):
    folder = tmp_path / "prompts"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "secret.png").symlink_to(secret)
    if reference == "PRIVATE":
        reference = str(secret)
    path = folder / "ask.json"
    path.write_text(json.dumps([{"role": "User", "content": "<image_placeholder>hi", "images": [reference]}]))
    _assert_refused(path, tmp_path, secret)


def test_images_inside_the_folder_tree_still_load(tmp_path):
    folder = tmp_path / "t"
    (folder / "chat.images" / "sub").mkdir(parents=True)
    (folder / "chat.images" / "sub" / "a.png").write_bytes(_png_bytes())
    (folder / "chat.images" / "b.png").symlink_to(folder / "chat.images" / "sub" / "a.png")  # a link inside
    path = _ours(folder, {"sha256": None, "path": "chat.images/sub/a.png"},
                 {"sha256": None, "path": "chat.images/b.png"})
    conv, warnings = load_transcript_report(path)
    assert warnings == [] and not any(image.missing for image in conv.messages[0].images)
    listing = tmp_path / "list"
    (listing / "images").mkdir(parents=True)
    (listing / "images" / "c.png").write_bytes(_png_bytes("blue"))
    (listing / "ask.json").write_text(json.dumps([
        {"role": "User", "content": "<image_placeholder>hi", "images": ["./images/c.png"]}]))
    assert not load_transcript(listing / "ask.json").messages[0].images[0].missing


def test_the_journal_still_finds_a_hashed_image_by_its_absolute_source(tmp_path):
    """The app's own journal keeps working after its image copy is gone (hash-checked)."""
    from dsvl_tui.core.conversation import Attachment, Conversation

    picture = tmp_path / "pics" / "a.png"
    picture.parent.mkdir()
    picture.write_bytes(_png_bytes())
    conv = Conversation()
    conv.pending.append(Attachment.from_path(picture))
    conv.add_user("hi")
    journal = Journal()
    assert journal.record(conv) is None
    for copy in (journal.directory / f"{conv.id}.images").iterdir():
        copy.unlink()
    assert not journal.open(conv.id).messages[0].images[0].missing
    picture.write_bytes(SECRET)  # same path, other bytes: refused by the hash
    assert journal.open(conv.id).messages[0].images[0].missing


def test_a_file_swapped_after_loading_is_not_copied(tmp_path, secret):
    folder = tmp_path / "t"
    (folder / "chat.images").mkdir(parents=True)
    image = folder / "chat.images" / "a.png"
    image.write_bytes(_png_bytes())
    path = _ours(folder, {"sha256": None, "path": "chat.images/a.png"})
    conv = load_transcript(path)
    assert not conv.messages[0].images[0].missing
    image.unlink()
    image.symlink_to(secret)
    _copies_out(conv, tmp_path)
    assert _leaks(tmp_path / "data") == [] and _leaks(tmp_path / "out") == []
    assert conv.messages[0].images[0].missing
