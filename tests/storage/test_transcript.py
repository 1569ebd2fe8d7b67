"""Transcripts: the file format, round trips, upstream lists, broken files, atomic writes, Markdown."""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import json
import os
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage import atomic
from dsvl_tui.storage.atomic import atomic_write_bytes
from dsvl_tui.storage.transcript import (
    TranscriptError,
    default_save_path,
    export_markdown,
    load_transcript,
    load_transcript_report,
    missing_images,
    save_transcript,
    would_overwrite,
)
from dsvl_tui.storage.transcript import format as transcript_format
from engine.images import load_image
from engine.types import GenerationSettings, GenerationStats


def _png(path: Path, colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def _png_bytes(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 3), colour).save(out, "PNG")
    return out.getvalue()


def _full_conversation(folder: Path) -> Conversation:
    """Every field of the model set to something other than its default."""
    red, blue = _png(folder / "in" / "red.png"), _png(folder / "in" / "blue photo.jpg", "blue")
    green = _png_bytes("green")
    conv = Conversation(system="Answer in French.", model="deepseek-ai/deepseek-vl-7b-chat",
                        settings=GenerationSettings(temperature=0.7, top_p=0.5, top_k=7, repetition_penalty=1.3,
                                                    max_new_tokens=64, seed=1234),
                        created=1714564800.5)
    conv.pending += [Attachment.from_path(red), Attachment.from_path(blue)]
    conv.add_user("What is in these two pictures?\nBe brief.")
    conv.add_answer("Un carré rouge et un carré bleu.",
                    GenerationStats(prompt_tokens=1200, new_tokens=11, time_to_first_token=0.25,
                                    tokens_per_second=41.5, total_seconds=0.52, stop_reason="eos", dropped_turns=1))
    conv.pending += [Attachment.from_path(red),
                     Attachment(data=green, sha256=hashlib.sha256(green).hexdigest(), name="green.png")]
    conv.add_user("And these?")
    conv.add_answer("Un carré rou", GenerationStats(new_tokens=4, stop_reason="cancelled"), stopped=True)
    conv.add_user("Try again")
    conv.add_answer("", GenerationStats(stop_reason="error", error="CUDA out of memory"), error="CUDA out of memory")
    conv.title = "Colours"
    for n, message in enumerate(conv.messages):
        message.created = 1714564801.25 + n
    return conv


def _without_updated(path: Path) -> dict:
    doc = json.loads(path.read_text("utf-8"))
    del doc["updated"]
    return doc


def _one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "\r" not in text and "Traceback" not in text
    return text


# --- round trips ----------------------------------------------------------------


def test_round_trip_is_identical_apart_from_the_update_time(tmp_path):
    conv = _full_conversation(tmp_path)
    (tmp_path / "out").mkdir()
    first = save_transcript(conv, tmp_path / "out" / "chat.json")
    assert conv.path == first == (tmp_path / "out" / "chat.json")
    images = sorted(p.name for p in (tmp_path / "out" / "chat.images").iterdir())
    assert len(images) == 3  # red twice, blue and green: each written once, named by hash
    assert all(n[:64] == hashlib.sha256((tmp_path / "out" / "chat.images" / n).read_bytes()).hexdigest()
               for n in images)

    loaded = load_transcript(first)
    expected = _without_updated(first)
    save_transcript(loaded, first)
    assert _without_updated(first) == expected
    (tmp_path / "elsewhere").mkdir()
    save_transcript(loaded, tmp_path / "elsewhere" / "chat.json")
    assert _without_updated(tmp_path / "elsewhere" / "chat.json") == expected

    # Every field came back.
    assert (loaded.system, loaded.model, loaded.title, loaded.settings) == (conv.system, conv.model, conv.title,
                                                                            conv.settings)
    assert loaded.created == pytest.approx(conv.created, abs=1e-3)
    for before, after in zip(conv.messages, loaded.messages, strict=True):
        assert (after.role, after.text, after.stats, after.stopped, after.error) == (
            before.role, before.text, before.stats, before.stopped, before.error)
        assert after.created == pytest.approx(before.created, abs=1e-3)
        assert [(a.name, a.sha256, a.missing) for a in after.images] == [
            (b.label, b.sha256, False) for b in before.images]
    assert missing_images(loaded) == 0


