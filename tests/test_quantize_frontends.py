"""``--quantize`` through the front ends: the CLI and its env var, ``ask --json``, transcripts, the app's /model
and status bar."""

from __future__ import annotations

import json

import pytest
from tui_support import GREEDY, notices, ready, run_async, type_line, wait_for
from typer.testing import CliRunner

from dsvl_tui.cli import app
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.storage.transcript import TranscriptError, load_transcript, save_transcript
from dsvl_tui.tui.app import DsvlApp

runner = CliRunner()


def _ask(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["ask", "--max-new-tokens", "2", "--temperature", "0", "--json", "-q", *args],
                         env={"DSVL_QUANTIZE": None, **(env or {})})


def test_ask_json_and_transcript_keep_the_mode_and_a_continued_transcript_reloads_it(tiny_siglip, tmp_path):
    transcript = tmp_path / "chat.json"
    first = _ask("--model", str(tiny_siglip), "--quantize", "int8", "--transcript", str(transcript), "hi")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["quantize"] == "int8"
    assert json.loads(transcript.read_text())["quantize"] == "int8"
    assert load_transcript(transcript).quantize == "int8"
    # Continued without --quantize: loads as the transcript says, and keeps saying so.
    again = _ask("--transcript", str(transcript), "and?")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["quantize"] == "int8"
    # Given (here by the env var), the option wins.
    given = _ask("--transcript", str(transcript), "more?", env={"DSVL_QUANTIZE": "int4"})
    assert json.loads(given.stdout)["quantize"] == "int4"
    assert load_transcript(transcript).quantize == "int4"
    plain = _ask("--model", str(tiny_siglip), "hi")
    assert json.loads(plain.stdout)["quantize"] == "none"


@pytest.mark.parametrize(("args", "problem"), [
    (["--quantize", "int3"], "quantize must be one of none, int8, int4, not 'int3'"),
    (["--quantize", "int8", "--endpoint", "http://127.0.0.1:9/v1"], "--quantize is for a model loaded here"),
])
def test_bad_or_remote_quantize_is_a_usage_error(args, problem):
    result = runner.invoke(app, ["ask", *args, "hi"], env={"DSVL_QUANTIZE": None, "COLUMNS": "300"})
    assert result.exit_code == 2
    assert problem in " ".join(result.output.split())


def test_transcripts_without_the_field_read_as_unquantized_and_a_bad_value_is_refused(tmp_path):
    path = save_transcript(Conversation(model="m"), tmp_path / "plain.json")
    document = json.loads(path.read_text())
    assert "quantize" not in document  # unquantized: version 1 as before
    assert load_transcript(path).quantize == "none"
    document["quantize"] = "int2"
    path.write_text(json.dumps(document))
    with pytest.raises(TranscriptError, match=r"quantize: expected one of none, int8, int4, got 'int2'"):
        load_transcript(path)


@pytest.mark.slow
@run_async
async def test_model_command_keeps_the_mode_and_the_status_bar_shows_it(tiny_siglip, tiny_hybrid, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    tui = DsvlApp(Options(model=str(tiny_siglip), settings=GREEDY, quantize="int4", device="cpu"))
    async with tui.run_test() as pilot:
        await ready(pilot)
        assert tui.engine.info.quantize == "int4"
        assert tui.status.device == "cpu fp32 int4"
        await type_line(pilot, f"/model {tiny_hybrid}")
        await wait_for(pilot, lambda: tui.engine.info.model_id == str(tiny_hybrid))
        assert tui.engine.info.quantize == "int4" and tui.status.device == "cpu fp32 int4"
        assert notices(tui, error=True) == []


@pytest.mark.slow
@run_async
async def test_a_mode_that_cannot_run_is_a_notice_and_the_app_answers(tiny_siglip, tmp_path, monkeypatch):
    from engine import quantize

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(quantize.KERNELS, "cpu", {})
    tui = DsvlApp(Options(model=str(tiny_siglip), settings=GREEDY, quantize="int8", device="cpu"))
    async with tui.run_test() as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: notices(tui))
        assert notices(tui) == ["quantize: int8 weights have no kernel on cpu here; loading unquantized"]
        assert tui.status.device == "cpu fp32"
        await type_line(pilot, "hello?")
        await wait_for(pilot, lambda: any(m.role == "assistant" for m in tui.active.conversation.messages))


def test_serve_passes_the_mode_to_the_engine(monkeypatch, tiny_siglip):
    import dsvl_tui.serve.server as server

    seen: list[Options] = []
    monkeypatch.setattr(server, "run_serve", lambda options, **kw: seen.append(options) or 0)
    result = runner.invoke(app, ["serve", "--model", str(tiny_siglip), "--quantize", "INT4"],
                           env={"DSVL_QUANTIZE": None})
    assert result.exit_code == 0, result.output
    assert seen[0].quantize == "int4"


def test_status_bar_reads_no_mode_from_a_backend_without_one():
    from types import SimpleNamespace

    from dsvl_tui.tui.widgets._status_bar import StatusBar

    bar = StatusBar()
    info = SimpleNamespace(model_id="m", context_length=10, device="http://x", dtype="")
    bar.show(state="ready", info=info)  # type: ignore[arg-type]
    assert bar.device == "http://x"


def test_load_backend_passes_the_mode_to_the_loader_only_when_one_is_set():
    from dsvl_tui.backends.choose import load_backend

    calls: list[dict] = []

    def loader(model: str, **kwargs):
        calls.append(kwargs)
        return "backend"

    load_backend(Options(model="m", quantize="int8"), loader=loader)
    load_backend(Options(model="m"), loader=loader)  # stand-in loaders without the argument keep working
    assert calls[0]["quantize"] == "int8" and "quantize" not in calls[1]
