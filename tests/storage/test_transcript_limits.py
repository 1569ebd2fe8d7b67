"""Transcript limits: text per message, messages per file, file size, and memory while loading."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from dsvl_tui.storage.transcript import TranscriptError, load_transcript
from dsvl_tui.storage.transcript import format as transcript_format


def _write(path: Path, messages: list[dict], **extra) -> Path:
    path.write_text(json.dumps({"format": "dsvl-chat.transcript", "version": 1, "messages": messages, **extra}))
    return path


def _refused(path: Path) -> str:
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    text = str(caught.value)
    assert "\n" not in text and len(text) < 300
    return text


def test_the_limits_are_the_documented_ones():
    assert transcript_format.MAX_TEXT_CHARS == 2**20
    assert transcript_format.MAX_MESSAGES == 10_000
    assert transcript_format.MAX_FILE_BYTES == 512 * 2**20
    docs = (Path(__file__).resolve().parents[2] / "docs" / "transcripts.md").read_text()
    assert "1,048,576 characters" in docs and "10,000 messages" in docs and "512 MiB" in docs


def test_a_message_over_the_text_limit_is_refused_in_one_line(tmp_path):
    limit = transcript_format.MAX_TEXT_CHARS
    ok = _write(tmp_path / "ok.json", [{"role": "user", "text": "x" * limit}])
    assert len(load_transcript(ok).messages[0].text) == limit
    path = _write(tmp_path / "chat.json",
                  [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "x" * (limit + 1)}])
    assert "messages[1].text: 1,048,577 characters is more than the 1,048,576" in _refused(path)
    assert "system:" in _refused(_write(tmp_path / "s.json", [], system="y" * (limit + 1)))
    assert "title:" in _refused(_write(tmp_path / "t.json", [], title="y" * (limit + 1)))


def test_too_many_messages_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(transcript_format, "MAX_MESSAGES", 4)
    four = [{"role": "user", "text": str(i)} for i in range(4)]
    assert len(load_transcript(_write(tmp_path / "ok.json", four)).messages) == 4
    assert "messages: 5 messages is more than the 4" in _refused(_write(tmp_path / "chat.json", four + four[:1]))
    upstream = tmp_path / "ask.json"
    upstream.write_text(json.dumps([{"role": "User", "content": str(i)} for i in range(5)]))
    assert "5 messages is more than the 4" in _refused(upstream)


def test_upstream_content_over_the_text_limit_is_refused(tmp_path):
    path = tmp_path / "ask.json"
    path.write_text(json.dumps([{"role": "User", "content": "x" * (transcript_format.MAX_TEXT_CHARS + 1)}]))
    assert "[0].content: 1,048,577 characters" in _refused(path)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:  # sparse: takes no disk
        handle.truncate(transcript_format.MAX_FILE_BYTES + 1)
    tracemalloc.start()
    try:
        assert "larger than 512 MB" in _refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def _peak_loading(path: Path) -> int:
    tracemalloc.start()
    try:
        load_transcript(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_while_loading_is_a_small_multiple_of_the_file_size(tmp_path):
    """It was the 512 MB read buffer, whatever the file's size, then splitting a long first message for the title."""
    words = "word " * (transcript_format.MAX_TEXT_CHARS // 5)
    many = _write(tmp_path / "many.json", [{"role": r, "text": words} for r in ("user", "assistant") * 4])
    one = _write(tmp_path / "one.json", [{"role": "user", "text": words}])
    for path in (many, one):
        size = path.stat().st_size
        assert _peak_loading(path) < 4 * size + 2**20, path.name
