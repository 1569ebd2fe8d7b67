"""The built-in slash commands: argument parsing and errors against a recording session,
and the send/answer path through the REPL's real session on a tiny checkpoint."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

import engine
from dsvl_tui.commands import builtin as builtin_commands  # noqa: F401 - fills the registry
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import printable
from dsvl_tui.repl.app import Repl
from dsvl_tui.tui.clipboard import ClipboardError, osc52
from engine.testing.random_checkpoints import write_checkpoint
from engine.types import GenerationSettings, GenerationStats


class Recorder:
    """A front end that records what the commands ask of it."""

    def __init__(self, frontend: str = "repl") -> None:
        self.frontend = frontend
        self.conversation = Conversation(model="tiny")
        self.generating = False
        self.calls: list[tuple] = []
        self.notices: list[str] = []
        self.input = ""
        self.help: list = []  # the sections /help showed
        self.choices: list = []  # what /resume offered
        self.open_choice = None

    def info(self, message: str) -> None:
        self.notices.append(message)

    def error(self, message: str) -> None:
        self.calls.append(("error", message))

    def send(self, text: str) -> None:
        self.calls.append(("send", text))

    def regenerate(self) -> None:
        self.calls.append(("regenerate",))

    def is_generating(self) -> bool:
        return self.generating

    def stop_generation(self) -> None:
        self.calls.append(("stop",))

    def refresh(self) -> None:
        pass

    def read_then(self, read, then) -> None:
        then(read())

    def open_conversation(self, conversation: Conversation) -> None:
        self.calls.append(("open", conversation))
        self.conversation = conversation

    def choose_conversation(self, choices, open) -> None:
        self.choices, self.open_choice = list(choices), open

    def show_help(self, sections) -> None:
        self.help = list(sections)

    def new_pane(self) -> None:
        self.calls.append(("new_pane",))

    def close_pane(self) -> None:
        self.calls.append(("close_pane",))

    def switch_pane(self, offset: int) -> None:
        self.calls.append(("switch_pane", offset))

    def change_model(self, model: str) -> None:
        self.calls.append(("change_model", model))

    def set_theme(self, name: str) -> None:
        if name != "dsvl-night":
            raise ValueError(f"unknown theme {name!r}")
        self.calls.append(("theme", name))

    def theme_name(self) -> str | None:
        return None

    def set_input(self, text: str) -> None:
        self.input = text

    def copy_text(self, text: str) -> None:
        osc52(text)
        self.calls.append(("copy", text))

    def quit(self) -> None:
        self.calls.append(("quit",))

    def run(self, line: str) -> None:
        registry.run(self, line)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def session() -> Recorder:
    return Recorder()


def _png(path: Path) -> Path:
    Image.new("RGB", (8, 6), "red").save(path)
    return path


def _turn(conv: Conversation, question: str = "hi", answer: str = "hello") -> None:
    conv.add_user(question)
    conv.add_answer(answer, GenerationStats(new_tokens=2, stop_reason="eos"))


def _error(session: Recorder, line: str) -> str:
    with pytest.raises(CommandError) as caught:
        session.run(line)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the registry ---------------------------------------------------------------------


def test_every_command_has_a_summary_usage_and_help_text() -> None:
    names = {c.name for c in registry.commands()}
    assert {"image", "save", "load", "export", "reset", "new", "close", "next", "prev", "system", "set", "model",
            "regenerate", "edit", "undo", "copy", "theme", "resume", "help", "quit"} <= names
    for cmd in registry.commands():
        assert cmd.summary and cmd.usage.startswith(f"/{cmd.name}")


def test_unknown_command_names_the_closest(session) -> None:
    assert _error(session, "/sav x") == "unknown command /sav; did you mean /save?"
    assert "did you mean /regenerate?" in _error(session, "/regenrate")
    assert "/help" in _error(session, "/zzzzzz")


def test_tui_only_commands_are_refused_in_the_repl(session) -> None:
    assert "not available here" in _error(session, "/theme dsvl-night")
    assert "not available here" in _error(session, "/close")
    tui = Recorder("tui")
    tui.run("/theme dsvl-night")
    tui.run("/next")
    tui.run("/prev")
    assert tui.calls == [("theme", "dsvl-night"), ("switch_pane", 1), ("switch_pane", -1)]
    assert "unknown theme" in _error(tui, "/theme nope")


def test_quit_and_its_alias(session) -> None:
    session.run("/quit")
    session.run("/exit")
    assert session.calls == [("quit",), ("quit",)]


def test_help_shows_the_front_ends_commands(session) -> None:
    session.run("/help")
    [section] = session.help
    usages = [usage for usage, _ in section.rows]
    assert section.title == "Commands" and usages == [c.usage for c in registry.commands("repl")]
    assert "/image PATH... | /image clear" in usages and "/set [KEY [VALUE]]" in usages
    assert not [u for u in usages if u.startswith("/theme")]  # tui only
    undo = registry.get("undo")
    assert undo is not None and (undo.usage, undo.summary) in section.rows
    session.run("/help set")
    assert session.notices[-1].startswith("/set [KEY [VALUE]]:") and "max_new_tokens" in session.notices[-1]
    for command in registry.commands("repl"):  # the docstrings' `code` marks are not shown (issue 16)
        session.run(f"/help {command.name}")
        assert "`" not in session.notices[-1], command.name
    assert "did you mean /save?" in _error(session, "/help sav")


# --- settings and system prompt -------------------------------------------------------------


def test_set_lists_shows_and_changes_settings(session) -> None:
    session.run("/set")
    assert session.notices[-1].startswith("temperature=0.2  top_p=0.95  top_k=50")
    before = session.conversation.settings
    session.run("/set temperature 0")
    session.run("/set max-new-tokens 64")
    session.run("/set seed 7")
    settings = session.conversation.settings
    assert (settings.temperature, settings.max_new_tokens, settings.seed) == (0.0, 64, 7)
    assert before.temperature == 0.2  # replaced, not changed in place (an answer may be using it)
    session.run("/set seed none")
    assert session.conversation.settings.seed is None
    session.run("/set top_k")
    assert session.notices[-1] == "top_k=50"


def test_set_says_its_scope_and_shows_a_random_seed(session) -> None:
    session.run("/set seed none")
    assert session.notices[-1] == "seed=random (from the next answer, for this conversation; /new starts from it)"
    session.run("/set seed")
    assert session.notices[-1] == "seed=random"
    session.run("/set")
    assert "seed=random" in session.notices[-1] and "None" not in session.notices[-1]
    session.run("/help set")
    assert "this tab" in session.notices[-1] and "/new starts from them" in session.notices[-1]


def test_the_readme_names_the_commands_the_repl_lacks() -> None:
    """The README said the REPL had the app's commands; /theme, /next and the like are the app's only (issue 16)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    repl_part = readme.split("`dsvl-chat --plain` is a line-by-line REPL")[1].split("Enter sends")[0]
    app_only = [c.name for c in registry.commands("tui") if "repl" not in c.frontends]
    assert "theme" in app_only and "next" in app_only
    assert all(f"`/{name}`" in repl_part for name in app_only), app_only


