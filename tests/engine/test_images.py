"""Tests for engine.images: loading every kind of picture, and parity with
upstream DeepSeek-VL's VLMImageProcessor. All images are made here by Pillow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import images
from engine.errors import ImageError
from engine.images import ImagePreprocessor, image_key, load_image
from engine.types import EncodedImage

CFG_1B = {
    "background_color": [127, 127, 127], "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "VLMImageProcessor", "image_size": 384, "image_std": [0.5, 0.5, 0.5],
    "min_size": 14, "processor_class": "VLChatProcessor", "rescale_factor": 0.00392156862745098,
}
CFG_7B = {
    "background_color": [127, 127, 127], "do_normalize": False,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "VLMImageProcessor",
    "image_size": 1024, "image_std": [0.26862954, 0.26130258, 0.27577711], "min_size": 14,
    "processor_class": "VLChatProcessor", "rescale_factor": 0.00392156862745098,
}
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def pixels(img: Image.Image) -> list:
    """The top row of an image as a list of RGB tuples."""
    assert img.mode == "RGB"
    return [img.getpixel((x, 0)) for x in range(img.width)]


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def palette_image(mode: str = "P") -> Image.Image:
    """2x1 palette image: index 0 = blue, index 1 = red."""
    img = Image.new(mode, (2, 1))
    img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    return img


# ---------------------------------------------------------------- every mode

def _saved(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_mode_p(tmp_path):
    img = palette_image()
    img.putpixel((1, 0), 1)
    assert pixels(load_image(_saved(tmp_path, img, "p.png"))) == [BLUE, RED]


def test_mode_p_with_transparency(tmp_path):
    img = palette_image()
    img.putpixel((1, 0), 1)
    for name in ("t.png", "t.gif"):
        loaded = load_image(_saved(tmp_path, img, name, transparency=0))
        assert pixels(loaded) == [WHITE, RED]  # transparent index -> white


def test_mode_pa():
    img = palette_image("PA")
    img.putpixel((0, 0), (1, 255))
    img.putpixel((1, 0), (1, 0))
    assert pixels(load_image(img)) == [RED, WHITE]


def test_mode_la(tmp_path):
    img = Image.new("LA", (3, 1))
    for x, px in enumerate([(50, 255), (50, 0), (0, 128)]):
        img.putpixel((x, 0), px)
    got = pixels(load_image(_saved(tmp_path, img, "la.png")))
    assert got[:2] == [(50, 50, 50), WHITE]
    assert all(126 <= c <= 128 for c in got[2])  # half-transparent black over white


def test_mode_la_premultiplied():
    img = Image.merge("La", (Image.new("L", (1, 1), 0), Image.new("L", (1, 1), 0)))
    assert pixels(load_image(img)) == [WHITE]


@pytest.mark.parametrize("mode,value,expected", [("L", 77, 77), ("1", 1, 255), ("1", 0, 0)])
def test_mode_grey(tmp_path, mode, value, expected):
    path = _saved(tmp_path, Image.new(mode, (2, 2), value), f"{mode}.png")
    assert pixels(load_image(path)) == [(expected,) * 3] * 2


def test_16bit_png_mid_grey_is_grey_not_white(tmp_path):
    path = _saved(tmp_path, Image.fromarray(np.full((8, 8), 32768, np.uint16)), "g16.png")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit picture
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3)
    assert (out == 128).all()  # 32768 / 257 = 127.5 -> 128; plain convert("RGB") gives 255


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16bit_endianness(dtype):
    img = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=dtype))
    assert img.mode in ("I;16", "I;16B")
    assert pixels(load_image(img)) == [(0, 0, 0), (100, 100, 100), WHITE]


@pytest.mark.parametrize("values,expected", [
    ([0, 100, 255], [0, 100, 255]),            # 8-bit data stored as 32-bit
    ([0, 32768, 65535], [0, 128, 255]),        # 16-bit data stored as 32-bit
    ([-5, 70000, 140000], [0, 128, 255]),      # wider: scaled by the peak
])
def test_mode_i(values, expected):
    img = Image.fromarray(np.array([values], dtype=np.int32))
    assert img.mode == "I"
    assert pixels(load_image(img)) == [(v,) * 3 for v in expected]


@pytest.mark.parametrize("values,expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),           # 0..1 floats
    ([0.0, 200.0, 300.0], [0, 200, 255]),       # 0..255 floats, clipped
    ([float("nan"), -1.0, 0.25], [0, 0, 64]),   # NaN and negatives -> black
])
def test_mode_f(tmp_path, values, expected):
    img = Image.fromarray(np.array([values], dtype=np.float32))
    assert img.mode == "F"
    assert pixels(load_image(_saved(tmp_path, img, "f.tif"))) == [(v,) * 3 for v in expected]


def test_mode_cmyk(tmp_path):
    path = _saved(tmp_path, Image.new("CMYK", (2, 1), (0, 255, 255, 0)), "c.tif")
    assert pixels(load_image(path)) == [RED, RED]


def test_mode_rgba_and_rgba_premultiplied(tmp_path):
    img = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    img.putpixel((1, 0), (0, 0, 255, 0))
    assert pixels(load_image(_saved(tmp_path, img, "a.png"))) == [RED, WHITE]
    assert pixels(load_image(img.convert("RGBa"))) == [RED, WHITE]


@pytest.mark.parametrize("mode,colour", [("YCbCr", (76, 85, 255)), ("HSV", (0, 255, 255))])
def test_other_colour_spaces(mode, colour):
    r, g, b = pixels(load_image(Image.new(mode, (1, 1), colour)))[0]
    assert r >= 250 and g <= 5 and b <= 5  # both are red


# ------------------------------------------------------- orientation, frames

@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _saved(tmp_path, Image.new("RGB", (40, 20), RED), "r.jpg", exif=exif)
    assert load_image(path).size == (20, 40)
    with Image.open(path) as opened:
        assert load_image(opened).size == (20, 40)
        assert opened.size == (40, 20)  # caller's image untouched


@pytest.mark.parametrize("ext", ["gif", "png", "webp"])
def test_animated_first_frame(tmp_path, ext):
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    path = tmp_path / f"anim.{ext}"
    extra = {"lossless": True} if ext == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 2
    assert set(pixels(load_image(path))) == {RED}


# ------------------------------------------------------------------- errors

def assert_one_line_naming(exc_info, name):
    msg = str(exc_info.value)
    assert name in msg
    assert "\n" not in msg and "\r" not in msg
    assert len(msg.splitlines()) == 1


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated(tmp_path, fmt, ext):
    path = tmp_path / f"cut.{ext}"
    noise(64, 64).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert_one_line_naming(err, "cut." + ext)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\nsecond line\n")
    with pytest.raises(ImageError) as err:
        load_image(str(path))
    assert_one_line_naming(err, "notes.png")


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found") as err:
        load_image(tmp_path / "nowhere.png")
    assert_one_line_naming(err, "nowhere.png")
    (tmp_path / "adir.png").mkdir()
    with pytest.raises(ImageError, match="folder") as err:
        load_image(tmp_path / "adir.png")
    assert_one_line_naming(err, "adir.png")


def test_newline_in_file_name_stays_one_line(tmp_path):
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "bad\nname.png")
    assert_one_line_naming(err, "name.png")


def test_permission_denied(tmp_path, monkeypatch):
    path = _saved(tmp_path, Image.new("RGB", (2, 2)), "locked.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images.Image, "open", denied)  # works even when tests run as root
    with pytest.raises(ImageError, match="permission") as err:
        load_image(path)
    assert_one_line_naming(err, "locked.png")


def test_over_pixel_limit(tmp_path, monkeypatch):
    path = _saved(tmp_path, Image.new("RGB", (20, 20)), "big.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(ImageError, match="too large") as err:
        load_image(path)
    assert_one_line_naming(err, "big.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("RGB", (20, 20)))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 400)
    assert load_image(path).size == (20, 20)


@pytest.mark.parametrize("size", [(12, 12), (20, 20)])  # PIL's warning, then PIL's error
def test_pil_decompression_bomb_becomes_image_error(tmp_path, monkeypatch, size):
    path = _saved(tmp_path, Image.new("RGB", size), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="too large") as err:
        load_image(path)
    assert_one_line_naming(err, "bomb.png")


def test_zero_size_pil_and_wrong_type():
    with pytest.raises(ImageError, match="empty"):
        load_image(Image.new("RGB", (0, 0)))
    with pytest.raises(TypeError):
        load_image(42)


# ------------------------------------------------- caller's image untouched

@pytest.mark.parametrize("img", [
    Image.new("RGB", (30, 10), RED), Image.new("RGBA", (30, 10), (0, 0, 255, 0)),
    palette_image(), Image.fromarray(np.full((4, 6), 40000, np.uint16)),
])
def test_callers_image_not_modified(img):
    before = (img.mode, img.size, img.tobytes(), dict(img.info))
    out = load_image(img)
    ImagePreprocessor(16)(img)
    assert out is not img
    out.paste((1, 2, 3), (0, 0, out.width, out.height))
    assert (img.mode, img.size, img.tobytes(), dict(img.info)) == before


# ------------------------------------------------------- upstream parity

def reference(img: Image.Image, size: int, bg, min_size: int = 14) -> np.ndarray:
    """Upstream's resize + expand2square, written out independently."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    w, h = img.size
    long = max(w, h)
    new = [max(int(h / long * size), min_size), max(int(w / long * size), min_size)]
    out = TF.resize(img, new, interpolation=InterpolationMode.BICUBIC, antialias=True)
    ow, oh = out.size
    side = max(ow, oh)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = bg
    top, left = (side - oh) // 2, (side - ow) // 2
    canvas[top:top + oh, left:left + ow] = np.asarray(out)
    return canvas