def test_the_stored_json_uses_the_documented_shape(tmp_path):
    path = save_transcript(_full_conversation(tmp_path), tmp_path / "chat.json")
    doc = json.loads(path.read_text("utf-8"))
    assert (doc["format"], doc["version"]) == ("dsvl-chat.transcript", 2)
    assert doc["created"] == "2024-05-01T12:00:00.500Z" and doc["updated"].endswith("Z")
    assert doc["settings"]["seed"] == 1234 and doc["system"] == "Answer in French."
    image = doc["messages"][0]["images"][0]
    assert image["name"] == "red.png" and image["path"] == f"chat.images/{image['sha256']}.png"
    assert doc["messages"][1]["stats"]["tokens_per_second"] == 41.5
    assert doc["messages"][3]["stopped"] is True and doc["messages"][5]["error"] == "CUDA out of memory"


def test_embedded_images_make_one_self_contained_file(tmp_path):
    conv = _full_conversation(tmp_path)
    path = save_transcript(conv, tmp_path / "one.json", embed_images=True)
    assert not (tmp_path / "one.images").exists()
    moved = tmp_path / "moved" / "one.json"
    moved.parent.mkdir()
    shutil.move(path, moved)
    loaded = load_transcript(moved)
    assert all(a.data is not None and not a.missing for m in loaded.messages for a in m.images)
    expected = _without_updated(moved)
    save_transcript(loaded, moved, embed_images=True)
    assert _without_updated(moved) == expected
    first = load_image(loaded.engine_messages()[0].images[0])  # sent to the model as an image again
    assert first.size == (4, 4) and first.getpixel((0, 0)) == (255, 0, 0)


def test_the_file_and_its_image_folder_can_be_moved_together(tmp_path):
    conv = _full_conversation(tmp_path)
    (tmp_path / "a").mkdir()
    save_transcript(conv, tmp_path / "a" / "chat.json")
    shutil.rmtree(tmp_path / "in")  # the originals are gone
    shutil.move(tmp_path / "a", tmp_path / "b")
    loaded = load_transcript(tmp_path / "b" / "chat.json")
    assert missing_images(loaded) == 0 and loaded.path == tmp_path / "b" / "chat.json"
    assert [Path(a.path).parent for a in loaded.messages[0].images] == [tmp_path / "b" / "chat.images"] * 2
    sent = loaded.engine_messages()[0].images
    assert hashlib.sha256(sent[0].data).hexdigest() == conv.messages[0].images[0].sha256


def test_a_saved_conversation_can_be_continued(tmp_path):
    conv = _full_conversation(tmp_path)
    path = save_transcript(conv, tmp_path / "chat.json")
    loaded = load_transcript(path)
    loaded.pending.append(Attachment.from_path(_png(tmp_path / "new.png", "white")))
    loaded.add_user("One more")
    loaded.add_answer("Blanc.")
    save_transcript(loaded, loaded.path)
    again = load_transcript(path)
    assert [m.text for m in again.messages][-2:] == ["One more", "Blanc."]
    assert len(list((tmp_path / "chat.images").iterdir())) == 4


def test_loading_writes_nothing_and_reads_images_in_place(tmp_path):
    outside = _png(tmp_path / "t" / "chat.images" / "pic.png")
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    doc = {"format": "dsvl-chat.transcript", "version": 1, "messages": [
        {"role": "user", "text": "hi", "images": [{"sha256": digest, "path": "chat.images/pic.png"}]}]}
    path = tmp_path / "t" / "chat.json"
    path.write_text(json.dumps(doc))
    before = _snapshot(tmp_path)
    conv = load_transcript(path)
    assert _snapshot(tmp_path) == before
    assert conv.messages[0].images[0].path == str(outside) and not conv.messages[0].images[0].missing
    assert conv.title == "hi" and conv.system is None and conv.settings == GenerationSettings()
    # Saving writes the copy into the new file's own image folder only; the original is untouched.
    save_transcript(conv, tmp_path / "t" / "copy.json")
    after = _snapshot(tmp_path)
    assert after[str(outside.relative_to(tmp_path))] == before[str(outside.relative_to(tmp_path))]
    assert set(after) - set(before) == {"t/copy.json", f"t/copy.images/{digest}.png"}


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_picture_under_another_name_is_stored_once(tmp_path):
    conv = Conversation()
    red = _png(tmp_path / "red.png")
    shutil.copy(red, tmp_path / "copy.jpeg")
    conv.pending += [Attachment.from_path(red), Attachment.from_path(tmp_path / "copy.jpeg")]
    conv.add_user("twice")
    path = save_transcript(conv, tmp_path / "chat.json")
    doc = json.loads(path.read_text())
    paths = [image["path"] for image in doc["messages"][0]["images"]]
    assert paths[0] == paths[1] and len(list((tmp_path / "chat.images").iterdir())) == 1
    assert [image["name"] for image in doc["messages"][0]["images"]] == ["red.png", "copy.jpeg"]