def test_help_speaks_of_tabs_not_panes() -> None:
    for command in registry.commands("tui"):
        assert "pane" not in f"{command.summary} {command.handler.__doc__ or ''}".lower(), command.name


@pytest.mark.parametrize(("line", "message"), [
    ("/set temprature 1", "unknown setting temprature; did you mean temperature?"),
    ("/set colour 1", "unknown setting colour; one of temperature, top_p, top_k"),
    ("/set temperature warm", "temperature must be a number, not 'warm'"),
    ("/set top_k 2.5", "top_k must be a whole number, not '2.5'"),
    ("/set temperature nan", "temperature must be a finite number"),
    ("/set top_p 2", "top_p must be in (0, 1]"),
    ("/set max_new_tokens 0", "max_new_tokens must be at least 1"),
    ("/set temperature 1 2", "usage: /set KEY VALUE"),
])
def test_set_errors(session, line: str, message: str) -> None:
    assert _error(session, line).startswith(message)
    assert session.conversation.settings == GenerationSettings()


def test_system_prompt(session) -> None:
    session.run("/system")  # shows the default it uses, shortened (issue 16)
    assert session.notices[-1] == ('system prompt: the model\'s default, "You are a helpful language and vision '
                                   'assistant. You are able to understand the visual\u2026" (base models use none)')
    session.run("/system Answer in French.")
    assert session.conversation.system == "Answer in French."
    session.run("/system")
    assert session.notices[-1] == "system prompt: Answer in French."
    session.run("/system default")
    assert session.conversation.system is None and "You are a helpful" in session.notices[-1]