@pytest.mark.parametrize("wh,size", [((100, 50), 24), ((50, 100), 24), ((37, 91), 32),
                                     ((300, 300), 64), ((1, 1), 16), ((640, 481), 384), ((500, 9), 32)])
def test_resize_and_pad_matches_torchvision(wh, size):
    pre = ImagePreprocessor.from_config({**CFG_1B, "image_size": size})
    img = noise(*wh, seed=wh[0])
    got = np.asarray(pre.resize_and_pad(img))
    assert got.shape == (size, size, 3)
    np.testing.assert_array_equal(got, reference(img, size, (127, 127, 127)))


@pytest.mark.parametrize("cfg", [CFG_1B, CFG_7B])
def test_call_numerics(cfg):
    pre = ImagePreprocessor.from_config({**cfg, "image_size": 32})
    img = noise(45, 20, seed=3)
    got = pre(img)
    assert got.dtype == torch.float32 and got.shape == (3, 32, 32)
    # transformers' rescale (float64, then float32) and normalize (float32), by hand
    x = (np.asarray(pre.resize_and_pad(img)).transpose(2, 0, 1).astype(np.float64)
         * cfg["rescale_factor"]).astype(np.float32)
    if cfg["do_normalize"]:
        mean = np.array(cfg["image_mean"], np.float32)[:, None, None]
        std = np.array(cfg["image_std"], np.float32)[:, None, None]
        x = (x - mean) / std
    else:
        assert 0.0 <= got.min() and got.max() <= 1.0
    assert torch.equal(got, torch.from_numpy(x))


