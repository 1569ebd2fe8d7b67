"""Measure /find's index: ``python -m dsvl_tui.bench.find``.

Writes N synthetic conversations (default 10,000; 4 to 16 messages of 10 to
60 words from a Zipf-like vocabulary, a picture now and then) as journal
entries into a temporary data folder, builds the index from them (a rebuild:
what a missing index costs), then times

- indexing one message: a conversation of the 10,000 gets one more message and
  its index is updated as the autosave worker does (``Journal.update_index``
  after ``record(index=False)``: the journal write itself is not counted);
- a query: rare, common and very common words, two words, a prefix and a
  picture's name, each answered from the index (``sync=False``), the best
  20 conversations as /find lists them (``--limit``);
- the staleness check each search makes first (``sync``), nothing changed:
  with the journal folder scanned (as after a journal write) and with the
  folder as the last scan left it (its modification time says so).

Prints a table of median and 95th percentile against the targets (a query
≤ 50 ms, a message ≤ 5 ms) and writes ``findbench.json``. Exit code 1 if a
target is missed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUERY_TARGET_MS = 50.0
MESSAGE_TARGET_MS = 5.0


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyzéüø"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(words)


def _write_journal(folder: Path, count: int, rng: random.Random) -> list[str]:
    """``count`` journal entries written straight to ``folder`` (no fsync: this is set-up, not measured)."""
    from dsvl_tui.core.conversation import Attachment, Conversation
    from dsvl_tui.storage.transcript.write import document, encode

    vocabulary = _vocabulary(rng, 20_000)
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocabulary))))  # Zipf-like
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for number in range(count):
        conv = Conversation(title=f"conversation {number}")
        for turn in range(rng.randint(4, 16)):
            text = " ".join(rng.choices(vocabulary, cum_weights=weights, k=rng.randint(10, 60)))
            message = conv.add_user(text) if turn % 2 == 0 else conv.add_answer(text)
            if turn == 0 and rng.random() < 0.2:
                message.images.append(Attachment(name=f"photo_{rng.choice(vocabulary)}_{number}.jpg"))
        doc = document(conv, lambda att: {"name": att.label, "sha256": None, "path": att.label}, updated=conv.updated)
        (folder / f"{conv.id}.json").write_bytes(encode(doc))
        ids.append(conv.id)
    return ids


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200, help="messages indexed one by one (default 200)")
    parser.add_argument("--queries", type=int, default=30, help="runs of each query (default 30)")
    parser.add_argument("--limit", type=int, default=None, help="conversations listed (default: /find's, 20)")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--output", default="findbench.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="findbench-") as temp:
        os.environ["DSVL_DATA_DIR"] = temp  # the index and journal go here, not into the user's data folder
        from dsvl_tui.commands.builtin import FIND_LIMIT
        from dsvl_tui.core.conversation import Conversation
        from dsvl_tui.storage.journal import Journal
        from dsvl_tui.storage.search_index import SearchIndex

        journal = Journal()
        started = time.perf_counter()
        ids = _write_journal(journal.directory, args.conversations, rng)
        written = time.perf_counter() - started
        print(f"wrote {len(ids):,} conversations in {written:.1f} s", file=sys.stderr)
        index = SearchIndex()
        started = time.perf_counter()
        index.sync()
        rebuild = time.perf_counter() - started
        con = index._connection()
        messages = con.execute("SELECT count(*) FROM msgs").fetchone()[0]
        size = sum(os.path.getsize(p) for p in Path(temp).glob("search.sqlite3*"))
        print(f"indexed {messages:,} messages in {rebuild:.1f} s", file=sys.stderr)

        # -- one message at a time, as the autosave worker does ---------------------------------
        conv = journal.open(ids[len(ids) // 2])
        per_message = []
        for turn in range(args.messages):
            text = f"fresh words number {turn} about the lighthouse keeper"
            conv.add_user(text) if turn % 2 == 0 else conv.add_answer(text)
            assert journal.record(conv, index=False) is None
            started = time.perf_counter()
            journal.update_index()
            per_message.append(time.perf_counter() - started)

        # -- queries ------------------------------------------------------------------------------
        vocabulary = [w for (w,) in con.execute("SELECT term FROM fts_vocab ORDER BY doc DESC")] \
            if _vocab_table(con) else []
        common, rare = vocabulary[0], vocabulary[len(vocabulary) // 2]
        queries = {
            f"rare word ({rare})": rare,
            f"common word ({vocabulary[50]})": vocabulary[50],
            f"most common word ({common})": common,
            "two words": f"{vocabulary[10]} {vocabulary[200]}",
            "prefix (3 letters*)": f"{vocabulary[300][:3]}*",
            "picture name (photo)": "photo",
            "no match": "zzzzqqq",
        }
        rows = []
        limit = args.limit or FIND_LIMIT
        for label, query in queries.items():
            found = len(index.search(query, limit, sync=False))
            times = []
            for _ in range(args.queries):
                started = time.perf_counter()
                index.search(query, limit, sync=False)
                times.append(time.perf_counter() - started)
            rows.append((label, found, *_ms(times)))
        syncs, scans = [], []
        for _ in range(max(5, args.queries // 3)):
            con.execute("DELETE FROM meta")  # as after a journal write: the folder is scanned
            started = time.perf_counter()
            index.sync()
            scans.append(time.perf_counter() - started)
        os.utime(journal.directory, ns=(time.time_ns() - 10**10,) * 2)  # settled: the scan is skipped
        index.sync()
        for _ in range(max(5, args.queries // 3)):
            started = time.perf_counter()
            index.sync()
            syncs.append(time.perf_counter() - started)
        index.close()
        journal_conv: Conversation = conv
        del journal_conv

    message_ms = _ms(per_message)
    sync_ms, scan_ms = _ms(syncs), _ms(scans)
    print(f"\n{args.conversations:,} conversations, {messages:,} messages; index {size / 2**20:.0f} MiB; "
          f"rebuild from the journal {rebuild:.1f} s; queries list the best {limit}")
    print(f"{'measure':<40} {'found':>6} {'median ms':>10} {'p95 ms':>8} {'target':>8}")
    missed = False
    print(f"{'index one message':<40} {'':>6} {message_ms[0]:>10.2f} {message_ms[1]:>8.2f} {'≤ 5':>8}")
    missed |= message_ms[1] > MESSAGE_TARGET_MS
    for label, found, median, p95 in rows:
        print(f"{'query: ' + label:<40} {found:>6} {median:>10.2f} {p95:>8.2f} {'≤ 50':>8}")
        missed |= p95 > QUERY_TARGET_MS
    print(f"{'staleness check, journal folder scanned':<40} {'':>6} {scan_ms[0]:>10.2f} {scan_ms[1]:>8.2f} {'':>8}")
    print(f"{'staleness check, folder unchanged':<40} {'':>6} {sync_ms[0]:>10.2f} {sync_ms[1]:>8.2f} {'':>8}")
    result = {"conversations": args.conversations, "messages": messages, "limit": limit, "index_bytes": size,
              "rebuild_seconds": rebuild, "index_message_ms": {"median": message_ms[0], "p95": message_ms[1]},
              "queries": [{"query": label, "found": found, "median_ms": median, "p95_ms": p95}
                          for label, found, median, p95 in rows],
              "sync_unchanged_ms": {"median": sync_ms[0], "p95": sync_ms[1]},
              "sync_scan_ms": {"median": scan_ms[0], "p95": scan_ms[1]}}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if missed else 0


def _vocab_table(con) -> bool:
    """An fts5vocab table over the index (made here, for the benchmark only): words by how many messages hold them."""
    con.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_vocab USING fts5vocab(main, 'fts', 'row')")
    return True


if __name__ == "__main__":
    raise SystemExit(main())