def test_model_shows_or_changes(session, monkeypatch) -> None:
    session.run("/model")
    assert session.notices[-1] == "model: tiny"
    monkeypatch.setenv("HOME", "/home/someone")
    session.run("/model ~/models/dsvl")
    session.run("/model deepseek-ai/deepseek-vl-7b-chat")
    assert session.calls == [("change_model", "/home/someone/models/dsvl"),
                             ("change_model", "deepseek-ai/deepseek-vl-7b-chat")]
    assert session.notices[-1] == ("loading deepseek-ai/deepseek-vl-7b-chat in the background; "
                                   "the current model answers until it is ready")  # one line (issue 16)
    assert _error(session, "/model a b") == "usage: /model ID | PATH"


# --- images -------------------------------------------------------------------------------


def test_image_attaches_good_files_and_names_bad_ones(session, tmp_path) -> None:
    good = _png(tmp_path / "red dot.png")
    other = _png(tmp_path / "b.png")
    (tmp_path / "notes.png").write_text("not a picture")
    message = _error(session, f"/image 'red dot.png' missing.png notes.png {other}")
    assert "image not found: missing.png" in message and "notes.png" in message
    assert [a.path for a in session.conversation.pending] == [str(good), str(other)]
    assert session.notices[-1] == "attached red dot.png, b.png (2 images for your next message)"
    session.run("/image")
    assert session.notices[-1] == "pending images: red dot.png, b.png"
    session.run("/image clear")
    assert session.conversation.pending == []
    session.run("/image")
    assert session.notices[-1].startswith("no images pending")