def test_text_with_lone_surrogates_still_saves(tmp_path):
    conv = Conversation()
    conv.add_user("bad byte: \udcff, and 你好")
    loaded = load_transcript(save_transcript(conv, tmp_path / "chat.json"))
    assert loaded.messages[0].text == "bad byte: \ufffd, and 你好"  # valid text again on load (U+FFFD)


def test_non_finite_stats_from_another_backend_are_stored_as_null(tmp_path):
    conv = Conversation()
    conv.add_user("x")
    conv.add_answer("y", GenerationStats(new_tokens=1, tokens_per_second=float("nan"), total_seconds=float("inf")))
    stats = load_transcript(save_transcript(conv, tmp_path / "chat.json")).messages[1].stats
    assert (stats.new_tokens, stats.tokens_per_second, stats.total_seconds) == (1, None, 0.0)


# --- missing images -------------------------------------------------------------------


def test_a_missing_or_altered_image_is_marked_and_the_rest_loads(tmp_path):
    path = save_transcript(_full_conversation(tmp_path), tmp_path / "chat.json")
    doc = json.loads(path.read_text())
    red = tmp_path / doc["messages"][0]["images"][0]["path"]
    blue = tmp_path / doc["messages"][0]["images"][1]["path"]
    red.unlink()
    blue.write_bytes(b"not the picture")
    conv, warnings = load_transcript_report(path)
    assert len(conv.messages) == 6 and missing_images(conv) == 3  # red is used twice
    first = conv.messages[0].images
    assert [a.missing for a in first] == [True, True] and [a.label for a in first] == ["red.png", "blue photo.jpg"]
    assert not conv.messages[2].images[1].missing  # the embedded-then-saved green one
    assert any(w.startswith("messages[0].images[0] (red.png)") for w in warnings)
    assert any(w.startswith("messages[0].images[1]") and "hash does not match" in w for w in warnings)
    assert conv.engine_messages()[0].images == []  # not sent to the model
    # Saved again, a missing image keeps its reference (and loads as missing again).
    expected = _without_updated(path)
    save_transcript(conv, path)
    assert _without_updated(path) == expected
    red.parent.mkdir(exist_ok=True)
    _png(red)  # put back where it belongs: found again
    assert not load_transcript(path).messages[0].images[0].missing


def test_an_image_deleted_since_it_was_attached_is_saved_as_missing(tmp_path):
    conv = Conversation()
    conv.pending.append(Attachment.from_path(_png(tmp_path / "gone.png")))
    conv.add_user("look")
    (tmp_path / "gone.png").unlink()
    path = save_transcript(conv, tmp_path / "chat.json")
    assert missing_images(conv) == 1
    assert load_transcript(path).messages[0].images[0].missing


# --- upstream DeepSeek-VL lists ----------------------------------------------------------


def test_upstream_conversation_lists_load(tmp_path):
    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "images" / "b.png", "blue")
    _png(tmp_path / "shared" / "c.png", "green")
    path = tmp_path / "ask.json"
    path.write_text(json.dumps([
        {"role": "User", "content": "<image_placeholder><image_placeholder>Compare these.",
         "images": ["images/a.png", "./images/b.png"]},
        {"role": "assistant", "content": "The first is red."},
        {"role": "user", "content": "<image_placeholder>\nAnd this one?", "images": ["shared/c.png"]},
        {"role": "ASSISTANT", "content": ""},
    ]))
    conv, warnings = load_transcript_report(path)
    assert warnings == [] and conv.system is None and conv.path is None  # never saved over the prompt file
    assert [(m.role, m.text, len(m.images)) for m in conv.messages] == [
        ("user", "Compare these.", 2), ("assistant", "The first is red.", 0), ("user", "And this one?", 1)]
    assert Path(conv.messages[0].images[1].path) == (tmp_path / "images" / "b.png").resolve()
    assert conv.engine_messages()[0].images[1].data == (tmp_path / "images" / "b.png").read_bytes()
    assert conv.title == "Compare these."


