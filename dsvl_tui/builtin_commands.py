"""The built-in slash commands, written once against ``Session`` for every front end.

Importing this module fills ``commands.registry``; the Textual app, its
command palette and the plain REPL all run these very handlers, so a command
behaves (and fails) the same everywhere. A handler parses its own arguments
and raises ``CommandError`` with one line for the user when they are wrong;
what it reports goes through ``session.info``. A handler's docstring is its
``/help COMMAND`` text.

Lists (``/help``, ``/set``, ``/resume``) go out as one multi-line
``session.info`` call, so a front end shows them together.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import shlex
import time
import uuid
from pathlib import Path
from typing import Any

from .commands import CommandError, registry
from .completion import IMAGE_SUFFIXES
from .session import Session

#: Settings ``/set`` changes, with how their values are read.
SETTING_TYPES: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "repetition_penalty": float,
    "max_new_tokens": int,
    "seed": int,
}
#: The file suffixes a command's path arguments complete to; folders always do, and an
#: empty set means folders only. Commands not listed complete to any file.
PATH_SUFFIXES: dict[str, frozenset[str]] = {
    "image": IMAGE_SUFFIXES,
    "load": frozenset({".json"}),
    "save": frozenset({".json"}),
    "export": frozenset({".md", ".markdown"}),
    "model": frozenset(),  # a checkpoint folder
}
RESUME_LIMIT = 20


# --- helpers ------------------------------------------------------------------


def _words(args: str) -> list[str]:
    """Split arguments the way a shell does: quotes keep spaces in a path."""
    try:
        return shlex.split(args)
    except ValueError as exc:  # "No closing quotation"
        raise CommandError(f"cannot read the arguments: {str(exc).lower()}") from None


def _quoted(path: Path | str) -> str:
    return shlex.quote(str(path))


def _require_idle(session: Session, action: str) -> None:
    if session.is_generating():
        raise CommandError(f"cannot {action} while an answer is being generated; stop it first")


def _transcripts() -> Any:
    try:
        from . import transcript
    except ImportError as exc:  # the module ships with the transcripts issue
        raise CommandError(f"transcripts are not available in this build ({exc})") from None
    return transcript


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _split_flags(words: list[str], allowed: set[str], usage: str) -> tuple[list[str], set[str]]:
    flags = {w for w in words if w.startswith("-") and len(w) > 1}
    unknown = sorted(flags - allowed)
    if unknown:
        raise CommandError(f"unknown option {unknown[0]}; usage: {usage}")
    return [w for w in words if w not in flags], flags


def _target(word: str, suffix: str) -> Path:
    path = Path(word).expanduser()
    return path if path.suffix else path.with_suffix(suffix)


def _refuse_overwrite(target: Path, command: str, flags: set[str]) -> None:
    if target.exists() and not flags & {"--force", "-f"}:
        raise CommandError(f"{target} exists; /{command} {_quoted(target)} --force overwrites it")


def _ago(epoch: float, now: float | None = None) -> str:
    seconds = max(0.0, (now or time.time()) - epoch)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return f"{_plural(int(seconds // size), unit)} ago"
    return "just now"


def argument_choices(command: str, frontend: str) -> list[str]:
    """Words the first argument of ``/command`` can be, for completion; ``[]`` when it is free."""
    if command == "set":
        return list(SETTING_TYPES)
    if command == "help":
        return [c.name for c in registry.commands(frontend)]
    return {"image": ["clear"], "system": ["default"]}.get(command, [])


def settings_text(settings: Any) -> str:
    return "  ".join(f"{key}={getattr(settings, key)}" for key in SETTING_TYPES)


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
    from engine.errors import EngineError
    from engine.images import load_image

    from .conversation import Attachment

    attached: list[str] = []
    problems: list[str] = []
    for word in words:
        path = Path(word).expanduser()
        try:
            load_image(path)
            attachment = Attachment.from_path(path)
        except EngineError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"cannot read {path}: {exc.strerror or exc}")
        else:
            conv.pending.append(attachment)
            attached.append(attachment.label)
    if attached:
        session.refresh()
        session.info(f"attached {', '.join(attached)} ({_plural(len(conv.pending), 'image')} for your next message)")
    if problems:
        raise CommandError("; ".join(problems))


# --- files --------------------------------------------------------------------


@registry.command("save", "Save the conversation as a transcript", "/save [FILE] [--force] [--embed]",
                  completes_paths=True)
def save(session: Session, args: str) -> None:
    """Without FILE: the file the conversation came from or was last saved to, else a new file
    in the app's data folder. An existing other file is only replaced with --force. --embed
    stores the images inside the transcript, so it travels on its own."""
    usage = "/save [FILE] [--force] [--embed]"
    files, flags = _split_flags(_words(args), {"--force", "-f", "--embed"}, usage)
    if len(files) > 1:
        raise CommandError(f"/save takes one file name (quote names with spaces); usage: {usage}")
    conv = session.conversation
    if not conv.messages:
        raise CommandError("nothing to save yet")
    transcript = _transcripts()
    if files:
        target = _target(files[0], ".json")
        if transcript.would_overwrite(conv, target):
            _refuse_overwrite(target, "save", flags)
    else:
        target = conv.path or transcript.default_save_path(conv)
    try:
        saved = transcript.save_transcript(conv, target, embed_images="--embed" in flags)
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot save {target}: {exc.strerror or exc}") from None
    session.refresh()
    session.info(f"saved to {saved}")


@registry.command("load", "Open a saved transcript", "/load FILE", completes_paths=True)
def load(session: Session, args: str) -> None:
    """Opens a transcript saved by /save (or upstream DeepSeek-VL's conversation list). Images
    the transcript names but that are gone are shown as missing and not sent to the model."""
    words = _words(args)
    if len(words) != 1:
        raise CommandError("usage: /load FILE (quote names with spaces)")
    transcript = _transcripts()
    path = Path(words[0]).expanduser()
    try:
        conv = transcript.load_transcript(path)
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    _open(session, transcript, conv, f"opened {conv.path or path}")


def _open(session: Session, transcript: Any, conv: Any, what: str) -> None:
    session.open_conversation(conv)
    missing = transcript.missing_images(conv)
    note = f"; {_plural(missing, 'image')} missing (shown, not sent)" if missing else ""
    session.info(f"{what} ({_plural(len(conv.messages), 'message')}{note})")


@registry.command("export", "Write the conversation as Markdown", "/export FILE.md [--force]",
                  completes_paths=True)
def export(session: Session, args: str) -> None:
    """Writes a readable Markdown copy (it cannot be loaded back; /save for that). An
    existing file is only replaced with --force."""
    usage = "/export FILE.md [--force]"
    files, flags = _split_flags(_words(args), {"--force", "-f"}, usage)
    if len(files) != 1:
        raise CommandError(f"usage: {usage}")
    conv = session.conversation
    if not conv.messages:
        raise CommandError("nothing to export yet")
    transcript = _transcripts()
    target = _target(files[0], ".md")
    _refuse_overwrite(target, "export", flags)
    try:
        written = transcript.export_markdown(conv, target)
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    session.info(f"exported to {written}")


@registry.command("resume", "List recent conversations, or open one", "/resume [N]")
def resume(session: Session, args: str) -> None:
    """Every conversation is saved as you go; `/resume` lists the most recent ones and
    `/resume N` opens number N."""
    words = args.split()
    if len(words) > 1 or (words and not words[0].isdigit()):
        raise CommandError("usage: /resume [N]")
    transcript = _transcripts()
    journal = transcript.Journal()
    entries = journal.recent(RESUME_LIMIT)
    if not words:
        if not entries:
            session.info("no saved conversations yet")
            return
        now = time.time()
        lines = ["recent conversations (/resume N opens one):"]
        for number, entry in enumerate(entries, 1):
            title = entry.title or "untitled"
            lines.append(f"{number:>3}. {title} ({_plural(entry.message_count, 'message')}, {_ago(entry.updated, now)})")
        session.info("\n".join(lines))
        return
    number = int(words[0])
    if not 1 <= number <= len(entries):
        raise CommandError(f"no conversation {number}; /resume lists {len(entries)}")
    entry = entries[number - 1]
    try:
        conv = journal.open(entry)
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read {entry.path}: {exc.strerror or exc}") from None
    _open(session, transcript, conv, f"resumed {entry.title or 'untitled'}")


# --- the conversation -----------------------------------------------------------


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


@registry.command("new", "Start a new conversation", "/new")
def new(session: Session, args: str) -> None:
    """The TUI opens it in a new pane; the REPL switches to it (the current one stays in
    /resume)."""
    session.new_pane()


@registry.command("close", "Close this pane", "/close", frontends=("tui",))
def close(session: Session, args: str) -> None:
    """The conversation stays in /resume."""
    session.close_pane()


def _switch(session: Session, offset: int) -> None:
    switch = getattr(session, "switch_pane", None)
    if switch is None:
        raise CommandError("this front end has a single pane")
    switch(offset)


@registry.command("next", "Go to the next pane", "/next", frontends=("tui",))
def next_pane(session: Session, args: str) -> None:
    _switch(session, 1)


@registry.command("prev", "Go to the previous pane", "/prev", frontends=("tui",))
def prev_pane(session: Session, args: str) -> None:
    _switch(session, -1)


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
    max_new_tokens, seed (none for random). `/set` alone lists them; changes apply from the
    next answer."""
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
        session.info(f"{key}={getattr(conv.settings, key)}")
        return
    if len(words) > 2:
        raise CommandError("usage: /set KEY VALUE")
    value = _parse_setting(key, words[1])
    try:
        conv.settings = dataclasses.replace(conv.settings, **{key: value})
    except ValueError as exc:  # GenerationSettings' own checks
        raise CommandError(str(exc)) from None
    session.refresh()
    session.info(f"{key}={value} (from the next answer)")


@registry.command("model", "Show the model, or load another", "/model [ID | PATH]", completes_paths=True)
def model(session: Session, args: str) -> None:
    """ID is a Hugging Face Hub id (deepseek-ai/deepseek-vl-7b-chat), PATH a local checkpoint
    folder. It loads in the background; the current model answers until it is ready."""
    words = _words(args)
    if not words:
        session.info(f"model: {session.conversation.model or 'none loaded'}")
        return
    if len(words) > 1:
        raise CommandError("usage: /model ID | PATH")
    target = words[0]
    session.change_model(str(Path(target).expanduser()) if target.startswith("~") else target)


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


# --- the app ------------------------------------------------------------------------


@registry.command("theme", "Switch the colour theme", "/theme NAME", frontends=("tui",))
def theme(session: Session, args: str) -> None:
    """The choice is remembered for the next start."""
    name = args.strip()
    if not name:
        raise CommandError("usage: /theme NAME")
    try:
        session.set_theme(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


@registry.command("help", "List the commands, or explain one", "/help [COMMAND]", aliases=("?",))
def help_command(session: Session, args: str) -> None:
    """`/help COMMAND` shows what a command does; a message that starts with a slash can be
    sent by doubling it (`//etc/hosts is...`)."""
    name = args.strip()
    if name:
        cmd, _ = registry.parse("/" + name.lstrip("/"), session.frontend)
        aliases = f" (also {', '.join('/' + a for a in cmd.aliases)})" if cmd.aliases else ""
        lines = [f"{cmd.usage}: {cmd.summary}{aliases}"]
        if cmd.handler.__doc__:
            lines.append(" ".join(cmd.handler.__doc__.split()))
        session.info("\n".join(lines))
        return
    commands = registry.commands(session.frontend)
    width = min(max(len(c.usage) for c in commands), 34)
    lines = [f"{c.usage:<{width}}  {c.summary}" for c in commands]
    keys = getattr(session, "key_help", "")
    if keys:
        lines += ["", *keys.splitlines()]
    session.info("\n".join(lines))


@registry.command("quit", "Leave the app", "/quit", aliases=("exit",))
def quit_command(session: Session, args: str) -> None:
    """Conversations are saved as you go (/resume brings them back)."""
    session.quit()
