"""``--endpoint`` on the command line: ``ask`` and the REPL against a server, usage errors, exit codes."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Script
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dsvl_tui.cli import main
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("local", [["--device", "cpu"], ["--dtype", "float32"], ["--compile"]])
@pytest.mark.parametrize("where", ["chat", "ask"])
def test_local_engine_options_with_endpoint_are_a_usage_error(local, where, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DSVL_DEVICE", raising=False)
    argv = ["--endpoint", "http://127.0.0.1:9", *local, "--plain"] if where == "chat" else \
        ["ask", "hi", "--endpoint", "http://127.0.0.1:9", *local]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and local[0] in lines[0] and "--endpoint" in lines[0]


def test_ask_with_a_server_that_is_down_is_one_line_and_exit_4(capsys) -> None:
    url = refused_url()
    code, out, err = run_cli(["ask", "hi", "--endpoint", url, "--quiet"], capsys)
    assert (code, out) == (4, "")
    assert err == f"error: cannot reach {url}: connection refused; is the server running?\n"


def test_ask_says_it_uses_the_server_not_that_it_loads_a_model(capsys) -> None:
    url = refused_url()
    code, _, err = run_cli(["ask", "hi", "--endpoint", url.replace("http://", "http://user:secret@")], capsys)
    assert code == 4
    assert err.splitlines()[0] == f"using the model server at {url}"  # no credentials, no local model name


def test_ask_answers_through_the_endpoint_and_the_key_is_never_saved(tmp_path: Path, capsys, monkeypatch) -> None:
    transcript = tmp_path / "chat.json"
    with FakeOpenAI(Script(api_key="top-secret-key")) as server:
        monkeypatch.setenv("DSVL_API_KEY", "top-secret-key")
        endpoint = server.url.replace("http://", "http://bob:hunter2@")
        code, out, err = run_cli(["ask", "hi", "--endpoint", endpoint, "--transcript", str(transcript),
                                  "--json", "--temperature", "0"], capsys)
        assert code == 0, err
        assert server.headers[-1]["Authorization"] == "Bearer top-secret-key"
    document = json.loads(out)
    assert document["answer"] == "Hello there" and document["model"] == "fake-org/fake-vl-7b-chat"
    saved = transcript.read_text()
    assert "top-secret-key" not in saved and "hunter2" not in saved and "bob" not in saved
    assert json.loads(saved)["model"] == "fake-org/fake-vl-7b-chat"
    assert json.loads(saved)["endpoint"] == server.url  # which server answered, without the user name


def test_ask_answers_through_the_endpoint_named_by_dsvl_endpoint(capsys, monkeypatch) -> None:
    with FakeOpenAI() as server:
        monkeypatch.setenv("DSVL_ENDPOINT", server.url)  # no --endpoint on the command line
        code, out, err = run_cli(["ask", "hi", "--json", "--temperature", "0"], capsys)
        assert code == 0, err
        assert server.requests[-1]["messages"][-1]["content"] == "hi"
    assert err.splitlines()[0] == f"using the model server at {server.url}"
    document = json.loads(out)
    assert document["answer"] == "Hello there" and document["model"] == "fake-org/fake-vl-7b-chat"


def test_transcripts_record_the_endpoint_and_still_read_ones_without(tmp_path: Path) -> None:
    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.storage.transcript import load_transcript, save_transcript
    from engine.types import GenerationStats

    remote = Conversation(model="srv/model", endpoint="http://gpu-box:8000")
    remote.add_user("hi")
    remote.add_answer("hello", GenerationStats(new_tokens=1, stop_reason="eos"))
    save_transcript(remote, tmp_path / "remote.json")
    back = load_transcript(tmp_path / "remote.json")
    assert (back.endpoint, back.model) == ("http://gpu-box:8000", "srv/model")

    local = Conversation(model="tiny")  # a local model: no endpoint key, as files written before it had none
    local.add_user("hi")
    save_transcript(local, tmp_path / "local.json")
    assert "endpoint" not in json.loads((tmp_path / "local.json").read_text())
    assert load_transcript(tmp_path / "local.json").endpoint == ""


@pytest.mark.timeout(60)
def test_the_repl_stays_usable_when_the_server_is_down(capsys) -> None:
    url = refused_url()
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        # The message comes back to the prompt (Enter would retry it); Ctrl+U clears it for a command.
        pipe.send_text("hello\r\x15/set temperature 0\r\x04")
        repl = Repl(Options(endpoint=url), input=pipe, output=DummyOutput(), stdout=out, stderr=err, colour=False)
        code = repl.run()
    assert code == 0
    assert f"error: cannot reach {url}: connection refused; is the server running?" in err.getvalue()
    assert repl.conversation.messages == []  # nothing recorded: the next message tries again
    assert repl.conversation.settings.temperature == 0  # the command after it still ran


@pytest.mark.timeout(60)
def test_the_repl_answers_through_the_endpoint() -> None:
    out, err = io.StringIO(), io.StringIO()
    with FakeOpenAI() as server, create_pipe_input() as pipe:
        pipe.send_text("hello\r\x04")
        repl = Repl(Options(endpoint=server.url), input=pipe, output=DummyOutput(), stdout=out, stderr=err,
                    colour=False)
        assert repl.run() == 0
    assert "Hello there" in out.getvalue()
    assert [m.text for m in repl.conversation.messages] == ["hello", "Hello there"]


@pytest.mark.slow
def test_the_app_says_so_in_one_line_when_the_server_is_down_and_keeps_the_message() -> None:
    from tui_support import notices, ready, run_async, type_line, wait_for

    from dsvl_tui.tui.app import DsvlApp

    url = refused_url()

    @run_async
    async def drive() -> None:
        app = DsvlApp(Options(endpoint=url))
        async with app.run_test(size=(100, 24)) as pilot:
            await ready(pilot)
            assert app.status.device == url
            await type_line(pilot, "hello")
            await wait_for(pilot, lambda: notices(app, error=True))
            assert notices(app, error=True)[-1].endswith(
                f"cannot reach {url}: connection refused; is the server running?")
            assert app.active.conversation.messages == []  # nothing recorded; Enter again retries
            assert app.prompt.text == "hello"

    drive()


# --- a broken or hostile server (issue 20) ---------------------------------------------------------------------------

HOSTILE = [
    b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n',
    b'data: {"choices": [{"delta": "s"}]}\n\n',  # a delta that is not an object
    b'data: {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]}\n\n',
    b'data: {"choices": [], "usage": {"prompt_tokens": "abc", "completion_tokens": 1' + b"0" * 400 + b"}}\n\n",
    b"data: [DONE]\n\n",
]


def test_ask_keeps_the_answer_of_a_hostile_server_and_its_transcript_reads_back(tmp_path: Path, capsys) -> None:
    transcript = tmp_path / "chat.json"
    with FakeOpenAI(Script(raw=HOSTILE)) as server:
        for question in ("hi", "again"):  # the second ask reads the transcript the first wrote
            code, out, err = run_cli(["ask", question, "--endpoint", server.url, "--transcript", str(transcript)],
                                     capsys)
            assert code == 0, err
            assert out == "Hello\n"
    notes = [line for line in err.splitlines() if "the server" in line]
    assert notes == ["the server sent a delta that is not an object ('s'); ignored",
                     "the server's usage.prompt_tokens ('abc') is not a token count; it was dropped",
                     "the server's usage.completion_tokens (an integer of 401 digits) is not a token count; "
                     "it was dropped"]
    saved = json.loads(transcript.read_text())
    assert [m["text"] for m in saved["messages"]] == ["hi", "Hello", "again", "Hello"]
    assert saved["messages"][-1]["stats"]["prompt_tokens"] == 0 and saved["messages"][-1]["stats"]["new_tokens"] == 2


def test_ask_json_escapes_c1_controls_as_it_escapes_esc(capsys) -> None:
    answer = "a\x1b[31mred\x9b31m\x85\x7f\u00a0b"
    with FakeOpenAI(Script(chunks=[answer])) as server:
        code, out, err = run_cli(["ask", "hi", "--endpoint", server.url, "--json"], capsys)
    assert code == 0, err
    assert not any("\x7f" <= c <= "\x9f" or c == "\x1b" for c in out)
    assert "\\u001b[31m" in out and "\\u009b31m" in out and "\\u0085" in out and "\\u007f" in out
    assert "\u00a0" in out  # printable characters beyond ASCII are left as they are
    assert json.loads(out)["answer"] == answer


@pytest.mark.timeout(60)
def test_the_repl_keeps_the_answer_of_a_hostile_server_and_reads_the_next_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    with FakeOpenAI(Script(raw=HOSTILE)) as server, create_pipe_input() as pipe:
        pipe.send_text("hello\r/set temperature 0\r\x04")
        repl = Repl(Options(endpoint=server.url), input=pipe, output=DummyOutput(), stdout=out, stderr=err,
                    colour=False)
        assert repl.run() == 0, err.getvalue()
    assert "Hello" in out.getvalue()
    assert "the server sent a delta that is not an object ('s'); ignored" in err.getvalue()
    assert [m.text for m in repl.conversation.messages] == ["hello", "Hello"]
    assert repl.conversation.messages[-1].stats.prompt_tokens == 0
    assert repl.conversation.settings.temperature == 0  # the line after it was read and run


def test_ask_refuses_a_question_longer_than_a_transcript_holds_before_anything_loads(capsys) -> None:
    from dsvl_tui.repl.ask import AskRequest, run_ask

    err = io.StringIO()
    code = run_ask(AskRequest(Options(endpoint=refused_url()), "q" * (2**20 + 1)), stdout=io.StringIO(), stderr=err)
    assert code == 3
    assert err.getvalue() == ("error: the message is 1,048,577 characters, more than the 1,048,576 a transcript may "
                              "hold; shorten it\n")
