"""A terminal preview of an attached image: half-block cells, or Kitty/Sixel graphics.

Half-blocks: each cell shows two pixels stacked, the upper one as the
foreground colour of "▀" and the lower one as its background. That needs
nothing from the terminal but colours, so it works everywhere, over SSH and
inside tmux; on a 256-colour terminal Textual maps the colours to the nearest
palette entries. Where ``run_tui`` found Kitty graphics or Sixel (see
``image_protocols``), the same downscaled picture is handed to a textual-image
widget placed over the image rows instead. The image is decoded and
downscaled in a thread worker; the widget shows its name until it is ready.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from dsvl_tui.core.conversation import Attachment
from dsvl_tui.core.text import printable
from dsvl_tui.tui import image_protocols, thumbnail
from engine.image_limits import open_picture

UPPER_HALF = "\u2580"


RGB = tuple[int, int, int]


def half_block_rows(image, max_width: int, max_height: int) -> list[list[tuple[RGB, RGB]]]:
    """Downscale a PIL ``image`` to at most ``max_width`` x ``max_height`` cells.

    Returns rows of cells, each cell ``(upper_rgb, lower_rgb)``.
    """
    from PIL import Image

    image = _upright_rgb(image)
    width, height = image.size
    scale = min(max_width / width, (2 * max_height) / height, 1.0)
    cols = max(1, round(width * scale))
    pixel_rows = max(2, round(height * scale))
    pixel_rows += pixel_rows % 2
    small = image.resize((cols, pixel_rows), Image.Resampling.BOX if scale < 1 else Image.Resampling.NEAREST)
    pixels = small.load()
    return [
        [(pixels[x, y], pixels[x, y + 1]) for x in range(cols)]
        for y in range(0, pixel_rows, 2)
    ]


def picture_for_cells(image, max_width: int, max_height: int, cell: tuple[int, int]):
    """Downscale a PIL ``image`` to fit ``max_width`` x ``max_height`` cells of ``cell`` pixels.

    Returns ``(picture, (columns, rows))``: an RGB image never larger than the
    original, and the cells it covers. This picture is all that Kitty or Sixel
    output is ever made from.
    """
    from PIL import Image

    image = _upright_rgb(image)
    width, height = image.size
    cell_width, cell_height = cell
    scale = min(max_width * cell_width / width, max_height * cell_height / height, 1.0)
    columns = max(1, min(max_width, round(width * scale / cell_width)))
    rows = max(1, min(max_height, round(height * scale / cell_height)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX) if size != image.size else image, (columns, rows)


def _upright_rgb(image):
    """``image`` turned as its EXIF says, transparency laid on black, in RGB."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        backdrop = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(backdrop, image)
    return image.convert("RGB")


@contextmanager
def _open(attachment: Attachment) -> Iterator[Any]:
    """The attachment's picture, opened (header read, nothing decoded) the engine's way: ``open_picture``."""
    # The checked bytes, as the model gets them: never a file changed or swapped since it was attached.
    with open_picture(io.BytesIO(attachment.checked_bytes())) as image:
        image.draft("RGB", (256, 256))  # JPEG: decode at a reduced size, much faster
        yield image