def test_image_expands_home_and_reports_bad_quotes(session, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _png(tmp_path / "cat.png")
    session.run("/image ~/cat.png")
    assert session.conversation.pending[0].path == str(tmp_path / "cat.png")
    assert _error(session, "/image 'cat.png") == "cannot read the arguments: no closing quotation"
    assert "folder" in _error(session, f"/image {tmp_path}")


# --- turns ----------------------------------------------------------------------------------


def test_undo_regenerate_edit_need_a_turn(session) -> None:
    assert _error(session, "/undo") == "nothing to undo"
    assert _error(session, "/regenerate") == "nothing to regenerate: send a message first"
    assert _error(session, "/edit") == "no message to edit yet"
    assert _error(session, "/copy") == "no answer to copy yet"


def test_commands_that_change_the_turns_wait_for_the_answer(session) -> None:
    _turn(session.conversation)
    session.generating = True
    for line in ("/undo", "/regenerate", "/edit", "/reset"):
        assert "while an answer is being generated" in _error(session, line)
    assert len(session.conversation.messages) == 2
    session.run("/set temperature 0")  # settings apply to the next answer: fine meanwhile


def test_undo_regenerate_and_edit(session, tmp_path) -> None:
    conv = session.conversation
    _turn(conv, "first", "one")
    conv.pending.append(Attachment.from_path(_png(tmp_path / "a.png")))
    _turn(conv, "second", "two")
    session.run("/regenerate")
    assert session.calls == [("regenerate",)]
    assert [m.text for m in conv.messages] == ["first", "one", "second"]
    session.run("/edit")
    assert session.input == "second"
    assert [m.text for m in conv.messages] == ["first", "one"]
    assert [a.label for a in conv.pending] == ["a.png"]  # its image comes back too
    session.run("/undo")
    assert conv.messages == []
    assert session.notices[-1] == "removed the last turn (2 messages)"


def test_reset_starts_a_new_conversation_and_keeps_the_settings(session) -> None:
    conv = session.conversation
    _turn(conv)
    conv.system, old_id, conv.path = "Be brief.", conv.id, Path("x.json")
    session.run("/set top_k 5")
    session.run("/reset")
    assert conv.messages == [] and conv.path is None and conv.id != old_id
    assert conv.system == "Be brief." and conv.settings.top_k == 5


def test_copy_sends_the_last_answer(session) -> None:
    _turn(session.conversation, answer="copy me")
    session.run("/copy")
    assert session.calls == [("copy", "copy me")]
    session.conversation.add_answer("x" * 200_000)
    assert "too long to copy" in _error(session, "/copy")


def test_osc52_sequence() -> None:
    sequence = osc52("héllo", env={"TERM": "xterm-256color"})
    assert sequence.startswith("\x1b]52;c;") and sequence.endswith("\x07")
    assert base64.b64decode(sequence[7:-1]).decode() == "héllo"
    assert osc52("x", env={"TERM": "screen"}).startswith("\x1bP\x1b]52;")
    assert osc52("x", env={"TERM": "screen", "TMUX": "1"}).startswith("\x1b]52;")
    with pytest.raises(ClipboardError):
        osc52("x" * 100_000, env={})


# --- files ----------------------------------------------------------------------------------


def test_save_load_round_trip_and_overwrite_rule(session, tmp_path) -> None:
    assert _error(session, "/save") == "nothing to save yet"
    _turn(session.conversation, "what is this?", "a dot")
    session.run("/save chat")
    assert session.notices[-1] == f"saved to {tmp_path / 'chat.json'}"
    session.run("/save chat.json")  # its own file: no question asked
    (tmp_path / "other.json").write_text("{}")
    message = _error(session, "/save other.json")
    assert message == "other.json exists; /save other.json --force overwrites it"
    session.run("/save other.json --force")
    assert session.conversation.path == tmp_path / "other.json"
    assert _error(session, "/save a b").startswith("/save takes one file name")
    assert _error(session, "/save x --bogus").startswith("unknown option --bogus")

    fresh = Recorder()
    fresh.run("/load other.json")
    (_, opened), = fresh.calls
    assert [m.text for m in opened.messages] == ["what is this?", "a dot"]
    assert fresh.notices[-1] == f"opened {tmp_path / 'other.json'} (2 messages)"
    assert "usage: /load FILE" in _error(fresh, "/load")
    assert "nope.json" in _error(fresh, "/load nope.json")


def test_save_without_a_name_uses_the_data_folder(session, tmp_path) -> None:
    _turn(session.conversation, "Name me")
    session.run("/save")
    path = session.conversation.path
    assert path.parent == tmp_path / "data" / "saved" and path.exists()
    session.run("/save")
    assert session.conversation.path == path


def test_load_reports_missing_images(session, tmp_path) -> None:
    conv = session.conversation
    conv.pending.append(Attachment.from_path(_png(tmp_path / "gone.png")))
    _turn(conv)
    session.run("/save keep.json")
    (tmp_path / "keep.images").rename(tmp_path / "moved")  # the transcript's image folder is gone
    session.run("/load keep.json")
    assert "1 image missing (shown, not sent)" in session.notices[-1]


def test_export_markdown(session, tmp_path) -> None:
    assert _error(session, "/export") == "usage: /export FILE.md [--force]"
    assert _error(session, "/export notes") == "nothing to export yet"
    _turn(session.conversation, "question", "**answer**")
    session.run("/export notes")
    assert "**answer**" in (tmp_path / "notes.md").read_text()
    assert "--force overwrites it" in _error(session, "/export notes.md")
    session.run("/export notes.md -f")


def test_resume_tells_apart_identical_titles_and_cuts_long_ones_at_a_word(session, tmp_path) -> None:
    """Same first question twice: the time and the first image's name tell them apart; a long title
    ends at a word with an ellipsis (issue 16)."""
    import time

    from dsvl_tui.storage.journal import Journal

    question = "Please describe everything you can see in this picture of our summer holiday"
    for name in ("beach.png", "mountain.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / name)
        conv = Conversation()
        conv.pending.append(Attachment.from_path(tmp_path / name))
        _turn(conv, question)
        conv.updated = time.time() - (3600 if name == "beach.png" else 0)
        assert Journal().record(conv) is None
    session.run("/resume")
    newer, older = session.choices
    assert newer.title == older.title == "Please describe everything you can see in this picture of…"
    assert newer.detail.endswith(", image mountain.png") and older.detail.endswith(", image beach.png")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(older.entry.updated))
    assert older.detail == f"2 messages, {stamp} (1 hour ago), image beach.png"


def test_resume_lists_and_opens_recent_conversations(session) -> None:
    from dsvl_tui.storage.journal import Journal

    session.run("/resume")
    assert session.notices[-1] == "no saved conversations yet"
    for title in ("older", "newer"):
        conv = Conversation()
        _turn(conv, title)
        assert Journal().record(conv) is None
    session.run("/resume")
    assert [c.title for c in session.choices] == ["newer", "older"]
    assert all(c.detail.startswith("2 messages, ") and c.detail.endswith(" (just now)") for c in session.choices)
    session.open_choice(session.choices[1])  # what the TUI's list does on Enter
    (_, opened), = session.calls
    assert opened.messages[0].text == "older" and session.notices[-1].startswith("resumed older")
    session.run("/resume 1")
    assert session.calls[-1][1].messages[0].text == "newer"
    assert _error(session, "/resume 9") == "no conversation 9; /resume lists 2"
    assert _error(session, "/resume x") == "usage: /resume [N]"


def test_new_close_and_stop_go_to_the_front_end() -> None:
    tui = Recorder("tui")
    tui.run("/new")
    tui.run("/close")
    assert "nothing is being generated" in _error(tui, "/stop")
    tui.generating = True
    tui.run("/stop")
    assert tui.calls == [("new_pane",), ("close_pane",), ("stop",)]


# --- the real send/answer path ----------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return engine.load(str(write_checkpoint(tmp_path_factory.mktemp("cmd") / "tiny", seed=5)))


def test_regenerate_and_undo_through_the_repl_session(backend) -> None:
    settings = GenerationSettings(temperature=0, max_new_tokens=6)
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(Options(model="tiny", settings=settings), engine_factory=lambda model, progress: backend,
                stdout=out, stderr=err, stdin=io.StringIO(""), colour=False)
    repl.run()  # loads the model, reads nothing
    repl.send("Describe the picture.")
    first = repl.conversation.messages[-1]
    assert first.role == "assistant" and first.stats.new_tokens == 6 and first.text
    registry.run(repl, "/regenerate")
    messages = repl.conversation.messages
    assert len(messages) == 2 and messages[-1] is not first
    assert messages[-1].text == first.text  # greedy: the same answer again
    assert out.getvalue().count(printable(first.text)) >= 2
    registry.run(repl, "/undo")
    assert repl.conversation.messages == []
    with pytest.raises(CommandError, match="did you mean /undo"):
        registry.run(repl, "/undoo")
