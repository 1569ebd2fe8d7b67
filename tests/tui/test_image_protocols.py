"""Choosing Kitty, Sixel or half-block previews, and what each one puts out.

No test here queries a terminal: choosing is tested from environment
variables alone, ``prepare`` with the terminal check stubbed, and the Kitty
and Sixel widgets headless, with textual-image's writes to ``sys.__stdout__``
caught in a buffer.
"""

from __future__ import annotations

import base64
import io
import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from process_support import PROCESS_TIMEOUT
from textual.app import App
from textual.geometry import Region
from tui_support import Host, run_async, wait_for

from dsvl_tui.core.conversation import Attachment
from dsvl_tui.core.options import Options
from dsvl_tui.tui import app as app_module
from dsvl_tui.tui import image_protocols
from dsvl_tui.tui.widgets import ImagePreview
from dsvl_tui.tui.widgets._image_preview import picture_for_cells

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "\U0010eeee"



@pytest.fixture
def library(monkeypatch):
    """textual-image, imported without a terminal to ask (it would ask a real one on import)."""
    pytest.importorskip("textual_image")
    if "textual_image.widget" not in sys.modules and sys.__stdout__ is not None and sys.__stdout__.isatty():
        pytest.skip("importing textual-image here would query the real terminal (run without -s)")
    import textual_image.widget  # noqa: F401

    written = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", written)  # textual-image writes Kitty data straight there
    return written


@pytest.fixture
def terminal(monkeypatch):
    """``prepare`` believes it runs in a terminal; records whether it went on to load textual-image."""
    loads: list[bool] = []
    monkeypatch.setattr(image_protocols, "_interactive", lambda: True)
    monkeypatch.setattr(image_protocols, "_drop_unread_input", lambda: loads.append(True))
    return loads


# --- choosing from the environment ---------------------------------------------------


@pytest.mark.parametrize("environ, expected", [
    ({}, "probe"),
    ({"TERM": "xterm-256color"}, "probe"),
    ({"KITTY_WINDOW_ID": "1"}, "kitty"),
    ({"TERM": "xterm-kitty"}, "kitty"),
    ({"TERM_PROGRAM": "ghostty"}, "kitty"),
    ({"TERM": "xterm-ghostty"}, "kitty"),
    ({"TERM_PROGRAM": "WezTerm"}, "probe"),  # its Kitty graphics lack Unicode placeholders; Sixel works
    ({"TMUX": "/tmp/tmux-0/default,1,0", "KITTY_WINDOW_ID": "1"}, "halfblock"),
    ({"TMUX": "/tmp/tmux-0/default,1,0", "TERM_PROGRAM": "WezTerm"}, "halfblock"),
    ({"STY": "123.pts-0.host", "TERM": "xterm-kitty"}, "halfblock"),
])
def test_auto_choice_from_the_environment(environ, expected):
    assert image_protocols.choose("auto", environ, interactive=True) == expected
    assert image_protocols.choose(None, environ, interactive=True) == expected


@pytest.mark.parametrize("requested, environ, expected", [
    ("halfblock", {"KITTY_WINDOW_ID": "1"}, "halfblock"),
    ("kitty", {}, "kitty"),
    ("sixel", {"TMUX": "/tmp/tmux-0/default,1,0"}, "sixel"),  # named: the user vouches for passthrough
    (" Kitty ", {}, "kitty"),
    ("iterm", {"KITTY_WINDOW_ID": "1"}, "halfblock"),  # not a choice: nothing is guessed
])
def test_the_override_is_taken_as_given(requested, environ, expected):
    assert image_protocols.choose(requested, environ, interactive=True) == expected


@pytest.mark.parametrize("requested", ["auto", "kitty", "sixel"])
def test_no_terminal_means_half_blocks(requested):
    environ = {"KITTY_WINDOW_ID": "1", "TERM": "xterm-kitty"}
    assert image_protocols.choose(requested, environ, interactive=False) == "halfblock"


# --- prepare: what run_tui calls before the app starts ------------------------------