def test_upstream_lists_with_a_missing_image_or_a_tag_mismatch(tmp_path):
    path = tmp_path / "ask.json"
    path.write_text(json.dumps([{"role": "User", "content": "<image_placeholder>hi", "images": ["nope.png"]}]))
    conv = load_transcript(path)
    assert conv.messages[0].images[0].missing and conv.messages[0].text == "hi"
    path.write_text(json.dumps([{"role": "User", "content": "hi"},
                                {"role": "User", "content": "<image_placeholder>x", "images": ["a.png", "b.png"]}]))
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert "[1].content" in _one_line(caught.value) and "1 <image_placeholder> tag(s) but 2 image(s)" in str(
        caught.value)


# --- broken files ----------------------------------------------------------------------

_SHA = "ab" * 32


def _valid() -> dict:
    return {"format": "dsvl-chat.transcript", "version": 1, "created": "2024-05-01T12:00:00Z",
            "updated": "2024-05-01T12:00:00Z", "model": "m", "system": None, "settings": {}, "messages": [
                {"role": "user", "text": "hi", "images": [{"name": "x.png", "sha256": _SHA, "path": "c.images/x.png"}]},
                {"role": "assistant", "text": "hello", "stats": {"new_tokens": 3}, "stopped": False, "error": None}]}


def _set(path: str, value):
    def change(doc):
        *parents, last = path.split("/")
        for key in parents:
            doc = doc[int(key)] if isinstance(doc, list) else doc[key]
        if value is _DELETE:
            del doc[last]
        elif isinstance(doc, list):
            doc[int(last)] = value
        else:
            doc[last] = value
    return change


_DELETE = object()

BROKEN = [
    (_set("format", "something.else"), "format: expected 'dsvl-chat.transcript'"),
    (_set("format", _DELETE), "format: missing"),
    (_set("version", 3), "version: version 3 is newer"),
    (_set("version", 0), "version: unknown version 0"),
    (_set("version", "1"), "version: expected an integer, got string '1'"),
    (_set("version", True), "version: expected an integer, got boolean"),
    (_set("messages", _DELETE), "messages: missing"),
    (_set("messages", {}), "messages: expected an array, got object"),
    (_set("messages/1", "hello"), "messages[1]: expected an object"),
    (_set("messages/1/role", "system"), "messages[1].role: expected 'user' or 'assistant'"),
    (_set("messages/0/text", _DELETE), "messages[0].text: missing"),
    (_set("messages/0/text", 5), "messages[0].text: expected a string, got integer 5"),
    (_set("messages/0/created", "yesterday"), "messages[0].created: expected an ISO 8601 time"),
    (_set("messages/0/images", "x.png"), "messages[0].images: expected an array"),
    (_set("messages/0/images/0", "x.png"), "messages[0].images[0]: expected an object"),
    (_set("messages/0/images/0/sha256", "xyz"), "messages[0].images[0].sha256: expected 64 hex digits"),
    (_set("messages/0/images/0/sha256", _DELETE), "messages[0].images[0].sha256: missing"),
    (_set("messages/0/images/0/path", _DELETE), "messages[0].images[0]: needs either 'path'"),
    (_set("messages/0/images/0/data", "aGk="), "messages[0].images[0]: needs either 'path'"),
    (_set("messages/0/images/0/path", ""), "messages[0].images[0].path: not a usable file path"),
    (_set("messages/0/images/0/path", "a\0b"), "messages[0].images[0].path: not a usable file path"),
    (_set("messages/0/images/0/path", 3), "messages[0].images[0].path: expected a string"),
    (_set("messages/1/stats", 3), "messages[1].stats: expected an object or null"),
    (_set("messages/1/stats/new_tokens", -1), "messages[1].stats.new_tokens: must not be negative"),
    (_set("messages/1/stats/new_tokens", 1.5), "messages[1].stats.new_tokens: expected an integer"),
    (_set("messages/1/stats/stop_reason", "bored"), "messages[1].stats.stop_reason: expected one of"),
    (_set("messages/1/stats/time_to_first_token", "<1e400>"),
     "messages[1].stats.time_to_first_token: must be a finite"),
    (_set("messages/1/stopped", "no"), "messages[1].stopped: expected true or false"),
    (_set("messages/1/error", 1), "messages[1].error: expected a string or null"),
    (_set("settings", []), "settings: expected an object"),
    (_set("settings/top_p", 2), "settings: top_p must be in (0, 1]"),
    (_set("settings/top_k", 1.5), "settings.top_k: expected an integer"),
    (_set("settings/temprature", 0.5), "settings.temprature: unknown setting"),
    (_set("settings/seed", "7"), "settings.seed: expected an integer or null"),
    (_set("system", 5), "system: expected a string or null"),
    (_set("model", None), "model: expected a string"),
    (_set("created", "2024-13-45"), "created: expected an ISO 8601 time"),
    (_set("updated", 1714564800), "updated: expected a string"),
]