class ImagePreview(Widget):
    """A preview of one image with its name underneath.

    ``renderer`` is ``"halfblock"``, ``"kitty"`` or ``"sixel"``; left out, the
    app's ``image_renderer`` is used (half-blocks when it has none). Kitty and
    Sixel fall back to half-blocks unless ``run_tui`` loaded textual-image.
    """

    DEFAULT_CSS = """
    ImagePreview {
        width: auto;
        height: auto;
        margin: 0 1 0 0;
        color: $text-muted;
    }
    ImagePreview.-failed {
        color: $error;
    }
    """

    @dataclass
    class Decoded(Message):
        """Cells are ready (posted by the decoding worker to the widget itself)."""

        rows: list

    @dataclass
    class Downscaled(Message):
        """A picture for Kitty or Sixel is ready, covering ``columns`` x ``rows`` cells."""

        picture: Any
        columns: int
        rows: int

    @dataclass
    class Failed(Message):
        problem: str

    def __init__(self, attachment: Attachment, *, max_width: int = 24, max_height: int = 8,
                 renderer: str | None = None, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.attachment = attachment
        self.max_width = max_width
        self.max_height = max_height
        self.renderer = renderer
        self._strips: list[Strip] = []
        self._picture_size: Size | None = None  # cells under the Kitty/Sixel picture widget
        self._caption = printable(attachment.label)
        if attachment.missing:
            self._caption = f"[missing] {self._caption}"
            self.add_class("-failed")

    def on_mount(self) -> None:
        requested = self.renderer or getattr(self.app, "image_renderer", "halfblock")
        self.renderer = image_protocols.usable(requested)
        if not self.attachment.missing:
            self._decode(self.renderer, image_protocols.cell_pixels())

    @work(thread=True, exclusive=True, group="image-preview", exit_on_error=False)
    def _decode(self, renderer: str, cell: tuple[int, int]) -> None:
        try:
            with _open(self.attachment) as opened:
                # Decoded no larger than it is shown (about twice the pixels), within the engine's limit.
                shown = (self.max_width, 2 * self.max_height) if renderer == "halfblock" else \
                    (self.max_width * cell[0], self.max_height * cell[1])
                image = thumbnail.reduced(opened, shown)
                message: Message
                if renderer == "halfblock":
                    message = self.Decoded(half_block_rows(image, self.max_width, self.max_height))
                else:
                    picture, (columns, rows) = picture_for_cells(image, self.max_width, self.max_height, cell)
                    message = self.Downscaled(picture, columns, rows)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is shown, never raised
            bomb = isinstance(exc, thumbnail.PictureTooLarge) or type(exc).__name__.startswith("DecompressionBomb")
            self.post_message(self.Failed("too large" if bomb else "unreadable"))
        else:
            self.post_message(message)

    def on_image_preview_decoded(self, message: Decoded) -> None:
        message.stop()
        self._strips = [
            Strip([Segment(UPPER_HALF, Style.from_color(_colour(top), _colour(bottom))) for top, bottom in row])
            for row in message.rows
        ]
        self.refresh(layout=True)

    async def on_image_preview_downscaled(self, message: Downscaled) -> None:
        message.stop()
        assert self.renderer is not None  # on_mount chose it before starting the worker that posts this
        picture = image_protocols.picture_widget(self.renderer, message.picture)
        picture.styles.width, picture.styles.height = message.columns, message.rows
        self._picture_size = Size(message.columns, message.rows)
        await self.mount(picture)
        self.refresh(layout=True)

    def on_image_preview_failed(self, message: Failed) -> None:
        message.stop()
        self._caption = f"[{message.problem}] {self._caption}"
        self.add_class("-failed")
        self.refresh(layout=True)

    @property
    def has_cells(self) -> bool:
        return bool(self._strips) or self._picture_size is not None

    @property
    def _image_size(self) -> Size:
        if self._picture_size is not None:
            return self._picture_size
        return Size(self._strips[0].cell_length if self._strips else 0, len(self._strips))

    def get_content_width(self, container: Size, viewport: Size) -> int:
        image_width = self._image_size.width
        return max(image_width, min(cell_len(self._caption), max(self.max_width, image_width)))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._image_size.height + 1

    def render_line(self, y: int) -> Strip:
        # Kitty/Sixel: the picture widget (a child, laid out at the top) covers the image rows.
        image_height = self._image_size.height
        if y < len(self._strips):
            return self._strips[y]
        if y == image_height:
            width = self.size.width
            caption = self._caption
            if cell_len(caption) > width:
                caption = set_cell_size(caption, max(width - 1, 0)) + "\u2026"
            return Strip([Segment(caption, self.rich_style)]).adjust_cell_length(width, self.rich_style)
        return Strip.blank(self.size.width, self.rich_style)


def _colour(rgb):
    from rich.color import Color

    return Color.from_rgb(*rgb[:3])
