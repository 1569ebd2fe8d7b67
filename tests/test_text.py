"""``printable``: the one sanitiser for text on its way to a widget or a terminal."""

from __future__ import annotations

import re

import pytest

from dsvl_tui.core.text import printable, shorten

ESC, BEL, ST = "\x1b", "\x07", "\x1b\\"

# Anything a terminal could act on: C0 controls but tab and newline, DEL, C1 controls, surrogates.
UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@pytest.mark.parametrize("sequence", [
    f"{ESC}]0;PWNED{BEL}",  # OSC 0: window title, BEL-terminated
    f"{ESC}]0;PWNED{ST}",  # ... ST-terminated
    f"{ESC}]52;c;SGVsbG8={ST}",  # OSC 52: clipboard
    f"{ESC}]8;;https://evil.example/{ST}",  # OSC 8: hyperlink
    f"{ESC}P1$r0m{ST}",  # DCS
    f"{ESC}_Gf=100,a=T;iVBORw0KGgo={ST}",  # APC: a kitty graphics command
    f"{ESC}^private{ST}",  # PM
    f"{ESC}Xstart of string{ST}",  # SOS
    "\x9d0;PWNED\x9c",  # 8-bit OSC and ST
    "\x90q#0;2;0;0;0\x9c",  # 8-bit DCS (sixel)
    f"{ESC}[2J", f"{ESC}[38;2;255;0;0m", f"{ESC}[?1049h", "\x9b2J",  # CSI, 7- and 8-bit
    f"{ESC}c", f"{ESC}(0", f"{ESC}#8", f"{ESC}7",  # other escapes: reset, charset, alignment test, save
])
def test_every_sequence_is_removed_whole(sequence):
    assert printable(f"before{sequence}after") == "beforeafter"


@pytest.mark.parametrize("sequence", [
    f"{ESC}]52;c;SGVsbG8=",  # OSC with no terminator
    f"{ESC}P1$r0m",  # DCS with no terminator
    f"{ESC}_Gf=100;AAAA",  # APC with no terminator
    f"{ESC}[38;2;255",  # CSI cut before its final byte
    ESC,
])
def test_an_unterminated_sequence_is_removed_to_the_end(sequence):
    assert printable(f"before{sequence}") == "before"


def test_a_string_ends_where_a_terminal_ends_it():
    # CAN aborts a control string; ESC starts the next sequence; both are removed, the text kept.
    assert printable(f"a{ESC}]0;title\x18b") == "ab"
    assert printable(f"a{ESC}]0;title{ESC}[2Jb") == "ab"
    assert printable(f"a{ESC}]0;title{ESC}]52;c;eA=={BEL}b") == "ab"


def test_controls_go_text_stays():
    assert printable("a\rb\x08c\x7fd\x85e\x00f") == "abcdef"
    assert printable("tab\tand\nnewline") == "tab\tand\nnewline"
    assert printable("émoji 🎉 [b]markup[/b] \\ ~") == "émoji 🎉 [b]markup[/b] \\ ~"


def test_surrogates_become_valid_text():
    assert printable("pair \ud83c\udf89 lone \udc80 high \ud800!") == "pair 🎉 lone \ufffd high \ufffd!"
    printable("name-\udcff.png").encode("utf-8")  # a surrogate-escaped file name can be written


def test_nothing_unsafe_survives_a_mix():
    hostile = "".join(chr(c) for c in range(0x00, 0xA0)) * 3 + f"{ESC}]0;x" + "\ud800" + ESC
    assert not UNSAFE.search(printable(hostile))


@pytest.mark.parametrize(("text", "limit", "shown"), [
    ("What is in\nthis  picture?", 30, "What is in this picture?"),  # fits: one line, nothing cut
    ("What is in this picture of my cat", 16, "What is in this\u2026"),  # at a word, with an ellipsis
    ("hello, world again", 13, "hello, world\u2026"),
    ("one, two three", 8, "one\u2026"),  # no dangling comma
    ("Supercalifragilisticexpialidocious is long", 16, "Supercalifragil\u2026"),  # one long word: cut inside it
])
def test_shorten_cuts_at_a_word_with_an_ellipsis(text, limit, shown):
    assert shorten(text, limit) == shown and len(shown) <= limit
