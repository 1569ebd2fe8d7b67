"""Markdown cut into blocks and drawn block by block (``dsvl_tui.markdown.render``).

The property that matters: a text drawn while it streams in, in any pieces
and with any number of drawings in between, ends up exactly as the same text
drawn whole. The cost side: while it streams, each drawing parses only the
text after the last finished block.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.markdown import Markdown

from dsvl_tui.markdown import budget
from dsvl_tui.markdown.budget import nesting, render_plain, too_costly
from dsvl_tui.markdown.render import Block, DrawnMarkdown, blocks, finished_blocks, look_for, render_block

LOOK = look_for({}, dark=True)


def text_of(lines) -> list[str]:
    return ["".join(segment.text for segment in line).rstrip() for line in lines]


def starts(text: str) -> list[str]:
    return [text[block.start:block.start + 6] for block in blocks(text)]


def test_blocks_are_top_level_blocks_and_list_items():
    text = "# Title\n\nPara one\nstill para\n\n- a\n- b\n  - nested\n\n```py\nx = 1\n\ny = 2\n```\n> quote\n"
    assert starts(text) == ["# Titl", "Para o", "- a\n- ", "- b\n  ", "```py\n", "> quot"]
    assert [block.joined for block in blocks(text)] == [False, False, False, True, False, False]


def test_a_table_and_an_ordered_list_keep_their_numbers():
    text = "| a | b |\n|---|---|\n| 1 | 2 |\n\n3. three\n4. four\n"
    assert blocks(text) == [Block(0, False), Block(text.index("3."), False), Block(text.index("4."), True)]
    drawn = text_of(render_block("4. four\n", 40, LOOK))
    assert drawn == [" 4 four"]  # an item drawn on its own keeps its number


def test_finished_blocks_ignore_the_line_being_written():
    def finished(text, **kwargs):
        return finished_blocks(text, final=False, **kwargs)

    assert finished("para\n\nnext") == ([], 0, False)  # "next" may still become part of anything
    assert finished("para\n\nnext\n") == ([("para\n\n", False)], len("para\n\n"), False)
    assert finished("1. a\n\n2") == ([], 0, False)  # on its way to "2. b", an item of the same list
    assert finished("1. a\n\n2. b\n") == ([("1. a\n\n", False)], len("1. a\n\n"), True)
    assert finished("- b\n- c\n", joined=True) == ([("- b\n", True)], len("- b\n"), True)
    assert finished("```\ncode\n\nmore\n") == ([], 0, False)  # an open fence is one block
    assert finished("> quote\nlazy\n") == ([], 0, False)  # a lazy continuation line joins the quote
    assert finished_blocks("a\n\n- b", final=True) == ([("a\n\n", False), ("- b", False)], 6, False)


def test_render_block_draws_like_rich_without_blank_lines_around():
    console = Console(width=50, color_system=None)
    source = "Some **bold** text and `code`."
    rich_lines = text_of(console.render_lines(Markdown(source, hyperlinks=False), console.options, pad=False))
    assert text_of(render_block(source, 50, LOOK)) == [line for line in rich_lines if line]
    heading = render_block("# Heading", 50, LOOK)
    assert text_of(heading) == ["Heading"]  # flush left, unlike rich's centred h1
    link = text_of(render_block("[site](https://example.com)", 50, LOOK))
    assert link == ["site (https://example.com)"]  # the address is shown, not hidden in a hyperlink


def test_code_keeps_its_background_rows_and_is_highlighted():
    lines = render_block("```python\nprint('hi')\n```", 40, LOOK)
    assert len(lines) == 3 and not text_of(lines)[0] and not text_of(lines)[2]  # padding rows kept
    assert all(segment.style and segment.style.bgcolor for segment in lines[0])
    colours = {segment.style.color for segment in lines[1] if segment.text.strip()}
    assert len(colours) > 1  # print, the parentheses and the string differ


def test_control_sequences_in_the_text_are_not_drawn():
    lines = render_block("evil \x1b[2J\x1b]0;title\x07 text", 40, LOOK)
    assert all("\x1b" not in segment.text and "\x07" not in segment.text for line in lines for segment in line)


def test_theme_variables_colour_the_headings():
    look = look_for({"markdown-h2-color": "#ff0000", "markdown-h2-text-style": "bold", "background": "#000000"},
                    dark=True)
    (line,) = render_block("## Red", 40, look)
    assert any(segment.style and segment.style.color.triplet.hex == "#ff0000" for segment in line)
    translucent = look_for({"foreground": "#ffffff80", "background": "#000000"}, dark=True)
    assert translucent.theme.styles["markdown.table.header"].color.triplet.hex != "#ffffff"  # blended


ANSWER = (
    "# Plan\n\nFirst a paragraph with `code` and **bold**.\nIt goes on.\n\n"
    "1. one\n2. two\n   - inner a\n   - inner b\n3. three\n\n"
    "```python\ndef f(x):\n\n    return x\n```\n\n"
    "| col | other |\n|-----|-------|\n| 1 | 2 |\n| 3 | 4 |\n\n"
    "> a quote\nlazy line\n\n- loose a\n\n- loose b\n\n7. seven\n\n8. eight\n\nSetext\n---\n\nThe end.\n"
)


def whole(text: str, width: int) -> list[str]:
    drawn = DrawnMarkdown(text)
    drawn.draw(width, LOOK)
    return text_of(drawn.lines())


def drawn_in_pieces(text: str, cuts: list[int], draw_after: set[int], width: int) -> list[str]:
    drawn = DrawnMarkdown()
    previous = 0
    for index, cut in enumerate(sorted(cuts) + [len(text)]):
        drawn.append(text[previous:cut])
        previous = cut
        if index in draw_after:
            drawn.draw(width, LOOK)
    drawn.finish()
    drawn.draw(width, LOOK)
    return text_of(drawn.lines())


@pytest.mark.slow
def test_streamed_equals_whole_for_every_single_cut_point():
    expected = whole(ANSWER, 60)
    assert "The end." in expected[-1]
    for cut in range(1, len(ANSWER)):
        assert drawn_in_pieces(ANSWER, [cut], {0}, 60) == expected, cut


def test_streamed_token_by_token_with_a_drawing_after_each_equals_whole():
    rng = random.Random(3)
    cuts, position = [], 0
    while position < len(ANSWER):
        position += rng.randint(1, 5)
        cuts.append(min(position, len(ANSWER)))
    assert drawn_in_pieces(ANSWER, cuts, set(range(len(cuts))), 50) == whole(ANSWER, 50)


_FRAGMENTS = st.sampled_from([
    "word ", "**bold** ", "`code` ", "\n", "\n\n", "- ", "1. ", "2. ", "  ", "# ", "## ", "> ", "```", "```py\n",
    "| a | b |\n|---|---|\n", "| 1 | 2 |\n", "---\n", "===\n", "    indented\n", "[link](http://x.y) ", "*",
])


@settings(max_examples=60, deadline=None)
@given(st.lists(_FRAGMENTS, min_size=1, max_size=40), st.data())
def test_any_text_in_any_pieces_draws_as_whole(fragments, data):
    text = "".join(fragments)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    draw_after = set(data.draw(st.lists(st.integers(0, 8), max_size=8)))
    assert drawn_in_pieces(text, cuts, draw_after, 40) == whole(text, 40)


def test_a_new_width_redraws_everything():
    drawn = DrawnMarkdown(ANSWER)
    drawn.draw(30, LOOK)
    narrow = text_of(drawn.lines())
    drawn.draw(80, LOOK)
    wide = text_of(drawn.lines())
    assert max(map(len, narrow)) <= 30 < max(map(len, wide))
    assert drawn.draw(30, LOOK) == len(narrow) and text_of(drawn.lines()) == narrow


def test_only_recently_used_blocks_keep_their_lines(monkeypatch):
    text = "".join(f"Paragraph {n} with a few words in it.\n\n- item {n}\n- another\n\n" for n in range(40))
    expected = whole(text, 40)
    monkeypatch.setattr(DrawnMarkdown, "KEEP_DRAWN", 3)
    drawn = DrawnMarkdown()
    for start in range(0, len(text), 7):
        drawn.append(text[start:start + 7])
        drawn.draw(40, LOOK)
    drawn.finish()
    drawn.draw(40, LOOK)
    assert len(drawn._kept) <= 3
    assert text_of(drawn.lines()) == expected  # blocks dropped are drawn again, the same
    assert text_of([drawn.line(y) for y in reversed(range(drawn.line_count))]) == expected[::-1]


def test_streaming_parses_only_the_text_after_the_last_finished_block(monkeypatch):
    from markdown_it import MarkdownIt

    parsed = [0]
    real_parse = MarkdownIt.parse

    def counting_parse(self, src, env=None):
        parsed[0] += len(src)
        return real_parse(self, src, env)

    monkeypatch.setattr(MarkdownIt, "parse", counting_parse)
    paragraph = "A paragraph of some length, " * 4 + "\n\n"
    drawn = DrawnMarkdown()
    per_block = []
    for _ in range(60):
        before = parsed[0]
        for word in paragraph.split(" "):
            drawn.append(word + " ")
            drawn.draw(60, LOOK)
        per_block.append(parsed[0] - before)
    # Parsing the whole text each time would make the 60th block ~60 times dearer than the first.
    assert per_block[-1] < 1.5 * per_block[1], per_block
    assert drawn.drawn_length == len(drawn.source)


def test_a_language_name_being_typed_never_searches_plugin_lexers(monkeypatch):
    from pygments.lexers import get_lexer_by_name

    searched = []
    # pygments.lexers swaps itself for a copy in sys.modules: patch where the function looks the name up.
    monkeypatch.setitem(get_lexer_by_name.__globals__, "find_plugin_lexers", lambda: searched.append(1) or iter(()))
    for end in range(4, len("```typescript") + 1):  # "```t", "```ty", ... as the fence streams in
        render_block("```typescript"[:end] + "\nconst x = 1;", 40, LOOK)
    render_block("```nosuchlanguage\nx = 1\n```", 40, LOOK)
    assert searched == []
    highlighted = render_block("```TypeScript\nconst x = 1;\n```", 40, LOOK)[1]
    assert len({segment.style.color for segment in highlighted if segment.text.strip()}) > 1


# --- the budget (issue 20): a costly block is plain text, and no drawing step grows with the text --------------

@contextlib.contextmanager
def small_budgets():
    """Budgets a few lines big, so that texts of a few hundred characters cross every one of them."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"BLOCK_CHARS": 120, "BLOCK_LINES": 6, "DELIMITERS": 12, "TABLE_COLUMNS": 4,
                            "TABLE_CELLS": 20, "DEPTH": 3, "STEP_CHARS": 200, "STEP_LINES": 12,
                            "PLAIN_CHARS": 90, "PLAIN_LINES": 5}.items():
            patch.setattr(budget, name, value)
        yield


