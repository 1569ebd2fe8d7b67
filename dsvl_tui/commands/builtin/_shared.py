"""What every command module needs: reading arguments, refusing while busy, counting nouns."""

from __future__ import annotations

import shlex

from dsvl_tui.commands.registry import CommandError
from dsvl_tui.commands.session import Session


def shell_words(args: str) -> list[str]:
    """Split arguments the way a shell does: quotes keep spaces in a path."""
    try:
        return shlex.split(args)
    except ValueError as exc:  # "No closing quotation"
        raise CommandError(f"cannot read the arguments: {str(exc).lower()}") from None


def split_flags(words: list[str], allowed: set[str], usage: str) -> tuple[list[str], set[str]]:
    flags = {w for w in words if w.startswith("-") and len(w) > 1}
    unknown = sorted(flags - allowed)
    if unknown:
        raise CommandError(f"unknown option {unknown[0]}; usage: {usage}")
    return [w for w in words if w not in flags], flags


def require_idle(session: Session, action: str) -> None:
    if session.is_generating():
        raise CommandError(f"cannot {action} while an answer is being generated; stop it first")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"