@pytest.mark.slow
def test_headless_run_never_loads_textual_image():
    """Not a terminal (as here, stdin and stdout piped): half-blocks, and the library is never imported."""
    script = (
        "import sys\n"
        "from dsvl_tui.tui import app, image_protocols\n"
        "print(image_protocols.prepare({'KITTY_WINDOW_ID': '1', 'DSVL_IMAGES': 'kitty'}))\n"
        "print('textual_image' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=PROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["halfblock", "False"]


@pytest.mark.parametrize("environ", [
    {"TMUX": "/tmp/tmux-0/default,1,0", "KITTY_WINDOW_ID": "1"},
    {"STY": "1.pts-0.host", "TERM_PROGRAM": "ghostty"},
    {"DSVL_IMAGES": "halfblock", "KITTY_WINDOW_ID": "1"},
    {"DSVL_IMAGES": "kitty", "KITTY_WINDOW_ID": "1", "NO_COLOR": "1"},
    {"KITTY_WINDOW_ID": "1", "TEXTUAL_COLOR_SYSTEM": "256"},
])
def test_half_blocks_without_asking_the_terminal(terminal, environ):
    assert image_protocols.prepare(dict(environ)) == "halfblock"
    assert terminal == []  # textual-image was not imported, so nothing was asked


def test_kitty_turns_on_full_colour(terminal, library):
    environ = {"TERM": "xterm-kitty"}  # as over ssh: no COLORTERM
    assert image_protocols.prepare(environ) == "kitty"
    assert environ["COLORTERM"] == "truecolor" and terminal == [True]
    assert logging.getLogger("textual_image").handlers  # its warnings are not printed on the terminal


def test_full_colour_reaches_the_apps_console(terminal, library, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-kitty")
    monkeypatch.setenv("COLORTERM", "")  # restored afterwards, whatever prepare sets
    monkeypatch.delenv("DSVL_IMAGES", raising=False)
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("STY", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM", raising=False)
    assert App().console.color_system == "256"  # what Rich makes of TERM=xterm-kitty alone
    assert image_protocols.prepare() == "kitty"
    assert App().console.color_system == "truecolor"


def test_sixel_only_when_the_terminal_says_so(terminal, library, monkeypatch):
    import textual_image.renderable as renderable

    # Not a terminal here, so textual-image asked nothing and picked its plain-text renderer.
    assert image_protocols.prepare({"TERM_PROGRAM": "WezTerm"}) == "halfblock"
    monkeypatch.setattr(renderable, "Image", renderable.SixelImage)  # as if the DA reply listed 4
    assert image_protocols.prepare({"TERM_PROGRAM": "WezTerm"}) == "sixel"
    assert image_protocols.prepare({"DSVL_IMAGES": "sixel"}) == "sixel"


def test_usable_needs_the_library_loaded(library, monkeypatch):
    assert image_protocols.usable("kitty") == "kitty" and image_protocols.usable("sixel") == "sixel"
    assert image_protocols.usable("halfblock") == "halfblock" and image_protocols.usable(None) == "halfblock"
    monkeypatch.delitem(sys.modules, "textual_image.widget")
    assert image_protocols.usable("kitty") == "halfblock" and image_protocols.usable("sixel") == "halfblock"
    assert image_protocols.cell_pixels() == image_protocols.DEFAULT_CELL


def test_run_tui_chooses_before_the_app_starts(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(image_protocols, "prepare", lambda: "sixel")
    monkeypatch.setattr(app_module.DsvlApp, "run", lambda self: seen.append(self.image_renderer))
    assert app_module.run_tui(Options()) == 0
    assert seen == ["sixel"]
    assert app_module.DsvlApp(Options()).image_renderer == "halfblock"


# --- the picture and the widgets ------------------------------------------------------


def _picture(path: Path, size=(400, 200), noise: bool = False) -> Path:
    image = Image.new("RGB", size, (255, 0, 0))
    if noise:  # does not compress: many Kitty chunks
        rng = random.Random(0)
        image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                       for _ in range(size[0] * size[1])])
    image.save(path)
    return path


def test_picture_fits_the_cells_and_is_never_enlarged():
    wide = Image.new("RGB", (400, 200), (255, 0, 0))
    picture, cells = picture_for_cells(wide, 24, 8, (10, 20))
    assert picture.size == (240, 120) and cells == (24, 6) and picture.mode == "RGB"
    tall = Image.new("RGBA", (100, 800), (0, 0, 255, 128))
    picture, cells = picture_for_cells(tall, 24, 8, (10, 20))
    assert picture.size == (20, 160) and cells == (2, 8) and picture.mode == "RGB"
    small = Image.new("RGB", (30, 20))
    picture, cells = picture_for_cells(small, 24, 8, (10, 20))
    assert picture.size == (30, 20) and cells == (3, 1)


async def _shown(preview: ImagePreview, pilot) -> None:
    await wait_for(pilot, lambda: preview.has_cells, timeout=60)
    await pilot.pause()
    assert preview.has_cells


@run_async
async def test_kitty_preview_sends_our_picture_in_chunks(tmp_path, library):
    path = _picture(tmp_path / "noise.png", noise=True)
    preview = ImagePreview(Attachment.from_path(path), renderer="kitty")
    async with Host(preview).run_test() as pilot:
        await _shown(preview, pilot)
        assert preview.renderer == "kitty" and preview.size.height == 6 + 1
        picture = preview.children[0]
        assert picture.size == (24, 6)
        first_row = picture.render_line(0)
        assert first_row.text.count(PLACEHOLDER) == 24
        assert "noise.png" in preview.render_line(6).text

    messages = re.findall(r"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\", library.getvalue())
    assert "".join(f"\x1b_G{c}{';' + p if p else ''}\x1b\\" for c, p in messages) == library.getvalue()
    *chunks, placement = messages
    assert len(chunks) > 2
    for index, (control, payload) in enumerate(chunks):
        keys = dict(item.split("=") for item in control.split(","))
        assert keys["f"] == "100" and keys["m"] == ("1" if index < len(chunks) - 1 else "0")
        assert 0 < len(payload) <= 4096 and (index == len(chunks) - 1 or len(payload) == 4096)
    keys = dict(item.split("=") for item in placement[0].split(","))
    assert keys["a"] == "p" and keys["U"] == "1" and (keys["c"], keys["r"]) == ("24", "6")
    image_id = int(keys["i"])
    assert {dict(item.split("=") for item in c.split(","))["i"] for c, _ in chunks} == {str(image_id)}
    colour = list(first_row)[0].style.color.triplet  # the placeholder cells name the image by colour
    assert tuple(colour) == ((image_id >> 16) & 255, (image_id >> 8) & 255, image_id & 255)

    png = base64.b64decode("".join(payload for _, payload in chunks))
    with Image.open(io.BytesIO(png)) as sent:
        assert sent.format == "PNG" and sent.size == (240, 120)  # 24 x 6 cells of 10 x 20 pixels
    assert png not in path.read_bytes()


@run_async
async def test_sixel_preview_draws_over_its_rows(tmp_path, library):
    preview = ImagePreview(Attachment.from_path(_picture(tmp_path / "red.png")), renderer="sixel")
    async with Host(preview).run_test() as pilot:
        await _shown(preview, pilot)
        assert preview.renderer == "sixel" and preview.size.height == 6 + 1
        drawer = next(child for child in preview.walk_children() if child.size == (24, 6) and not child.children)
        lines = drawer.render_lines(Region(0, 0, 24, 6))
        data = "".join(segment.text for segment in lines[-1])
        assert re.search(r'\x1bP[0-9;]*q"1;1;240;120', data) and data.count("\x1b\\") == 1
        assert "red.png" in preview.render_line(6).text
    assert library.getvalue() == ""  # Sixel goes through Textual's own output


@run_async
async def test_kitty_asked_for_without_the_library_draws_half_blocks(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "textual_image.widget", raising=False)
    preview = ImagePreview(Attachment.from_path(_picture(tmp_path / "red.png", size=(40, 20))), renderer="kitty",
                           max_width=12, max_height=4)
    async with Host(preview).run_test() as pilot:
        await _shown(preview, pilot)
        assert preview.renderer == "halfblock" and not preview.children
        assert preview.render_line(0).text == "\u2580" * 12


@run_async
async def test_previews_follow_the_apps_choice(tmp_path, library):
    class Chosen(Host):
        image_renderer = "kitty"

    preview = ImagePreview(Attachment.from_path(_picture(tmp_path / "red.png")))
    async with Chosen(preview).run_test() as pilot:
        await _shown(preview, pilot)
        assert preview.renderer == "kitty"
    plain = ImagePreview(Attachment.from_path(_picture(tmp_path / "blue.png")))
    async with Host(plain).run_test() as pilot:  # a host with no choice: half-blocks
        await _shown(plain, pilot)
        assert plain.renderer == "halfblock" and not plain.children
