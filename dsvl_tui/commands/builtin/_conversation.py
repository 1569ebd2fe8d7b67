"""Commands on the conversation in front of you: its images, turns, system prompt and settings."""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvl_tui.commands.builtin._shared import _plural, _require_idle, _words
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import Session
from dsvl_tui.options import user_settings

if TYPE_CHECKING:
    from dsvl_tui.conversation import Attachment

#: Settings ``/set`` changes, with how their values are read: the engine's (``options.user_settings``).
SETTING_TYPES: dict[str, type] = user_settings()


def setting_text(settings: Any, key: str) -> str:
    """``key=value`` as /set shows it (a seed of None is a random one)."""
    value = getattr(settings, key)
    return f"{key}={'random' if key == 'seed' and value is None else value}"


def settings_text(settings: Any) -> str:
    return "  ".join(setting_text(settings, key) for key in SETTING_TYPES)


def _parse_setting(key: str, text: str) -> Any:
    if key == "seed" and text.lower() in ("none", "random", "off"):
        return None
    kind = SETTING_TYPES[key]
    try:
        value = kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise CommandError(f"{key} must be {noun}, not {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise CommandError(f"{key} must be a finite number, not {text!r}")
    return value


# --- images -------------------------------------------------------------------


@registry.command("image", "Attach images to your next message", "/image PATH... | /image clear",
                  aliases=("img",), completes_paths=True)
def image(session: Session, args: str) -> None:
    """Each image is opened and decoded now, so a bad file is named at once; the good ones
    attach even when another fails. Quote paths with spaces. `/image` alone lists the images
    waiting for your next message; `/image clear` drops them."""
    conv = session.conversation
    words = _words(args)
    if not words:
        labels = ", ".join(a.label for a in conv.pending)
        session.info(f"pending images: {labels}" if labels else "no images pending; /image PATH attaches one")
        return
    if words == ["clear"]:
        count = len(conv.pending)
        conv.pending.clear()
        session.refresh()
        session.info(f"removed {_plural(count, 'pending image')}")
        return
    def check() -> tuple[list[Attachment], list[str]]:
        # Decoding a large picture (and the first import of the image code, which brings torch) takes
        # seconds: read_then keeps it off the TUI's event loop.
        from dsvl_tui.conversation import Attachment
        from engine.errors import EngineError
        from engine.images import load_image

        checked: list[Attachment] = []
        problems: list[str] = []
        for word in words:
            path = Path(word).expanduser()
            try:
                load_image(path)
                checked.append(Attachment.from_path(path))
            except EngineError as exc:
                problems.append(str(exc))
            except OSError as exc:
                problems.append(f"cannot read {path}: {exc.strerror or exc}")
        return checked, problems

    def attach(result: tuple[list[Attachment], list[str]]) -> None:
        checked, problems = result
        conv.pending.extend(checked)  # the conversation the command was typed in, even if the tab changed
        if checked:
            session.refresh()
            labels = ", ".join(a.label for a in checked)
            session.info(f"attached {labels} ({_plural(len(conv.pending), 'image')} for your next message)")
        if problems:
            raise CommandError("; ".join(problems))

    session.read_then(check, attach)


# --- turns and settings ---------------------------------------------------------


@registry.command("reset", "Start over: clear this conversation", "/reset", aliases=("clear",))
def reset(session: Session, args: str) -> None:
    """Clears the messages and pending images; the system prompt and settings stay. The
    cleared conversation stays in /resume: the new one is saved under a new name."""
    _require_idle(session, "reset")
    conv = session.conversation
    conv.reset()
    conv.id = uuid.uuid4().hex
    conv.title = ""
    conv.path = None
    conv.created = time.time()
    session.refresh()
    session.info("conversation cleared")


@registry.command("system", "Show or set the system prompt", "/system [TEXT | default]")
def system(session: Session, args: str) -> None:
    """`/system TEXT` sets it from the next answer on; `/system default` goes back to the
    model's own; `/system` alone shows it."""
    conv = session.conversation
    text = args.strip()
    if not text:
        session.info(f"system prompt: {conv.system}" if conv.system is not None else
                     "system prompt: the model's default")
        return
    conv.system = None if text == "default" else text
    session.refresh()
    session.info("system prompt: the model's default" if conv.system is None else
                 "system prompt set (from the next answer)")


@registry.command("set", "Show or change a generation setting", "/set [KEY [VALUE]]")
def set_setting(session: Session, args: str) -> None:
    """Keys: temperature (0 is greedy), top_p, top_k (0 is off), repetition_penalty,
    max_new_tokens, seed (random for a new one each answer). `/set` alone lists them; changes
    apply from the next answer, to this conversation (this tab) only; /new starts from them."""
    conv = session.conversation
    words = args.split()
    if not words:
        session.info(settings_text(conv.settings))
        return
    key = words[0].replace("-", "_").lower()
    if key not in SETTING_TYPES:
        close = difflib.get_close_matches(key, list(SETTING_TYPES), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(SETTING_TYPES)}"
        raise CommandError(f"unknown setting {words[0]}; {hint}")
    if len(words) == 1:
        session.info(setting_text(conv.settings, key))
        return
    if len(words) > 2:
        raise CommandError("usage: /set KEY VALUE")
    value = _parse_setting(key, words[1])
    try:
        conv.settings = dataclasses.replace(conv.settings, **{key: value})
    except ValueError as exc:  # GenerationSettings' own checks
        raise CommandError(str(exc)) from None
    session.refresh()
    scope = "this tab; new tabs start from it" if session.frontend == "tui" else "this conversation; /new starts from it"
    session.info(f"{setting_text(conv.settings, key)} (from the next answer, for {scope})")


@registry.command("regenerate", "Answer your last message again", "/regenerate", aliases=("retry",))
def regenerate(session: Session, args: str) -> None:
    """Drops the last answer and generates a new one (with the current settings)."""
    _require_idle(session, "regenerate")
    if not session.conversation.for_regenerate():
        raise CommandError("nothing to regenerate: send a message first")
    session.regenerate()


@registry.command("edit", "Put your last message back in the input", "/edit")
def edit(session: Session, args: str) -> None:
    """Removes your last message and its answer and puts the text (and its images) back, to
    change and send again."""
    _require_idle(session, "edit")
    conv = session.conversation
    if not any(m.role == "user" for m in conv.messages):
        raise CommandError("no message to edit yet")
    dropped = conv.undo()
    mine = dropped[0]
    conv.pending[:0] = mine.images
    session.set_input(mine.text)
    session.refresh()


@registry.command("undo", "Remove the last turn", "/undo")
def undo(session: Session, args: str) -> None:
    """Removes your last message and the answer to it."""
    _require_idle(session, "undo")
    conv = session.conversation
    if not conv.messages:
        raise CommandError("nothing to undo")
    dropped = conv.undo()
    session.refresh()
    session.info(f"removed the last turn ({_plural(len(dropped), 'message')})")


@registry.command("copy", "Copy the last answer to the clipboard", "/copy")
def copy(session: Session, args: str) -> None:
    """Copies through the terminal (OSC 52), which works over SSH; inside tmux it needs
    `set -g set-clipboard on`."""
    answer = session.conversation.last_answer()
    if answer is None or not answer.text:
        raise CommandError("no answer to copy yet")
    try:
        session.copy_text(answer.text)
    except ValueError as exc:  # clipboard.ClipboardError: too long for the terminal
        raise CommandError(str(exc)) from None
    session.info(f"copied the last answer ({_plural(len(answer.text), 'character')})")


@registry.command("stop", "Stop the answer being generated", "/stop", frontends=("tui",))
def stop(session: Session, args: str) -> None:
    """What was generated so far stays, marked as stopped."""
    if not session.is_generating():
        raise CommandError("nothing is being generated")
    session.stop_generation()