@pytest.mark.parametrize("change, message", BROKEN, ids=[m.split(":")[0] for _, m in BROKEN])
def test_a_broken_document_names_the_field(tmp_path, change, message):
    doc = _valid()
    change(doc)
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(doc).replace('"<1e400>"', "1e400"))  # a literal that parses as inf
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    text = _one_line(caught.value)
    assert text.startswith(f"{path}: ") and message in text


def test_the_valid_base_document_loads(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(_valid()))
    conv, warnings = load_transcript_report(path)
    assert conv.messages[1].stats == GenerationStats(new_tokens=3) and conv.messages[0].images[0].missing
    assert warnings and warnings[0].startswith("messages[0].images[0] (x.png)")


@pytest.mark.parametrize("raw, message", [
    (b"", "not JSON (line 1, column 1"),
    (b"{\"format\": ", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b"42", "expected a transcript object or a DeepSeek-VL conversation list, got integer 42"),
    (b"\"text\"", "got string"),
    (b"[1]", "[0]: expected an object"),
    (b"[{\"role\": \"System\", \"content\": \"x\"}]", "[0].role: expected 'User' or 'Assistant'"),
    (b"[{\"role\": \"User\"}]", "[0].content: missing"),
    (b"[{\"role\": \"User\", \"content\": \"<image_placeholder>x\", \"images\": [3]}]",
     "[0].images[0]: expected a file path"),
    (b"{\"format\": \"dsvl-chat.transcript\", \"version\": 1, \"settings\": {\"top_p\": NaN}, \"messages\": []}",
     "not JSON (NaN is not a JSON number)"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
])
def test_files_that_are_not_transcripts(tmp_path, raw, message):
    path = tmp_path / "x.json"
    path.write_bytes(raw)
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert message in _one_line(caught.value)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"format": "dsvl-chat.transcript", "version": 1,
                                                   "messages": []}).encode())
    assert load_transcript(path).messages == []


def test_missing_files_folders_and_size_limits(tmp_path, monkeypatch):
    with pytest.raises(TranscriptError, match="no such file"):
        load_transcript(tmp_path / "nope.json")
    with pytest.raises(TranscriptError, match="is a folder"):
        load_transcript(tmp_path)
    path = save_transcript(_full_conversation(tmp_path), tmp_path / "chat.json", embed_images=True)
    monkeypatch.setattr(transcript_format, "MAX_IMAGE_BYTES", 16)
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert "messages[0].images[0].data: image larger than 0 MB" in _one_line(caught.value)
    monkeypatch.setattr(transcript_format, "MAX_FILE_BYTES", 100)
    with pytest.raises(TranscriptError, match="larger than 0 MB; not a transcript"):
        load_transcript(path)


def test_every_settings_and_stats_field_has_a_known_json_type():
    """A field added to either dataclass is stored and checked; its annotation needs a JSON kind."""
    for cls in (GenerationSettings, GenerationStats):
        assert all(str(f.type) in transcript_format._KINDS for f in fields(cls)), cls


# --- property-based: malformed input gives only TranscriptError ------------------------------

_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=12)
            | st.sampled_from(["user", "assistant", "User", "", "..", "../x.png", "/", "/dev/null",
                               "2024-05-01T12:00:00Z", "dsvl-chat.transcript", "<image_placeholder>", "a" * 64,
                               "aGk=", "eos", 1e308, -1, 2**70]))
_JSON = st.recursive(_SCALARS, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8) | st.sampled_from(list(_valid()) + [
                         "role", "text", "images", "content", "sha256", "path", "data", "stats"]), kids, max_size=5),
                     max_leaves=16)


