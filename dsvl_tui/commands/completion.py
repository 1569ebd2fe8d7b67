"""Completion for the input box: slash commands, and file paths after ``/image``.

Pure functions over a line of text (no Textual), so they are easy to test
and any front end can use them. Paths may be quoted (``'my photo.png'``)
or have backslash-escaped spaces, the way terminals paste a dropped file.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dsvl_tui.commands.registry import CommandRegistry
from dsvl_tui.core.text import printable

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass
class Completion:
    """What to offer for a line: ``suggestion`` continues it; ``line`` replaces it on Tab."""

    suggestion: str = ""  # text to show after the cursor (and insert on Right/Tab)
    line: str | None = None  # the whole line after Tab (may quote a path); None: nothing to do
    candidates: list[str] = field(default_factory=list)  # for a hint: names or usages
    hint: str = ""  # one line describing the candidates
    choices: list[str] = field(default_factory=list)  # the whole line for each candidate: what Tab cycles through


def _scan(args: str) -> tuple[int, str]:
    """(where the last word starts, the quote left open at the end); quotes and backslashes keep spaces."""
    quote, start, index = "", 0, 0
    while index < len(args):
        char = args[index]
        if quote:
            quote = "" if char == quote else quote
        elif char == "\\":
            index += 1
        elif char in "'\"":
            quote = char
        elif char.isspace():
            start = index + 1
        index += 1
    return start, quote


def word_start(args: str) -> int:
    """Where the word under the cursor (at the end of ``args``) starts."""
    return _scan(args)[0]


def _split_last_word(args: str) -> tuple[str, str, str]:
    """Split ``args`` into (before, quote, partial) where ``partial`` is the unquoted last word."""
    start, quote = _scan(args)
    raw = args[start:]
    try:
        words = shlex.split(raw + quote) if raw else []
    except ValueError:
        words = [raw]
    partial = words[0] if words else ""
    opening = raw[0] if raw[:1] in ("'", '"') else ""
    return args[:start], opening, partial


def quote_path(path: str, opening: str, *, final: bool = False) -> str:
    """``path`` as typed on the line: in the quote the user opened (closed once ``final``), else quoted
    if it needs it; a path still being completed (a folder, a common prefix) keeps its quote open."""
    if opening:
        return f"{opening}{path}{opening if final else ''}"
    if not path or shlex.quote(path) == path:
        return path
    return shlex.quote(path) if final or "'" in path else f"'{path}"


def path_matches(partial: str, suffixes: frozenset[str] | None = IMAGE_SUFFIXES) -> list[str]:
    """Entries matching ``partial`` (a path prefix): folders (with a trailing slash), and files
    whose suffix is in ``suffixes`` (any file when it is None). A name that ``printable`` would
    change (control characters, bytes that are not UTF-8) is never offered: it could not be shown
    as it is, and the line it would complete to could not be sent as typed."""
    expanded = os.path.expanduser(partial)
    folder, stem = os.path.split(expanded)
    try:
        entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(stem) or (entry.name.startswith(".") and not stem.startswith(".")):
            continue
        if printable(entry.name) != entry.name:
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if not is_dir and suffixes is not None and Path(entry.name).suffix.lower() not in suffixes:
            continue
        shown = os.path.join(os.path.split(partial)[0], entry.name)
        out.append(shown + ("/" if is_dir else ""))
    return out


def _command_names(line: str, registry: CommandRegistry, frontend: str) -> Completion:
    names = registry.completions(line, frontend)
    if not names:
        return Completion(hint="no such command; /help lists them")
    if len(names) == 1:
        cmd = registry.get(names[0])
        hint = f"{cmd.usage}  \u2014 {cmd.summary}" if cmd else ""
        return Completion(names[0][len(line):], names[0] + " ", names, hint)
    common = os.path.commonprefix(names)
    return Completion(common[len(line):], common if len(common) > len(line) else None, names, "  ".join(names),
                      [name + " " for name in names])


def _words_of(head: str, partial: str, words: list[str]) -> Completion:
    matches = [w for w in words if w.startswith(partial)]
    if not matches:
        return Completion()
    common = os.path.commonprefix(matches)
    new_line = head + (matches[0] + " " if len(matches) == 1 else common)
    return Completion(common[len(partial):], new_line if new_line != head + partial else None, matches,
                      "  ".join(matches[:12]), [head + match + " " for match in matches])


def complete(line: str, registry: CommandRegistry, frontend: str = "tui", *,
             choices: Callable[[str], list[str]] | None = None,
             suffixes: Mapping[str, frozenset[str] | None] | None = None) -> Completion:
    """Completion for ``line`` with the cursor at its end.

    ``choices(name)`` gives the words the first argument of ``/name`` can be;
    ``suffixes[name]`` the file suffixes its path arguments complete to (None:
    any file; the default: images).
    """
    if not line.startswith("/") or "\n" in line:
        return Completion()
    name, space, args = line[1:].partition(" ")
    if not space:
        return _command_names(line, registry, frontend)
    cmd = registry.get(name)
    if cmd is None:
        return Completion()
    usage = Completion(hint=f"{cmd.usage}  \u2014 {cmd.summary}")
    before, opening, partial = _split_last_word(args)
    head = f"/{name} {before}"
    words = choices(cmd.name) if choices is not None and not before.strip() and not opening else []
    offered = _words_of(head, partial, words) if words else Completion()
    if offered.candidates and (partial or not cmd.completes_paths):
        return offered
    if not cmd.completes_paths:
        return usage
    if not partial and not opening and before.strip():
        return usage  # a path was just completed (and closed): say what else the command takes, not the folder
    matches = path_matches(partial, (suffixes or {}).get(cmd.name, IMAGE_SUFFIXES))
    if not matches:
        return usage
    common = os.path.commonprefix(matches)
    suggestion = common[len(partial):] if common.startswith(partial) else ""
    if len(matches) == 1 and not matches[0].endswith("/"):
        new_line = head + quote_path(matches[0], opening, final=True) + " "
    else:
        new_line = head + quote_path(common, opening)
    names = [m.rstrip("/").rsplit("/", 1)[-1] + ("/" if m.endswith("/") else "") for m in matches]
    hint = "  ".join(names[:8]) + (f"  (+{len(names) - 8})" if len(names) > 8 else "")
    whole_lines = [head + (quote_path(m, opening) if m.endswith("/") else quote_path(m, opening, final=True) + " ")
                   for m in matches]
    return Completion(suggestion, new_line if new_line != line else None, matches, hint, whole_lines)


def dropped_paths(text: str) -> list[Path]:
    """The image files named by pasted text (a dropped file), or ``[]`` if it is not just that.

    Accepts one or more paths, quoted or with escaped spaces, ``file://`` URLs,
    and a single unquoted path that contains spaces.
    """
    text = text.strip()
    if not text:
        return []
    if "\n" not in text:
        whole = _as_path(text)
        if whole is not None and _is_image(whole):
            return [whole]
    paths = [_as_path(word) for word in _words(text)]
    if paths and all(p is not None and _is_image(p) for p in paths):
        return paths  # type: ignore[return-value]
    return []


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return []


def _as_path(word: str) -> Path | None:
    if word.startswith("file://"):
        from urllib.parse import unquote, urlparse

        word = unquote(urlparse(word).path)
    if not word or len(word) > 4096:
        return None
    return Path(word).expanduser()


def _is_image(path) -> bool:
    path = path if isinstance(path, Path) else _as_path(path)
    try:
        return path is not None and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    except OSError:
        return False
