"""Image loading and preprocessing, exactly as upstream DeepSeek-VL does it.

``load_image`` turns a path or a PIL image into a plain RGB picture and turns
every way that can fail into one ``ImageError`` with a one-line message.
``ImagePreprocessor`` then reproduces upstream's ``VLMImageProcessor``
(resize the long side to ``image_size``, pad to a square with the mean colour,
rescale, normalize) so the vision tower sees the very tensors it was trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .files import NotRegularFileError, open_regular, shown_path
from .image_limits import FORMAT_NAMES, MAX_IMAGE_PIXELS, guard_pillow, open_picture  # light: previews use them
from .spec import MAX_IMAGE_SIZE
from .types import EncodedImage

if TYPE_CHECKING:  # torch only where a tensor is made: checking a picture (load_image) in a thin
    import torch  # client, the app of `dsvl-chat --endpoint` or `dsvl-chat web`, must not load it

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _reason(exc: BaseException) -> str:
    """An exception's text squeezed onto one line (PIL messages can span lines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_size(img: Image.Image, name: str) -> None:
    """Reject empty and oversized pictures from the header, before decoding."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"image is empty ({width}x{height} pixels): {name} — attach a picture")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"image is too large: {name} is {width}x{height} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} — scale it down and attach it again"
        )


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; always returns a new, in-memory image."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - orientation is optional metadata
        # A picture whose EXIF block is unreadable is still a picture: show it as stored.
        return img.copy()


def _deep_to_rgb(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale to 8-bit RGB by scaling, not clipping.

    PIL's own ``convert`` clips these to 0..255, so a mid-grey 16-bit PNG
    (32768) comes out pure white.
    """
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        finite = a[np.isfinite(a)]
        top = 1.0 if finite.size == 0 or finite.max() <= 1.0 else 255.0  # 0..1 floats or 0..255 floats
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=top, neginf=0.0), 0.0, top) * (255.0 / top)
    elif img.mode.startswith("I;16"):
        a = a / 257.0  # 0..65535 -> 0..255 (65535 / 257 == 255)
    else:  # "I" (32-bit signed): guess the real bit depth from the values present.
        peak = a.max()
        if peak > 65535:
            a = a / peak * 255.0
        elif peak > 255:  # a 16-bit picture stored in 32 bits (older Pillow, TIFF)
            a = a / 257.0
    grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB. May return ``img`` itself when it is RGB already."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        return _deep_to_rgb(img)
    if mode == "La":  # premultiplied; PIL has no La -> RGBA conversion, but has RGBa -> RGBA
        lum, alpha = img.split()
        img = Image.merge("RGBa", (lum, lum, lum, alpha))
    palette_alpha = mode == "P" and img.palette is not None and "A" in img.palette.mode
    if img.mode in _ALPHA_MODES or "transparency" in img.info or palette_alpha:
        # A transparent pixel has no colour of its own; composite onto white,
        # which is what image viewers and browsers show behind it.
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, HSV, LAB, RGBX ...


def _from_pil(image: Image.Image) -> Image.Image:
    """Copy of a caller's PIL image in RGB; the caller's image is left as it was."""
    name = shown_path(getattr(image, "filename", "") or "<in-memory image>")
    _check_size(image, name)
    try:
        # copy() first: everything after works on our copy. An animated image
        # is used at the frame the caller left it on (seeking would change it).
        return _to_rgb(_orient(image.copy()))
    except Exception as exc:  # noqa: BLE001 - a lazily opened image may fail to decode here
        raise ImageError(f"cannot decode image {name}: {_reason(exc)} — re-save it and try again") from exc


