"""Commands on the conversation in front of you: its images, turns, system prompt and settings."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvl_tui.commands.builtin._shared import plural, require_idle, shell_words
from dsvl_tui.commands.registry import CommandError, closest, registry
from dsvl_tui.commands.session import Session
from dsvl_tui.core.options import user_settings

if TYPE_CHECKING:
    from dsvl_tui.core.conversation import Attachment, Conversation

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
    words = shell_words(args)
    if not words:
        labels = ", ".join(a.label for a in conv.pending)
        session.info(f"pending images: {labels}" if labels else "no images pending; /image PATH attaches one")
        return
    if words == ["clear"]:
        count = len(conv.pending)
        conv.pending.clear()
        session.refresh()
        session.info(f"removed {plural(count, 'pending image')}")
        return
    paths = [Path(word).expanduser() for word in words]
    session.read_then(lambda: check_images(paths), lambda result: attach_checked(session, conv, result))


def check_images(paths: Sequence[Path]) -> tuple[list[Attachment], list[str]]:
    """What ``/image`` (and an upload in ``dsvl-chat web``) attaches: each picture opened and decoded now,
    so a bad one is named at once; the good ones, and one line per bad one. File work: call it through
    ``session.read_then``."""
    # Decoding a large picture takes seconds: read_then keeps it off the TUI's event loop.
    from dsvl_tui.core.conversation import Attachment
    from engine.errors import EngineError
    from engine.images import load_image

    checked: list[Attachment] = []
    problems: list[str] = []
    for path in paths:
        try:
            load_image(path)
            checked.append(Attachment.from_path(path))
        except EngineError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"cannot read {path}: {exc.strerror or exc}")
    return checked, problems


def attach_checked(session: Session, conv: Conversation, result: tuple[list[Attachment], list[str]]) -> None:
    """Attach what ``check_images`` passed to ``conv``'s next message and say so; its problems as one error."""
    checked, problems = result
    from dsvl_tui.web.client import fit_to_server

    checked, refused = fit_to_server(session, conv, checked)  # dsvl-chat web: what its model server can take
    problems = [*problems, refused] if refused else problems
    conv.pending.extend(checked)  # the conversation the command was typed in, even if the tab changed
    if checked:
        session.refresh()
        labels = ", ".join(a.label for a in checked)
        session.info(f"attached {labels} ({plural(len(conv.pending), 'image')} for your next message)")
    if problems:
        raise CommandError("; ".join(problems))


# --- turns and settings ---------------------------------------------------------


@registry.command("reset", "Start over: clear this conversation", "/reset", aliases=("clear",))
def reset(session: Session, args: str) -> None:
    """Clears the messages and pending images; the system prompt and settings stay. The
    cleared conversation stays in /resume: the new one is saved under a new name."""
    require_idle(session, "reset")
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
        session.info(f"system prompt: {conv.system}" if conv.system is not None else _default_system())
        return
    from dsvl_tui.core.conversation import text_problem

    problem = text_problem(text, "the system prompt")  # more than a transcript holds: it could not be read back
    if problem:
        raise CommandError(problem)
    conv.system = None if text == "default" else text
    session.refresh()
    session.info(_default_system() if conv.system is None else "system prompt set (from the next answer)")


def _default_system() -> str:
    """What a conversation without a system prompt of its own uses, shortened."""
    from dsvl_tui.core.text import shorten
    from engine.prompt import DEFAULT_SYSTEM_PROMPT

    return f'system prompt: the model\'s default, "{shorten(DEFAULT_SYSTEM_PROMPT, 90)}" (base models use none)'


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
        close = closest(key, SETTING_TYPES)
        hint = f"did you mean {close}?" if close else f"one of {', '.join(SETTING_TYPES)}"
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
    scope = ("this tab; new tabs start from it" if session.frontend == "tui"
             else "this conversation; /new starts from it")
    session.info(f"{setting_text(conv.settings, key)} (from the next answer, for {scope})")


@registry.command("regenerate", "Answer your last message again", "/regenerate", aliases=("retry",))
def regenerate(session: Session, args: str) -> None:
    """Generates a new answer (with the current settings); the one it replaces is kept as a
    branch (/branch lists them; an answer that failed without a word is dropped)."""
    from dsvl_tui.core.conversation import LimitError

    require_idle(session, "regenerate")
    try:
        ready = session.conversation.for_regenerate()
    except LimitError as exc:
        raise CommandError(str(exc)) from None
    if not ready:
        raise CommandError("nothing to regenerate: send a message first")
    session.regenerate()


