"""What ``app.DsvlApp`` hands out of the app: text to the clipboard, screenshots to a file or the browser.

Both override Textual's own (``copy_to_clipboard``, ``deliver_screenshot``): the clipboard goes through
the app's one OSC 52 path (``clipboard.copy``, tmux-aware) and says how it went; a screenshot in a
terminal is saved in the data folder, not in a ``~/Downloads`` a server may not have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsvl_tui.core.text import error_line
from dsvl_tui.storage import atomic
from dsvl_tui.tui import clipboard

if TYPE_CHECKING:
    from textual.app import App

    _AppBase = App[int]
else:
    _AppBase = object


class Delivery(_AppBase):
    """A mixin of ``DsvlApp``: its overrides of Textual's clipboard and screenshot delivery."""

    def put_on_clipboard(self, text: str) -> None:
        """The one clipboard path (``clipboard.copy``: tmux-aware OSC 52); raises ``ClipboardError``."""
        self._clipboard = text  # Textual's own copy, which pasting inside the app uses
        clipboard.copy(text, self._write_to_terminal)

    def copy_to_clipboard(self, text: str) -> None:
        """Textual's copy keys (a selection, the input box) and a click on a code block: say how it went."""
        try:
            self.put_on_clipboard(text)
        except clipboard.ClipboardError as exc:
            self.notify(str(exc), severity="error")
        else:
            lines = text.count("\n") + 1
            self.notify(f"copied {lines} lines ({len(text):,} characters)" if lines > 1
                        else f"copied {len(text):,} characters", timeout=3)

    def _write_to_terminal(self, sequence: str) -> None:
        if self._driver is not None:
            self._driver.write(sequence)

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        """Ctrl+P → Screenshot. In a terminal the SVG goes into the data folder's ``screenshots/`` and a toast
        says where (Textual's default, ``~/Downloads``, is often missing on a server: "Failed to save
        screenshot"); in a browser it is a download, as Textual makes it."""
        if self.is_web or path is not None:
            return super().deliver_screenshot(filename, path, time_format)
        from textual._files import generate_datetime_filename

        from dsvl_tui.storage.paths import data_dir

        target = data_dir() / "screenshots" / (filename or generate_datetime_filename(self.title, ".svg", time_format))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic.atomic_write_bytes(target, self.export_screenshot().encode())
        except OSError as exc:
            self.notify(f"screenshot not saved: {error_line(exc)}", title="Screenshot", severity="error")
            return None
        self.notify(f"saved to {target}", title="Screenshot")
        return None