def load_image(source) -> Image.Image:
    """Load ``source`` (a path, a PIL image or an image file's bytes) as a new RGB ``PIL.Image``.

    EXIF orientation is applied, animated files give their first frame, and
    transparency is composited onto white. Bad input raises ``ImageError``.
    """
    guard_pillow()  # Pillow's own limit is ours, and its warnings are errors or silent (see image_limits)
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, EncodedImage):
        path, name = None, shown_path(source.name)
    elif isinstance(source, (str, os.PathLike)):
        path = os.path.expanduser(os.fsdecode(os.fspath(source)))
        name = shown_path(path)
        if os.path.isdir(path):  # checked first: on Windows opening a folder reads as "permission denied"
            raise ImageError(f"image path is a folder, not a file: {name} — choose an image file")
    else:
        raise TypeError(f"load_image expects a path, a PIL image or an EncodedImage, not {type(source).__name__}")
    too_large = "image is too large: {} ({}) — scale it down and attach it again"
    with contextlib.ExitStack() as stack:
        try:
            # Only a regular file, opened without blocking: a FIFO or a device would hang the caller.
            handle = io.BytesIO(source.data) if path is None else stack.enter_context(open_regular(path))
            img = open_picture(handle)  # reads the header only, in a format whose header gives the real size
        except NotRegularFileError as exc:
            raise ImageError(f"image path is {exc.kind}, not a regular file: {name} — choose an image file") from exc
        except FileNotFoundError as exc:
            raise ImageError(f"image not found: {name} — check the path") from exc
        except IsADirectoryError as exc:
            raise ImageError(f"image path is a folder, not a file: {name} — choose an image file") from exc
        except PermissionError as exc:
            raise ImageError(f"cannot read image (permission denied): {name} — check its permissions") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(
                f"not an image file (or not a format this app reads): {name} — use a {FORMAT_NAMES}"
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(too_large.format(name, _reason(exc))) from exc
        except Exception as exc:  # noqa: BLE001 - OS errors and PIL plugin errors of every type
            raise ImageError(f"cannot open image {name}: {_reason(exc)} — check the file") from exc
        with img:
            _check_size(img, name)
            try:
                img.seek(0)  # animated GIF/APNG/WebP: the first frame
                # PIL decodes lazily: load() here, so a truncated file fails inside this try.
                img.load()
                return _to_rgb(_orient(img))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageError(too_large.format(name, _reason(exc))) from exc
            except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError...
                raise ImageError(
                    f"image is truncated or corrupt: {name} ({_reason(exc)}) — re-save or re-download it"
                ) from exc


def image_key(image: Image.Image) -> str:
    """sha256 of an image's size and RGB pixels: the same picture gives the same
    key whatever file (or format) it came from. Used to cache vision features."""
    rgb = image if image.mode == "RGB" else _to_rgb(image)
    digest = hashlib.sha256(f"rgb:{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImagePreprocessor:
    """Upstream DeepSeek-VL ``VLMImageProcessor``, reproduced exactly."""

    image_size: int
    min_size: int = 14
    image_mean: tuple[float, float, float] | None = CLIP_MEAN
    image_std: tuple[float, float, float] | None = CLIP_STD
    rescale_factor: float = 1 / 255
    do_normalize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(
                f"image_size must be a positive integer, got {self.image_size!r} — check preprocessor_config.json"
            )
        # Every picture is resized to image_size a side: a crafted size would allocate without bound.
        if self.image_size > MAX_IMAGE_SIZE or not 0 <= self.min_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size {self.image_size} and min_size {self.min_size} must lie within 1..{MAX_IMAGE_SIZE}"
                " — check preprocessor_config.json"
            )
        if self.do_normalize and (self.image_mean is None or self.image_std is None):
            raise ValueError("do_normalize needs image_mean and image_std — check preprocessor_config.json")

    @classmethod
    def from_config(cls, cfg: dict) -> ImagePreprocessor:
        """Build from a parsed ``preprocessor_config.json``; unknown keys are ignored.

        The file's ``background_color`` is ignored on purpose: upstream derives
        the padding colour from ``image_mean``.
        """
        if "image_size" not in cfg:
            raise ValueError("preprocessor config has no image_size — check preprocessor_config.json")

        def triple(key: str, default):
            value = cfg.get(key, default)
            if value is None:
                return None
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise ValueError(f"preprocessor config {key} must be 3 numbers, got {value!r} — check the file")
            return tuple(float(v) for v in value)

        return cls(
            image_size=cfg["image_size"],
            min_size=int(cfg.get("min_size", 14)),
            image_mean=triple("image_mean", CLIP_MEAN),
            image_std=triple("image_std", CLIP_STD),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
        )

    @property
    def background_color(self) -> tuple[int, int, int]:
        """Padding colour: the mean colour in 0..255 (truncated, as upstream)."""
        if self.image_mean is None:
            return (127, 127, 127)
        red, green, blue = self.image_mean
        return (int(red * 255), int(green * 255), int(blue * 255))

    def resize_and_pad(self, image: Image.Image) -> Image.Image:
        """Resize the long side to image_size (bicubic), then pad to a centred square."""
        width, height = image.size
        max_size = max(width, height)
        # int() truncation and a per-side floor of min_size, exactly as upstream.
        h = max(int(height / max_size * self.image_size), self.min_size)
        w = max(int(width / max_size * self.image_size), self.min_size)
        # Upstream calls torchvision's resize(BICUBIC, antialias=True) on the PIL
        # image, which is PIL's own bicubic resize.
        img = image.resize((w, h), Image.Resampling.BICUBIC)
        if w == h:
            return img
        side = max(w, h)  # upstream's expand2square: a square of the longer side
        square = Image.new(img.mode, (side, side), self.background_color)
        square.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
        return square

    def __call__(self, image) -> torch.Tensor:
        """Anything ``load_image`` accepts to a float32 tensor [3, image_size, image_size]."""
        import torch

        img = self.resize_and_pad(load_image(image))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())
        # Same arithmetic as upstream (transformers' rescale/normalize): rescale in
        # float64 then cast to float32; normalize in float32 with float32 mean/std.
        x = (x.to(torch.float64) * self.rescale_factor).to(torch.float32)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
            x = (x - mean) / std
        return x
