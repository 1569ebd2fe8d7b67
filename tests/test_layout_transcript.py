"""Transcripts record the layout of the checkpoint that answered: deepseek-ai's "original" or transformers'
converted one."""

from __future__ import annotations

import json
import types

import pytest
from typer.testing import CliRunner

from dsvl_tui.cli import app
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.turn import note_backend
from dsvl_tui.storage.transcript import TranscriptError, load_transcript, save_transcript
from engine.testing.converted_checkpoints import write_converted_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return write_converted_checkpoint(tmp_path_factory.mktemp("converted"), seed=4)


def _ask(*args: str):
    return runner.invoke(app, ["ask", "--max-new-tokens", "2", "--temperature", "0", "--json", "-q", *args],
                         env={"DSVL_QUANTIZE": None})


@pytest.mark.parametrize("layout", ["transformers", "original"])
def test_a_conversation_answered_by_the_engine_saves_and_loads_its_layout(layout, converted, tiny_siglip, tmp_path):
    folder = converted if layout == "transformers" else tiny_siglip
    transcript = tmp_path / "chat.json"
    result = _ask("--model", str(folder), "--transcript", str(transcript), "hi")
    assert result.exit_code == 0, result.output
    assert json.loads(transcript.read_text())["layout"] == layout
    assert load_transcript(transcript).layout == layout
    # Continued (the model is the transcript's), it keeps saying so.
    again = _ask("--transcript", str(transcript), "and?")
    assert again.exit_code == 0, again.output
    assert load_transcript(transcript).layout == layout


def test_a_server_records_no_layout_and_a_stand_in_without_one_none():
    conversation = Conversation(model="m", layout="transformers")
    server = types.SimpleNamespace(remote=True, endpoint="http://127.0.0.1:9/v1",
                                   info=types.SimpleNamespace(model_id="served", quantize="none", layout="original"))
    note_backend(conversation, server)  # a server's own layout is not known here
    assert (conversation.layout, conversation.model) == ("", "served")
    conversation.layout = "original"
    note_backend(conversation, types.SimpleNamespace(info=types.SimpleNamespace(model_id="x")))
    assert conversation.layout == ""


def test_transcripts_without_the_field_still_read_and_a_bad_value_is_refused(tmp_path):
    path = save_transcript(Conversation(model="m"), tmp_path / "plain.json")
    document = json.loads(path.read_text())
    assert "layout" not in document  # unknown (an older file, or a server): nothing written
    assert load_transcript(path).layout == ""
    for bad, shown in (("converted", "'converted'"), (3, "integer")):
        document["layout"] = bad
        path.write_text(json.dumps(document))
        with pytest.raises(TranscriptError, match="layout") as info:
            load_transcript(path)
        assert shown in str(info.value) and "\n" not in str(info.value)
    document["layout"] = "x" * 10_000
    path.write_text(json.dumps(document))
    with pytest.raises(TranscriptError) as info:
        load_transcript(path)
    assert len(str(info.value)) < 300
