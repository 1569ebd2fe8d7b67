"""Branches on the tiny checkpoint: switching back reuses the engine's cached prefix, and the plain app's branches
survive kill -9, --resume, /save and /load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT, kill_9_when

from dsvl_tui.core import branches
from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.core.turn import stream_answer
from engine.types import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
SHORT = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=8)


def answer(backend, conv: Conversation) -> ChatMessage:
    """Answer ``conv``'s last message as the plain app does (one stream, keyed by the conversation's id)."""
    return stream_answer(backend, conv, cancel=threading.Event(), on_chunk=lambda chunk: None)


def test_switching_back_to_a_branch_reuses_its_cached_prefix(tiny_engine):
    conv = Conversation(settings=SHORT)
    conv.add_user("describe the weather in the mountains today")
    answer(tiny_engine, conv)
    conv.add_user("and what should I pack for the walk")
    asked_second = answer(tiny_engine, conv).stats
    branches.detach(conv, 2)  # /edit 2
    conv.add_user("tell me a story about a lighthouse keeper instead")
    edited = answer(tiny_engine, conv).stats
    assert edited.reused_tokens < asked_second.prompt_tokens  # it parts from the first branch at the edit

    branches.switch_to(conv, 1)
    assert [m.text for m in conv.messages][2] == "and what should I pack for the walk"
    conv.add_user("thanks")
    back = answer(tiny_engine, conv).stats
    # The first branch's context is still kept: its whole prompt is reused, more than the prefix the edited
    # branch shares with it (what a cache holding only the edited branch would give).
    assert back.reused_tokens >= asked_second.prompt_tokens > edited.reused_tokens


def test_random_edits_regenerations_and_switches_keep_one_consistent_tree():
    """Whatever mix of /edit N, /regenerate, sends, /undo, steps and switches: every message stays in the tree once,
    the path is a root-to-message path of it, and /branch's one-pass listing matches a walk up from each leaf."""
    import random

    rng = random.Random(25)
    conv = Conversation()
    made = 0
    for _ in range(400):
        action = rng.choice(["send", "send", "regenerate", "edit", "step", "switch", "undo"])
        users = [i for i, m in enumerate(conv.messages) if m.role == "user"]
        if action == "send" or not users:
            made += 1
            conv.add_user(f"q{made}")
            conv.add_answer(f"a{made}")
        elif action == "regenerate":
            conv.for_regenerate()
            conv.add_answer(f"r{made}")
        elif action == "edit":
            branches.detach(conv, rng.choice(users))
        elif action == "step":
            branches.step(conv, rng.choice([1, -1]))
        elif action == "switch":
            branches.switch_to(conv, rng.randint(1, len(branches.branches(conv))))
        else:
            conv.undo()
        everything = list(branches.all_messages(conv))
        assert len({m.id for m in everything}) == len(everything) == conv.message_count()
        tree = branches.Tree(conv)
        assert len(tree.reachable()) == len(everything)  # no orphans: /undo took what hung from what it dropped
        if conv.messages:
            assert tree.path_to(conv.messages[-1].id) == conv.messages
        for branch in branches.branches(conv):
            path = tree.path_to(branch.last.id)
            shared = next((i for i, (a, b) in enumerate(zip(path, conv.messages, strict=False)) if a is not b),
                          min(len(path), len(conv.messages)))
            assert (branch.length, branch.shared) == (len(path), shared)
            assert branch.current == (path == conv.messages)
            assert branch.parted is (None if branch.current else path[shared])


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "DSVL_DATA_DIR": str(tmp_path / "data"), "DSVL_CONFIG_DIR": str(tmp_path / "config"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _plain(checkpoint: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "dsvl_tui.cli", "--plain", "--model", str(checkpoint), "--max-new-tokens", "4",
            "--temperature", "0", *flags]


def _journaled(folder: Path) -> dict | None:
    """The one journal entry, once it holds the whole tree (the edited branch answered, five messages aside)."""
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue  # being replaced
        path_ok = [m["text"] for m in doc["messages"]][:1] == ["first, edited"] and len(doc["messages"]) == 2
        if path_ok and not doc["messages"][1]["stopped"] and len(doc.get("branches", ())) == 5:
            return doc
    return None


@pytest.mark.slow
def test_branches_survive_kill_9_resume_save_and_load(tiny_siglip, tmp_path):
    lines = "first\nsecond\n/regenerate\n/edit 1\nfirst, edited\n"
    child = subprocess.Popen(_plain(tiny_siglip), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env(tmp_path))
    try:
        child.stdin.write(lines)
        child.stdin.flush()  # stdin stays open: the app waits for more when it is killed
        doc = kill_9_when(child, lambda: _journaled(tmp_path / "data" / "journal"), "the whole tree journaled")
    finally:
        child.kill()
        child.wait(timeout=PROCESS_TIMEOUT)
        child.stdin.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    kept = [m["text"] for m in doc["branches"]]
    assert kept[:3] == ["first", kept[1], "second"] and len(kept) == 5  # first, its answer, second, two answers

    script = "/resume 1\n/branch\n/save chat.json\n/load chat.json\n/branch\n/branch 2\n/branch prev\n"
    done = subprocess.run(_plain(tiny_siglip, "--resume"), input=script, capture_output=True, text=True,
                          cwd=tmp_path, env=_env(tmp_path), timeout=PROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr
    heading = "branches (/branch N switches; /branch next|prev step through a message's versions):\n"
    listings = done.stderr.split(heading)
    assert len(listings) == 3, done.stderr  # after --resume, and after /save and /load
    for listing in listings[1:]:
        rows = listing.splitlines()[:3]
        assert rows[0] == '  1. 4 messages, from message 1: "first"'
        assert rows[1] == '  2. 4 messages, from message 1: "first"'
        assert rows[2] == "* 3. 2 messages (this one)"
    assert "branch 2 of 3; 4 messages, the last: " in done.stderr
    assert "version 1 of 2; 4 messages, the last: " in done.stderr  # the regenerated answer's older version
    saved = json.loads((tmp_path / "chat.json").read_text("utf-8"))
    assert saved["version"] == 2 and len(saved["branches"]) == 5