def _table(columns: int, rows: int = 2) -> str:
    return "|" + "|".join("h" for _ in range(columns)) + "|\n|" + "-|" * columns + "\n" + \
        ("|" + "|".join("v" for _ in range(columns)) + "|\n") * rows


def test_each_budget_is_checked_before_parsing():
    assert too_costly("word " * 10) is None
    assert "characters" in too_costly("w" * (budget.BLOCK_CHARS + 1))
    assert "lines" in too_costly("x\n" * (budget.BLOCK_LINES + 1))
    assert "emphasis" in too_costly("a*" * (budget.DELIMITERS + 1))
    assert "columns" in too_costly(_table(budget.TABLE_COLUMNS + 1))
    assert too_costly(_table(budget.TABLE_COLUMNS)) is None
    assert "cells" in too_costly(_table(10, budget.TABLE_CELLS // 10))
    assert "nested" in too_costly("- " * (budget.DEPTH + 1) + "x")
    assert nesting("- a\n  - b\n    1. c\n") == 3 and nesting("> - > x") == 3 and nesting("a - b\n\tcode") == 0
    assert nesting("".join("  " * i + "- x\n" for i in range(30))) == 30
    yaml = "- config:\n  ```yaml\n" + "".join("  " * i + "- k: v\n" for i in range(20)) + "  ```\n- after\n  - b\n"
    assert nesting(yaml) == 2 and too_costly(yaml) is None  # code is not nested, however far it is indented


def test_a_realistic_answer_stays_within_every_budget():
    from dsvl_tui.bench.ui import markdown_answer

    text = "".join(markdown_answer())
    found = blocks(text)
    ends = [block.start for block in found[1:]] + [len(text)]
    assert [text[b.start:end] for b, end in zip(found, ends, strict=True) if too_costly(text[b.start:end])] == []


@pytest.mark.parametrize("source", ["a*" * 2_000, "x\n" * 1_000, _table(300), "- " * 3000 + "x"],
                         ids=["emphasis", "lines", "wide table", "deep list"])
def test_a_costly_block_is_drawn_as_it_is(source):
    lines = text_of(render_block(source, 40, LOOK))
    assert "".join(lines).replace(" ", "") == source.replace("\n", "").replace(" ", "")  # as it is, no markup
    assert max(map(len, lines)) <= 40


def test_plain_text_is_wrapped_by_cells_and_sanitised():
    assert text_of(render_plain("ab" * 5 + "\n\ncd\n\n", 4)) == ["abab", "abab", "ab", "", "cd"]
    wide = text_of(render_plain("界" * 5, 4))
    assert wide == ["界界", "界界", "界"]  # two cells each
    assert text_of(render_plain("evil \x1b[2J\x1b]0;title\x07 text", 40)) == ["evil  text"]


def _draws(text: str, width: int = 40) -> tuple[DrawnMarkdown, int]:
    drawn = DrawnMarkdown(text)
    steps = 1
    drawn.draw(width, LOOK)
    while drawn.pending:
        drawn.draw(width, LOOK)
        steps += 1
    return drawn, steps


@pytest.mark.slow
def test_no_drawing_step_parses_more_than_a_step(monkeypatch):
    from markdown_it import MarkdownIt

    monkeypatch.setattr(budget, "SHOW_LINES", 100_000)

    sizes = []
    real_parse = MarkdownIt.parse
    monkeypatch.setattr(MarkdownIt, "parse",
                        lambda self, src, env=None: sizes.append(len(src)) or real_parse(self, src, env))
    text = ANSWER * 300 + "x\n" * 20_000 + "a*" * 20_000 + "\n\n" + ANSWER
    drawn, steps = _draws(text)
    assert max(sizes) <= budget.STEP_CHARS and steps > len(text) // budget.STEP_CHARS
    assert drawn.drawn_length == len(text) and text_of(drawn.lines())[-1].endswith("The end.")
    assert text_of(drawn.lines()).count("x") == 20_000  # plain: one line each (Markdown: one paragraph)


def test_the_region_shown_plain_ends_at_a_blank_line_outside_a_fence():
    big = "".join(f"line {i}\n" for i in range(40))
    fenced = "```\n" + "code\n\n" * 30 + "```\n"
    text = big + "\n**after**\n\n" + fenced + "\n# Head\n"
    with small_budgets():
        lines = text_of(_draws(text)[0].lines())
    assert lines[:40] == [f"line {i}" for i in range(40)] and lines[40:42] == ["", "after"]  # bold again
    assert lines[-1] == "Head" and "```" in lines and lines.count("code") == 30


FRAGMENTS_COSTLY = st.sampled_from(["a*", "x\n", "\n\n", "| v ", "|\n", "- ", "> ", "```\n", "word ", "  ", "# "])


@settings(max_examples=60, deadline=None)
@given(st.lists(FRAGMENTS_COSTLY, min_size=1, max_size=120), st.data())
def test_a_costly_text_in_any_pieces_draws_as_whole(fragments, data):
    text = "".join(fragments)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    draw_after = set(data.draw(st.lists(st.integers(0, 8), max_size=8)))
    with small_budgets():
        expected = text_of(_draws(text)[0].lines())
        drawn = DrawnMarkdown()
        previous = 0
        for index, cut in enumerate(sorted(cuts) + [len(text)]):
            drawn.append(text[previous:cut])
            previous = cut
            if index in draw_after:
                drawn.draw(40, LOOK)
        drawn.finish()
        drawn.draw_all(40, LOOK)
        assert text_of(drawn.lines()) == expected


def test_past_its_lines_a_text_is_counted_not_drawn(monkeypatch):
    monkeypatch.setattr(budget, "SHOW_LINES", 300)
    text = "x\n" * 2_000
    drawn, steps = _draws(text)
    lines = text_of(drawn.lines())
    shown = lines.index("")  # the x lines, a blank line, the note
    assert budget.SHOW_LINES <= shown < budget.SHOW_LINES + budget.PLAIN_LINES and lines[:shown] == ["x"] * shown
    assert lines[shown + 1:] == [budget.NOT_SHOWN.format(len(text) - 2 * shown)[:40],
                                 budget.NOT_SHOWN.format(len(text) - 2 * shown)[40:].strip()]
    assert not drawn.pending and drawn.drawn_length == len(text)
    drawn.append("more")
    drawn.draw(40, LOOK)  # streaming on: only the count changes
    assert str(f"{len(text) + 4 - 2 * shown:,}") in "".join(text_of(drawn.lines()[shown:]))
