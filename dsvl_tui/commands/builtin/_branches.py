"""/branch: list the conversation's branches (what /edit and /regenerate kept), switch, step through siblings."""

from __future__ import annotations

from dsvl_tui.commands.builtin._shared import plural, require_idle, shell_words
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import Session
from dsvl_tui.core import branches
from dsvl_tui.core.text import shorten

#: The keys that step through the siblings in the full-screen app (``MainScreen``'s bindings).
STEP_KEYS = "Alt+Up / Alt+Down"
_SHOWN = 50  # characters of a message's text a line of the list shows


def _quote(text: str) -> str:
    return f'"{shorten(" ".join(text.split()), _SHOWN) or "(pictures only)"}"'


def branch_lines(found: list[branches.Branch]) -> list[str]:
    """One line per branch: its number, its length, and where it leaves the current path (or that it is it)."""
    lines = []
    for branch in found:
        size = plural(branch.length, "message")
        if branch.parted is None:
            lines.append(f"* {branch.number}. {size} (this one)")
        else:
            lines.append(f"  {branch.number}. {size}, from message {branch.shared + 1}: {_quote(branch.parted.text)}")
    return lines


@registry.command("branch", "List this conversation's branches, or switch to one", "/branch [N | next | prev]")
def branch(session: Session, args: str) -> None:
    """/edit and /regenerate keep what they replace as a branch. `/branch` lists the branches
    (* marks the one shown), `/branch N` switches to number N. `/branch next` and `/branch prev`
    step through the versions of one message (its siblings: a regenerated answer, an edited
    message): the last one made or stepped, else the last message with versions. In the
    full-screen app a message with versions shows "‹ 2/3 ›" in its header (a click on ‹ or ›
    steps it), and Alt+Up / Alt+Down step. Below the message switched to, the branch written
    last is shown. Saved transcripts and autosave keep every branch; /export writes the one shown."""
    conv = session.conversation
    words = shell_words(args)
    if not words:
        found = branches.branches(conv)
        if len(found) < 2 and not conv.alternatives:
            session.info("this conversation has one branch: /edit N and /regenerate keep what they replace as another")
            return
        keys = f"{STEP_KEYS} or " if session.frontend == "tui" else ""
        head = f"branches (/branch N switches; {keys}/branch next|prev step through a message's versions):"
        tail = [] if any(b.current for b in found) else [
            f"(this path ends at message {len(conv.messages)}, where branches part: the next message starts one)"]
        session.info("\n".join([head, *branch_lines(found), *tail]))
        return
    if len(words) > 1:
        raise CommandError("usage: /branch [N | next | prev]")
    require_idle(session, "switch branches")
    word = words[0].lower()
    if word in ("next", "prev", "previous"):
        stepped = branches.step(conv, 1 if word == "next" else -1)
        if stepped is None:
            raise CommandError("no message here has another version: /edit N and /regenerate make them")
        session.refresh()
        if session.frontend != "tui":  # the app shows "k/n" on the message itself
            session.info(f"version {stepped[0]} of {stepped[1]}; {_where(session)}")
        return
    found = branches.branches(conv)
    try:
        number = int(word)
    except ValueError:
        raise CommandError(f"/branch takes a number, next or prev, not {words[0]!r}") from None
    if not 1 <= number <= len(found):
        raise CommandError(f"no branch {number}: there {'is' if len(found) == 1 else 'are'} {len(found)} "
                           "(/branch lists them)")
    branches.switch_to(conv, number)
    session.refresh()
    session.info(f"branch {number} of {len(found)}; {_where(session)}")


def _where(session: Session) -> str:
    """What the current path is now, in a few words."""
    messages = session.conversation.messages
    if not messages:
        return "no messages on it"
    return f"{plural(len(messages), 'message')}, the last: {_quote(messages[-1].text)}"