@pytest.mark.parametrize("wh,axis", [((16, 8), 1), ((8, 16), 2)])
def test_padding_rows_and_centring(wh, axis):
    # min_size=1: with the default 14 the short side (8) would be stretched to 14
    pre = ImagePreprocessor(16, min_size=1, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    x = pre(Image.new("RGB", wh, RED))
    pad_value = (127 / 255 - 0.5) / 0.5
    content = torch.zeros(16, dtype=torch.bool)
    content[4:12] = True  # 8 pixels centred in 16: rows (or columns) 4..11
    lines = x.unbind(axis)
    for i, line in enumerate(lines):
        if content[i]:
            assert torch.allclose(line[0], torch.tensor(1.0)) and torch.allclose(line[1], torch.tensor(-1.0))
        else:
            assert torch.allclose(line, torch.tensor(pad_value))


@pytest.mark.parametrize("wh,rows", [((10000, 10), True), ((10, 10000), False), ((1, 1), None)])
def test_odd_shapes(wh, rows):
    pre = ImagePreprocessor(32, do_normalize=False)
    x = pre(Image.new("RGB", wh, WHITE))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    if rows is None:
        assert torch.all(x == 1.0)
        return
    # the short side is floored at min_size 14: content 14 lines at (32-14)//2 = 9 .. 22
    profile = x[0].mean(dim=1 if rows else 0)
    assert torch.all(profile[9:23] > 0.9)
    pad = torch.tensor(122 / 255)  # CLIP-mean background, int(0.48145466 * 255) = 122
    assert torch.allclose(profile[:9], pad) and torch.allclose(profile[23:], pad)


def test_call_accepts_path(tmp_path):
    path = _saved(tmp_path, noise(20, 10), "n.png")
    pre = ImagePreprocessor(16)
    assert torch.equal(pre(path), pre(str(path)))
    assert torch.equal(pre(path), pre(noise(20, 10)))


# ---------------------------------------------------------------- config

def test_from_config_both_models():
    small = ImagePreprocessor.from_config(CFG_1B)
    assert (small.image_size, small.min_size, small.do_normalize) == (384, 14, True)
    assert small.image_mean == small.image_std == (0.5, 0.5, 0.5)
    assert small.background_color == (127, 127, 127)
    assert small.rescale_factor == pytest.approx(1 / 255)
    big = ImagePreprocessor.from_config(CFG_7B)
    assert (big.image_size, big.do_normalize) == (1024, False)
    assert big.image_mean == images.CLIP_MEAN and big.image_std == images.CLIP_STD
    assert big.background_color == (122, 116, 104)  # from image_mean, not the file's background_color
    no_mean = ImagePreprocessor(8, image_mean=None, image_std=None, do_normalize=False)
    assert no_mean.background_color == (127, 127, 127)
    with pytest.raises(ValueError, match="image_mean"):
        ImagePreprocessor.from_config({**CFG_1B, "image_mean": [0.5, 0.5]})
    with pytest.raises(ValueError, match="do_normalize"):
        ImagePreprocessor(8, image_mean=None)


@pytest.mark.parametrize("bad", [{}, {"image_size": 0}, {"image_size": -3}, {"image_size": "384"},
                                 {"image_size": 38.4}, {"image_size": True}, {"image_size": None}])
def test_from_config_rejects_bad_image_size(bad):
    with pytest.raises(ValueError, match="image_size") as err:
        ImagePreprocessor.from_config({**CFG_1B, **bad} if bad else {"min_size": 14})
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------- image_key

def test_image_key(tmp_path):
    img = noise(7, 5)
    from_file = load_image(_saved(tmp_path, img, "k.png"))
    assert image_key(from_file) == image_key(img.copy()) == image_key(img.convert("RGBA"))
    assert image_key(noise(7, 5, seed=1)) != image_key(img)
    flat = Image.new("RGB", (2, 1), RED)
    assert image_key(flat) != image_key(Image.new("RGB", (1, 2), RED))  # same bytes, other size
    assert len(image_key(img)) == 64


# ------------------------------------------------------------- property

@settings(max_examples=50, deadline=None)
@given(w=st.integers(1, 3000), h=st.integers(1, 3000))
def test_any_size_gives_square_finite_tensor(w, h):
    x = ImagePreprocessor(32)(Image.new("RGB", (w, h), (w % 256, h % 256, 9)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.isfinite(x).all()


# ------------------------------------------------- an image file's bytes in memory

def test_encoded_image_reads_like_the_file_it_came_from(tmp_path):
    path = _saved(tmp_path, noise(30, 20), "p.png")
    from_bytes = load_image(EncodedImage(path.read_bytes(), name="image 1"))
    assert from_bytes.tobytes() == load_image(path).tobytes()


def test_encoded_image_is_refused_like_a_file_naming_itself(tmp_path, monkeypatch):
    path = _saved(tmp_path, noise(64, 64), "p.png")
    with pytest.raises(ImageError, match="truncated or corrupt") as err:
        load_image(EncodedImage(path.read_bytes()[:400], name="image 2"))
    assert_one_line_naming(err, "image 2")
    with pytest.raises(ImageError, match="not an image file") as err:
        load_image(EncodedImage(b"hello\nworld", name="image 3"))
    assert_one_line_naming(err, "image 3")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own bomb check applies to bytes too
    with pytest.raises(ImageError, match="too large"):
        load_image(EncodedImage(path.read_bytes(), name="image 4"))