@registry.command("edit", "Put one of your messages back in the input", "/edit [N]")
def edit(session: Session, args: str) -> None:
    """Puts your last message (`/edit N`: your N-th, 1 = the first, -1 = the last) back in the
    input with its images, to change and send again. What followed it is kept as a branch:
    /branch lists the branches and switches back."""
    from dsvl_tui.core.branches import detach

    require_idle(session, "edit")
    conv = session.conversation
    words = shell_words(args)
    if len(words) > 1:
        raise CommandError("usage: /edit [N]")
    mine = [index for index, message in enumerate(conv.messages) if message.role == "user"]
    if not mine:
        raise CommandError("no message to edit yet")
    index = mine[_pick(len(mine), words[0], "message", "/edit") if words else -1]
    message = detach(conv, index)[0]
    conv.touch()
    conv.pending[:0] = message.images
    session.set_input(message.text)
    session.refresh()
    session.info(f"editing your message {mine.index(index) + 1} of {len(mine)}: send it to start a new branch; the "
                 "old version stays as a branch (/branch lists them)")


@registry.command("undo", "Remove the last turn", "/undo")
def undo(session: Session, args: str) -> None:
    """Removes your last message and the answer to it (not kept as a branch, nor what
    branched from them: /edit keeps the old version)."""
    require_idle(session, "undo")
    conv = session.conversation
    if not conv.messages:
        raise CommandError("nothing to undo")
    dropped = conv.undo()
    session.refresh()
    session.info(f"removed the last turn ({plural(len(dropped), 'message')})")


def _pick(count: int, word: str, what: str, usage: str) -> int:
    """The index that ``word`` (1 = the first, -1 = the last) names among ``count`` things."""
    try:
        number = int(word)
    except ValueError:
        raise CommandError(f"{usage} takes a number (1 = the first, -1 = the last), not {word!r}") from None
    if number == 0 or abs(number) > count:
        raise CommandError(f"no {what} {number}: there {'is' if count == 1 else 'are'} {count} "
                           f"({usage} 1 to {count}, or -1 for the last)")
    return number - 1 if number > 0 else count + number


@registry.command("copy", "Copy an answer, or a code block of the last one, to the clipboard",
                  "/copy [N | code [N]]")
def copy(session: Session, args: str) -> None:
    """`/copy` copies the last answer, `/copy N` the N-th answer of this conversation (1 = the
    first; -1 = the last, -2 the one before). `/copy code` copies the last code block of the last
    answer, `/copy code N` its N-th (numbered the same way). In the full-screen app you can also
    drag over an answer to select text and press Ctrl+C, or click on a code block to copy it.
    Copies go through the terminal (OSC 52), which works over SSH; inside tmux, through tmux."""
    from dsvl_tui.markdown.render import code_blocks

    words = shell_words(args)
    answers = [m for m in session.conversation.messages if m.role == "assistant"]
    if not answers or not any(m.text for m in answers):
        raise CommandError("no answer to copy yet")
    if words[:1] == ["code"] and len(words) <= 2:
        blocks = code_blocks(answers[-1].text)
        if not blocks:
            raise CommandError("the last answer has no code block; /copy copies all of it")
        index = _pick(len(blocks), words[1], "code block", "/copy code") if len(words) == 2 else len(blocks) - 1
        text = blocks[index]
        done = f"code block {index + 1} of {len(blocks)} ({plural(len(text.splitlines()) or 1, 'line')})"
    elif len(words) <= 1:
        index = _pick(len(answers), words[0], "answer", "/copy") if words else len(answers) - 1
        text = answers[index].text
        if not text:
            raise CommandError(f"answer {index + 1} is empty; nothing to copy")
        which = "the last answer" if index == len(answers) - 1 else f"answer {index + 1} of {len(answers)}"
        done = f"{which} ({plural(len(text), 'character')})"
    else:
        raise CommandError("usage: /copy [N | code [N]]")
    try:
        session.copy_text(text)
    except ValueError as exc:  # clipboard.ClipboardError: too long for the terminal, or tmux lets nothing through
        raise CommandError(str(exc)) from None
    session.info(f"copied {done}")


@registry.command("stop", "Stop the answer being generated", "/stop", frontends=("tui",))
def stop(session: Session, args: str) -> None:
    """What was generated so far stays, marked as stopped."""
    if not session.is_generating():
        raise CommandError("nothing is being generated")
    session.stop_generation()