def _load_quietly(path: Path):
    """Load; only a clean, one-line ``TranscriptError`` may come out."""
    try:
        return load_transcript(path)
    except TranscriptError as error:
        _one_line(error)
        return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder holding a complete saved transcript (with its images) to mutate."""
    folder = tmp_path_factory.mktemp("corpus")
    path = save_transcript(_full_conversation(folder), folder / "chat.json")
    embedded = save_transcript(_full_conversation(folder), folder / "one.json", embed_images=True)
    upstream = [{"role": "User", "content": "<image_placeholder>hi", "images": ["in/red.png"]},
                {"role": "Assistant", "content": "ok"}, {"role": "User", "content": "more"},
                {"role": "Assistant", "content": ""}]
    return folder, [json.loads(path.read_text()), json.loads(embedded.read_text()), upstream]


def _leaves(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, prefix + (index,))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_random_bytes_give_only_clean_errors(corpus, raw):
    path = corpus[0] / "random.json"
    path.write_bytes(raw)
    _load_quietly(path)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(value=_JSON)
def test_random_json_gives_only_clean_errors(corpus, value):
    path = corpus[0] / "random.json"
    path.write_text(json.dumps(value))
    _load_quietly(path)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_near_valid_documents_give_only_clean_errors(corpus, data):
    """A valid document with one field replaced by a random value, or removed."""
    folder, bases = corpus
    doc = copy.deepcopy(data.draw(st.sampled_from(bases)))
    where = data.draw(st.sampled_from(list(_leaves(doc))[1:]))
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(_JSON)
    path = folder / "near.json"
    path.write_text(json.dumps(doc))
    _load_quietly(path)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.sampled_from(list(_valid())), _JSON, max_size=4))
def test_documents_with_random_top_level_fields_give_only_clean_errors(corpus, extra):
    path = corpus[0] / "top.json"
    path.write_text(json.dumps({**_valid(), **extra}))
    _load_quietly(path)


# --- atomic writes and failures ----------------------------------------------------------------


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if atomic.is_temp_file(p)]


def test_atomic_write_replaces_keeps_the_mode_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_bytes(path, b"one")
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("target", ["replace", "fsync", "write"])
def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch, target):
    conv = _full_conversation(tmp_path)
    path = save_transcript(conv, tmp_path / "chat.json")
    old = path.read_bytes()
    conv.add_user("a new message")
    snapshot = copy.deepcopy(conv)
    conv_path_before = conv.path

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                full_disk()

        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(atomic.os, target, full_disk)
    with pytest.raises(TranscriptError) as caught:
        save_transcript(conv, path)
    assert _one_line(caught.value) == f"{path}: not saved: No space left on device"
    assert path.read_bytes() == old and _no_temp_files(tmp_path)
    assert conv == snapshot and conv.path == conv_path_before


def test_a_failed_first_save_removes_the_images_it_wrote(tmp_path, monkeypatch):
    conv = _full_conversation(tmp_path)
    real_replace = os.replace

    def refuse_json(src, dst):
        if str(dst).endswith(".json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", refuse_json)
    with pytest.raises(TranscriptError) as caught:
        save_transcript(conv, tmp_path / "chat.json")
    assert _one_line(caught.value) == f"{tmp_path / 'chat.json'}: not saved: Permission denied"
    assert not (tmp_path / "chat.json").exists() and not (tmp_path / "chat.images").exists()
    assert conv.path is None and _no_temp_files(tmp_path)


def test_a_read_only_folder_gives_one_line(tmp_path, monkeypatch):
    conv = _full_conversation(tmp_path)
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(atomic.os, "open", read_only)
    for call in (lambda: save_transcript(conv, tmp_path / "chat.json"),
                 lambda: save_transcript(conv, tmp_path / "chat.json", embed_images=True),
                 lambda: export_markdown(conv, tmp_path / "chat.md")):
        with pytest.raises(TranscriptError) as caught:
            call()
        assert _one_line(caught.value).endswith("Permission denied")
    assert conv.path is None and _no_temp_files(tmp_path)
    assert not (tmp_path / "chat.json").exists() and not (tmp_path / "chat.md").exists()


def test_a_folder_in_the_way(tmp_path):
    conv = _full_conversation(tmp_path)
    (tmp_path / "chat.json").mkdir()
    with pytest.raises(TranscriptError) as caught:
        save_transcript(conv, tmp_path / "chat.json")
    assert _one_line(caught.value).endswith("is a folder; give a file name such as chat.json")
    (tmp_path / "other.images").write_text("a file where the image folder goes")
    with pytest.raises(TranscriptError) as caught:
        save_transcript(conv, tmp_path / "other.json")
    assert "other.images" in _one_line(caught.value) and not (tmp_path / "other.json").exists()
    with pytest.raises(TranscriptError, match="folder .* does not exist"):
        save_transcript(conv, tmp_path / "no" / "such" / "chat.json")
    assert conv.path is None


# --- paths -------------------------------------------------------------------------------------


def test_default_save_path_is_new_and_in_the_data_folder(tmp_path):
    conv = Conversation(created=1714564800)
    conv.add_user("Qu'est-ce que c'est? A *cat*!")
    first = default_save_path(conv)
    assert first.parent == tmp_path / "data" / "saved" and first.parent.is_dir()
    assert first.name.endswith("-qu-est-ce-que-c-est-a-cat.json") and first.name.startswith("2024-05-0")
    save_transcript(conv, first)
    second = default_save_path(conv)
    assert second != first and second.name.endswith("-cat-2.json")
    assert default_save_path(Conversation()).name.endswith("-conversation.json")


def test_would_overwrite_asks_only_for_another_existing_file(tmp_path):
    conv = _full_conversation(tmp_path)
    assert not would_overwrite(conv, tmp_path / "chat.json")
    save_transcript(conv, tmp_path / "chat.json")
    assert not would_overwrite(conv, tmp_path / "chat.json")
    (tmp_path / "other.json").write_text("{}")
    assert would_overwrite(conv, tmp_path / "other.json")
    assert would_overwrite(Conversation(), tmp_path / "chat.json")


# --- Markdown export --------------------------------------------------------------------------


def test_markdown_export(tmp_path):
    conv = _full_conversation(tmp_path)
    conv.messages[2].images.append(Attachment(path=str(tmp_path / "lost.png"), missing=True, name="lost.png"))
    (tmp_path / "notes").mkdir()
    path = export_markdown(conv, tmp_path / "notes" / "chat.md")
    text = path.read_text("utf-8")
    assert text.startswith("# Colours\n") and "deepseek-vl-7b-chat" in text
    assert "> **System prompt:** Answer in French." in text
    assert text.count("## You") == 3 and text.count("## Assistant") == 3
    assert "![red.png](../in/red.png)" in text and "![blue photo.jpg](../in/blue%20photo.jpg)" in text
    green = hashlib.sha256(_png_bytes("green")).hexdigest()
    assert f"![green.png](chat.images/{green}.png)" in text and (path.parent / "chat.images" / f"{green}.png").is_file()
    assert "_[image missing: lost.png]_" in text
    assert ("<sub>11 tokens · 41.5 tok/s · first token 0.25 s"
            " · 1 oldest turn left out to fit the context window</sub>") in text
    assert "<sub>stopped · 4 tokens</sub>" in text and "**Error:** CUDA out of memory" in text
    assert "What is in these two pictures?\nBe brief." in text


def test_markdown_export_writes_no_control_characters(tmp_path):
    conv = Conversation(system="be \x1b[31mred\x07")
    conv.add_user("hi\x1b]52;c;aGk=\x07 there\r\x00")
    conv.add_answer("ans\x1b[2Jwer\x85\tdone")
    text = export_markdown(conv, tmp_path / "chat.md").read_text("utf-8")
    assert "hi there" in text and "answer\tdone" in text and "be red" in text
    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7F <= ord(c) < 0xA0 for c in text)


def test_markdown_export_into_a_folder_fails_cleanly(tmp_path):
    with pytest.raises(TranscriptError) as caught:
        export_markdown(Conversation(), tmp_path)
    assert "is a folder" in _one_line(caught.value)


def test_a_transcript_without_a_title_is_titled_by_its_first_question_cut_at_a_word(tmp_path) -> None:
    """The default title ended mid-word ("... picture of o"); it ends at a word with an ellipsis (issue 16)."""
    question = "Please describe everything you can see in this picture of our summer holiday"
    doc = {"format": "dsvl-chat.transcript", "version": 1, "messages": [{"role": "user", "text": question}]}
    path = tmp_path / "untitled.json"
    path.write_text(json.dumps(doc))
    assert load_transcript(path).title == "Please describe everything you can see in this picture of\u2026"
