"""How the terminal can draw a picture: Kitty graphics, Sixel, or coloured half-blocks.

Half-blocks need nothing but colours, so they are the default and the fallback.
The other two are drawn by textual-image, which asks the terminal about itself
(cell size in pixels, Sixel and Kitty support) as soon as it is imported. Those
answers come back on the terminal's input, so the import must happen before
Textual starts reading it: ``prepare`` does it in ``run_tui``, before
``App.run()``. Tests and headless runs never call ``prepare``, and a preview
asked for Kitty or Sixel while textual-image was never loaded draws
half-blocks (``usable``), so nothing here touches a terminal there.

The picture handed to textual-image is always our own downscaled PIL image
(see ``ImagePreview``); no escape sequence is ever built from file bytes or
from text.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from dsvl_tui.web.client import is_web

if TYPE_CHECKING:
    from textual.widget import Widget

ENV_VAR = "DSVL_IMAGES"
CHOICES = ("auto", "halfblock", "kitty", "sixel")
DEFAULT_CELL = (10, 20)  # pixels per cell, textual-image's own guess when the terminal will not say

_LIBRARY = "textual_image.widget"


def choose(requested: str | None, environ: Mapping[str, str], *, interactive: bool) -> str:
    """The renderer for ``requested`` worked out from the environment alone.

    Returns ``"halfblock"``, ``"kitty"``, ``"sixel"``, or ``"probe"``: ask the
    terminal whether it draws Sixel (it does when its answer to a Device
    Attributes query lists 4; textual-image asks).

    Rules, in order:

    - in a browser (``dsvl-chat web`` sets ``DSVL_WEB=1``): half-blocks, whatever
      was asked. The browser's terminal draws no image protocol, and ``TERM``
      and the like describe the server's terminal, not the browser.
    - not a terminal on both ends (piped, headless, tests): half-blocks.
    - ``halfblock``, ``kitty`` or ``sixel`` asked for by name: that, even inside
      tmux, whose passthrough the user then vouches for.
    - anything but ``auto`` (a typo): half-blocks.
    - inside tmux (``TMUX``) or GNU screen (``STY``): half-blocks. The
      multiplexer owns the screen, and graphics sent through it get lost or
      land in the wrong place unless passthrough is set up.
    - kitty (``KITTY_WINDOW_ID``, ``TERM=xterm-kitty``) or Ghostty
      (``TERM_PROGRAM=ghostty``, ``TERM=xterm-ghostty``): Kitty graphics.
      ``TERM`` is the one of these that survives ``ssh``.
    - anything else, WezTerm included: probe. textual-image places Kitty
      images with Unicode placeholders, which WezTerm does not draw; WezTerm
      does draw Sixel and says so.
    """
    requested = (requested or "auto").strip().lower()
    if is_web(environ) or not interactive:
        return "halfblock"
    if requested not in CHOICES:
        return "halfblock"
    if requested != "auto":
        return requested
    if environ.get("TMUX") or environ.get("STY"):
        return "halfblock"
    term, program = environ.get("TERM", ""), environ.get("TERM_PROGRAM", "")
    if environ.get("KITTY_WINDOW_ID") or term in ("xterm-kitty", "xterm-ghostty") or program == "ghostty":
        return "kitty"
    return "probe"


def prepare(environ: MutableMapping[str, str] | None = None) -> str:
    """Pick the renderer for this terminal and load textual-image if it is needed.

    Call once, before Textual starts (and before the app is built: Kitty may
    set ``COLORTERM``). Returns ``"halfblock"``, ``"kitty"`` or ``"sixel"``.
    """
    environ = os.environ if environ is None else environ
    renderer = choose(environ.get(ENV_VAR), environ, interactive=_interactive())
    if renderer == "kitty" and not _full_colour(environ):
        renderer = "halfblock"
    if renderer == "halfblock":
        return renderer
    # A terminal that answers late makes textual-image log a warning with a traceback; with no
    # handler set up, Python would print it on the terminal, where it stays after the app quits.
    library_log = logging.getLogger("textual_image")
    if not library_log.handlers:
        library_log.addHandler(logging.NullHandler())
    try:
        __import__(_LIBRARY)  # the terminal is queried here
        from textual_image.renderable import Image, SixelImage
    except Exception:  # noqa: BLE001 - not installed, or the terminal would not answer: half-blocks
        return "halfblock"
    finally:
        _drop_unread_input()
    if renderer == "probe":
        return "sixel" if Image is SixelImage else "halfblock"
    return renderer


def usable(renderer: str | None) -> str:
    """``renderer`` if it can be drawn now, else ``"halfblock"`` (textual-image never loaded)."""
    if renderer in ("kitty", "sixel") and _LIBRARY in sys.modules:
        return renderer
    return "halfblock"


def cell_pixels() -> tuple[int, int]:
    """The terminal's cell size in pixels, as textual-image measured it (width, height)."""
    if _LIBRARY not in sys.modules:
        return DEFAULT_CELL
    try:
        from textual_image._terminal import get_cell_size  # cached: no query after the first
        width, height = get_cell_size()
    except Exception:  # noqa: BLE001 - a private helper; its absence costs only the aspect ratio
        return DEFAULT_CELL
    return (width, height) if width > 0 and height > 0 else DEFAULT_CELL


def picture_widget(renderer: str, picture: Any) -> Widget:
    """A textual-image widget drawing the PIL image ``picture`` with ``renderer`` ("kitty" or "sixel")."""
    from textual_image.widget import SixelImage, TGPImage

    return (TGPImage if renderer == "kitty" else SixelImage)(picture)


def _full_colour(environ: MutableMapping[str, str]) -> bool:
    """Make sure Textual writes 24-bit colour; False where that is ruled out.

    A Kitty placeholder cell names its image by its foreground colour, so a
    colour rounded to the 256-colour palette shows nothing (or another image).
    kitty and Ghostty take 24-bit colour, but Rich picks 256 colours from
    ``TERM=xterm-kitty`` alone, and ``ssh`` does not pass ``COLORTERM`` on.
    """
    if "NO_COLOR" in environ or environ.get("TEXTUAL_COLOR_SYSTEM", "auto") not in ("auto", "truecolor"):
        return False
    if environ.get("COLORTERM", "").lower() not in ("truecolor", "24bit"):
        environ["COLORTERM"] = "truecolor"  # read by the app's console when the app is built
    return True


def _interactive() -> bool:
    streams = (sys.__stdin__, sys.__stdout__)
    return all(stream is not None and stream.isatty() for stream in streams)


def _drop_unread_input() -> None:
    """Throw away whatever the terminal has answered that nobody read.

    A reply that comes after textual-image stopped waiting (0.1 s; a slow SSH
    link) would otherwise reach Textual as typed keys. One that comes later
    still is not caught here; ``DSVL_IMAGES=halfblock`` asks nothing at all.
    """
    try:
        import termios
    except ImportError:  # Windows
        return
    if sys.__stdin__ is None:  # no terminal (pythonw, a closed stdin)
        return
    try:
        termios.tcflush(sys.__stdin__.fileno(), termios.TCIFLUSH)
    except (AttributeError, OSError, ValueError, termios.error):
        pass
