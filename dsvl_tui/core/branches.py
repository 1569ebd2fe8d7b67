"""Branches: the messages /edit and /regenerate set aside, and switching between them.

A conversation is a tree of messages. ``Conversation.messages`` is the current path through it (root to
leaf): every other part of the app (the panes, the engine, exports, the search index) sees only that list.
``Conversation.alternatives`` holds the rest: each message off the path under the id of the message it
follows (``ROOT`` for a first message). A message's siblings are the messages that follow the same one;
they are ordered by when they were made, so the first is the original and a new one is last.

A branch is a path from the root to a leaf; ``/branch`` numbers them depth first, siblings in order.
Switching to a message (a sibling, a branch) makes the path through it current and, below it, follows the
child whose part of the tree was written last: where the user left that branch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: conversation imports this module where a branch is made
    from dsvl_tui.core.conversation import ChatMessage, Conversation

ROOT = ""  # the id a conversation's first messages follow


def parent_of(conv: Conversation, index: int) -> str:
    """The id of the message that message ``index`` of the current path follows."""
    return conv.messages[index - 1].id if index else ROOT


def _order(message: ChatMessage) -> tuple[float, str]:
    return message.created, message.id


def all_messages(conv: Conversation) -> Iterator[ChatMessage]:
    """Every message the conversation holds: the current path, then its branches."""
    yield from conv.messages
    for kept in conv.alternatives.values():
        yield from kept


def position(conv: Conversation, index: int) -> tuple[int, int]:
    """(k, n): message ``index`` of the current path is sibling k of n (1, 1 when it has none)."""
    kept = conv.alternatives.get(parent_of(conv, index))
    if not kept:
        return 1, 1
    message = conv.messages[index]
    siblings = sorted([message, *kept], key=_order)
    return siblings.index(message) + 1, len(siblings)


def next_position(conv: Conversation) -> tuple[int, int]:
    """(k, n) for a message added to the current path now (an answer being generated): the last sibling."""
    count = len(conv.alternatives.get(parent_of(conv, len(conv.messages)), ())) + 1
    return count, count


def detach(conv: Conversation, index: int) -> list[ChatMessage]:
    """Set ``messages[index:]`` aside as a branch (the current path ends before it); returns the messages.

    What is added to the path next is a sibling of the first of them, and the branch keys step there."""
    moved = conv.messages[index:]
    for at, message in enumerate(moved, index):
        conv.alternatives.setdefault(parent_of(conv, at), []).append(message)
    del conv.messages[index:]
    conv.branch_focus = parent_of(conv, index)
    return moved


class Tree:
    """The conversation's messages as a tree, to find paths in (made for one command; not kept)."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.by_id: dict[str, ChatMessage] = {}
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[ChatMessage]] = {}
        for index, message in enumerate(conv.messages):
            self._add(message, parent_of(conv, index))
        for parent, kept in conv.alternatives.items():
            for message in kept:
                self._add(message, parent)
        for kids in self.children.values():
            kids.sort(key=_order)

    def _add(self, message: ChatMessage, parent: str) -> None:
        self.by_id[message.id] = message
        self.parent[message.id] = parent
        self.children.setdefault(parent, []).append(message)

    def reachable(self) -> list[ChatMessage]:
        """The messages a path from the root leads to, parents before children (orphans left out)."""
        found: list[ChatMessage] = []
        stack = list(reversed(self.children.get(ROOT, ())))  # depth first, siblings in order
        while stack:
            message = stack.pop()
            found.append(message)
            stack.extend(reversed(self.children.get(message.id, ())))
        return found

    def path_to(self, message_id: str) -> list[ChatMessage]:
        """The messages from the root to ``message_id``, that one included."""
        path: list[ChatMessage] = []
        while message_id != ROOT and len(path) <= len(self.by_id):
            path.append(self.by_id[message_id])
            message_id = self.parent[message_id]
        return path[::-1]

    def newest(self) -> dict[str, float]:
        """For each message, when the newest message at or below it was made."""
        latest = {message.id: message.created for message in self.by_id.values()}
        for message in reversed(self.reachable()):  # children before their parents
            parent = self.parent[message.id]
            if parent != ROOT and latest[message.id] > latest[parent]:
                latest[parent] = latest[message.id]
        return latest

    def down_from(self, message_id: str, newest: dict[str, float] | None = None) -> list[ChatMessage]:
        """The path from the root through ``message_id`` and on, at each step to the child written last."""
        newest = self.newest() if newest is None else newest
        path = self.path_to(message_id)
        while kids := self.children.get(path[-1].id if path else ROOT):
            path.append(max(kids, key=lambda kid: (newest[kid.id], kid.created, kid.id)))
        return path

    def leaves(self) -> list[ChatMessage]:
        """The last message of each branch, depth first (siblings in the order they were made)."""
        return [message for message in self.reachable() if message.id not in self.children]


