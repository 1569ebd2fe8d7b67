"""What the commands say about themselves: the README's usages, /help's list per front end, and
"did you mean" (issue 26, item 10)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsvl_tui.commands import builtin as builtin_commands  # noqa: F401 - fills the registry
from dsvl_tui.commands.registry import CommandError, closest, registry
from dsvl_tui.commands.session import HelpSection

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
# A backticked command with arguments written as a usage: an optional part, choices or a repeat.
USAGE_LIKE = re.compile(r"`(/([a-z]+) [^`]*(?:\[|\||\.\.\.)[^`]*)`")


def test_every_command_usage_is_in_the_readme_as_the_app_says_it() -> None:
    """The README said `/export FILE.md` where the app says `/export FILE.md [--force]`."""
    missing = [c.usage for c in registry.commands() if f"`{c.usage}`" not in README]
    assert not missing, missing


def test_no_usage_in_the_readme_differs_from_the_apps() -> None:
    wrong = []
    for written, name in USAGE_LIKE.findall(README):
        command = registry.get(name)
        if command is not None and written != command.usage:
            wrong.append((written, command.usage))
    assert not wrong, wrong


class Help:
    """A front end's session as far as /help needs one."""

    def __init__(self, frontend: str) -> None:
        self.frontend = frontend
        self.sections: list[HelpSection] = []
        self.notices: list[str] = []

    def show_help(self, sections: list[HelpSection]) -> None:
        self.sections = sections

    def info(self, message: str) -> None:
        self.notices.append(message)


def _listed(frontend: str) -> list[str]:
    session = Help(frontend)
    registry.run(session, "/help")  # type: ignore[arg-type]
    return [usage.split()[0] for section in session.sections for usage, _ in section.rows]


def test_the_repl_help_leaves_out_the_browsers_upload() -> None:
    assert "/upload" not in _listed("repl")
    assert "/upload" in _listed("tui")  # the app, which dsvl-chat web serves
    with pytest.raises(CommandError, match="not available here"):
        registry.parse("/upload", "repl")
    assert "/upload" not in registry.completions("/up", "repl")


@pytest.mark.parametrize("typed", ["frobnicate", "xyz", "cp", "re"])
def test_no_suggestion_for_a_word_like_no_command(typed: str) -> None:
    """/frobnicate suggested /regenerate: at difflib's 0.5 their few letters in order were enough."""
    with pytest.raises(CommandError) as caught:
        registry.parse(f"/{typed}", "repl")
    assert str(caught.value) == f"unknown command /{typed}; type /help for the list"


@pytest.mark.parametrize(("typed", "meant"), [
    ("sav", "save"), ("hlep", "help"), ("regenrate", "regenerate"), ("regen", "regenerate"), ("rest", "reset"),
    ("imgae", "image"), ("modle", "model"), ("quti", "quit"), ("exprot", "export"),
])
def test_a_slip_still_gets_the_command(typed: str, meant: str) -> None:
    with pytest.raises(CommandError) as caught:
        registry.parse(f"/{typed}", "repl")
    assert str(caught.value) == f"unknown command /{typed}; did you mean /{meant}?"


def test_settings_use_the_same_rule() -> None:
    assert closest("temprature", ["temperature", "top_p"]) == "temperature"
    assert closest("frobnicate", ["temperature", "top_p", "top_k", "repetition_penalty", "seed"]) is None