def set_path(conv: Conversation, path: list[ChatMessage], tree: Tree | None = None) -> None:
    """Make ``path`` (root to a message, as ``Tree`` finds it) the current path; the rest become branches."""
    tree = tree or Tree(conv)
    on = {message.id for message in path}
    reachable = {ROOT, *(message.id for message in tree.reachable())}
    alternatives: dict[str, list[ChatMessage]] = {}
    for parent, kids in tree.children.items():
        off = [kid for kid in kids if kid.id not in on]
        if off and parent in reachable:
            alternatives[parent] = off
    conv.messages[:] = path
    conv.alternatives = alternatives
    conv.touch()


def prune(conv: Conversation) -> None:
    """Forget the branches that followed a message no longer in the conversation (an /undo dropped it)."""
    if not conv.alternatives:
        return
    tree = Tree(conv)
    reachable = {ROOT, *(message.id for message in tree.reachable())}
    conv.alternatives = {parent: kept for parent, kept in conv.alternatives.items() if parent in reachable}


@dataclass(frozen=True)
class Branch:
    """One branch as ``/branch`` lists it: its last message, its length, where it leaves the current path."""

    number: int  # 1 = the first
    last: ChatMessage
    length: int  # messages on it
    shared: int  # how many of its first messages the current path has too
    parted: ChatMessage | None  # its first message not on the current path (None: it is the current path)
    tree: Tree = field(repr=False, compare=False)

    @property
    def current(self) -> bool:
        return self.parted is None

    @property
    def messages(self) -> list[ChatMessage]:
        """Its messages, root first (a walk up the tree: call it for one branch, not for every one)."""
        return self.tree.path_to(self.last.id)


def branches(conv: Conversation) -> list[Branch]:
    """Every branch of the conversation, numbered depth first; one pass over the tree, however many."""
    tree = Tree(conv)
    depth: dict[str, int] = {ROOT: 0}
    parted: dict[str, ChatMessage | None] = {ROOT: None}
    path = conv.messages
    out: list[Branch] = []
    for message in tree.reachable():  # parents first
        parent = tree.parent[message.id]
        at = depth[parent]
        depth[message.id] = at + 1
        before = parted[parent]
        on_path = before is None and at < len(path) and path[at] is message
        parted[message.id] = before if before is not None or on_path else message
        if message.id not in tree.children:
            mine = parted[message.id]
            shared = at + 1 if mine is None else depth[tree.parent[mine.id]]
            out.append(Branch(len(out) + 1, message, at + 1, shared, mine, tree))
    return out


def switch_to(conv: Conversation, number: int) -> Branch:
    """Make branch ``number`` (as ``branches`` numbers them) the current path; ``IndexError`` if none."""
    found = branches(conv)
    if not 1 <= number <= len(found):
        raise IndexError(number)
    chosen = found[number - 1]
    set_path(conv, chosen.messages, chosen.tree)
    conv.branch_focus = None
    return chosen


def fork_index(conv: Conversation) -> int | None:
    """Where the branch keys step: the fork they stepped or made last if it is still on the path, else the
    last message on the path with siblings (or the end of the path, after /edit). None: no fork at all."""
    focus = conv.branch_focus
    if focus is not None and conv.alternatives.get(focus):
        if focus == ROOT:
            return 0
        for index, message in enumerate(conv.messages):
            if message.id == focus:
                return index + 1
    for index in range(len(conv.messages), -1, -1):
        if conv.alternatives.get(parent_of(conv, index)):
            return index
    return None


def focus_on(conv: Conversation, message: ChatMessage) -> bool:
    """Make the branch keys step through the versions of ``message`` (on the current path); False if it is not."""
    for index, shown in enumerate(conv.messages):
        if shown is message:
            conv.branch_focus = parent_of(conv, index)
            return True
    return False


def step(conv: Conversation, delta: int) -> tuple[int, int] | None:
    """Show the next (``delta`` 1) or previous (-1) sibling at ``fork_index``, and below it the path
    written last; returns its (k, n), or None when the conversation has no branches."""
    index = fork_index(conv)
    if index is None:
        return None
    tree = Tree(conv)
    parent = parent_of(conv, index)
    siblings = tree.children[parent]
    if index < len(conv.messages):
        k = siblings.index(conv.messages[index]) + delta
    else:  # the path ends at the fork (after /edit): the next is the first, the previous the last
        k = 0 if delta > 0 else len(siblings) - 1
    chosen = siblings[k % len(siblings)]
    set_path(conv, tree.down_from(chosen.id), tree)
    conv.branch_focus = parent
    return k % len(siblings) + 1, len(siblings)
