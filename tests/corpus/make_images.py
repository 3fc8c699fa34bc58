"""Write the hostile-image corpus into ``tests/corpus/images/``.

Run ``.venv/bin/python -m tests.corpus.make_images`` to regenerate; the outputs
are committed so the tests do not depend on the encoder versions installed.
Every file stays small on disk: the decompression bombs are either highly
compressible pixel data or headers that lie about their size. What each file
must produce is recorded in ``tests/corpus/manifest.json``.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

IMAGES_DIR = Path(__file__).with_name("images")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _noise(mode: str, size: tuple[int, int], seed: int = 7) -> Image.Image:
    """Deterministic noise: it compresses badly, so truncation hits pixel data."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * bands))
    return Image.frombytes(mode, size, data)


def _gradient(size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata(
        [(x * 4 % 256, y * 5 % 256, (x + y) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    return image


def _with_alpha() -> Image.Image:
    """The gradient over a varying alpha channel, so encoders keep the alpha."""
    image = _gradient().convert("RGBA")
    image.putalpha(_gradient().convert("L"))
    return image


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _raw_png(width: int, height: int, depth: int, colour: int, rows: bytes) -> bytes:
    """A PNG written by hand, so headers can say what PIL would never write."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


def png_bomb() -> bytes:
    """48 megapixels (over the 40 M limit) of 1-bit zeros: a few KiB on disk."""
    width, height = 8000, 6000
    row = b"\x00" + b"\x00" * (width // 8)
    return _raw_png(width, height, 1, 0, row * height)


def png_header_bomb() -> bytes:
    """An IHDR claiming 100000 x 100000 pixels over a one-row IDAT."""
    return _raw_png(100_000, 100_000, 8, 2, b"\x00" + b"\x00" * 30)


def png_16bit_rgb() -> bytes:
    """48-bit RGB, which PIL reads but never writes."""
    width, height = 16, 8
    row = b"\x00" + b"".join(struct.pack(">HHH", x * 4000, 30000, 65535) for x in range(width))
    return _raw_png(width, height, 16, 2, row * height)


def png_16bit_gray() -> bytes:
    """16-bit greyscale (PIL mode I;16)."""
    image = Image.new("I;16", (16, 8))
    image.putdata([x * 4000 for _y in range(8) for x in range(16)])
    return _encode(image, "PNG")


def png_bad_crc() -> bytes:
    """A valid PNG whose IHDR checksum is wrong."""
    data = bytearray(_encode(_gradient(), "PNG"))
    crc_at = len(PNG_SIGNATURE) + 8 + 13  # length, type, 13-byte IHDR payload
    data[crc_at] ^= 0xFF
    return bytes(data)


def png_header_only() -> bytes:
    """Signature and IHDR, then nothing: no pixel data at all."""
    data = _encode(_gradient(), "PNG")
    return data[: len(PNG_SIGNATURE) + 25]


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    """The first part of a file, as an interrupted upload leaves it."""
    return data[: int(len(data) * keep)]


def jpeg_header_bomb() -> bytes:
    """A small baseline JPEG whose SOF0 header claims 65500 x 65500 pixels."""
    data = bytearray(_encode(_gradient(), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    # SOF0 layout: marker(2) length(2) precision(1) height(2) width(2).
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def webp_header_bomb() -> bytes:
    """A lossless WebP whose VP8L header claims 16384 x 16384 pixels."""
    data = bytearray(_encode(_gradient((16, 16)), "WEBP", lossless=True))
    at = data.index(b"VP8L") + 8
    if data[at] != 0x2F:
        raise RuntimeError("unexpected VP8L signature")
    bits = int.from_bytes(data[at + 1 : at + 5], "little")
    # 14 bits width-1, 14 bits height-1, then alpha and version bits kept as they were.
    bits = (bits & ~((1 << 28) - 1)) | (16383 << 14) | 16383
    data[at + 1 : at + 5] = bits.to_bytes(4, "little")
    return bytes(data)


def webp_vp8x_bomb(width: int = 16384, height: int = 16384) -> bytes:
    """An animated WebP whose VP8X header claims a `width` x `height` canvas."""
    first, *rest = _frames()
    data = bytearray(_encode(first, "WEBP", save_all=True, append_images=rest, duration=100))
    at = data.index(b"VP8X") + 12  # chunk id(4) size(4) flags(4): then width-1, height-1
    data[at : at + 6] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


def png_header_shape(width: int, height: int) -> bytes:
    """An IHDR claiming `width` x `height` over one short row of pixel data."""
    return _raw_png(width, height, 8, 2, b"\x00" + b"\x00" * 30)


def jpeg_header_shape(width: int, height: int) -> bytes:
    """A small baseline JPEG whose SOF0 header claims `width` x `height`."""
    data = bytearray(_encode(_gradient(), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def shape(size: tuple[int, int], fmt: str, **options: object) -> bytes:
    """Flat bands in `fmt` at `size`: any shape, a few hundred bytes."""
    image = Image.new("RGB", size, (200, 190, 180))
    image.paste((40, 60, 80), (0, 0, size[0] // 2, size[1] // 2))
    return _encode(image, fmt, **options)


def oriented(size: tuple[int, int], orientation: int) -> bytes:
    """A JPEG stored at `size` with EXIF `orientation`."""
    image = Image.new("RGB", size, (90, 120, 150))
    exif = image.getexif()
    exif[0x0112] = orientation
    return _encode(image, "JPEG", quality=80, exif=exif.tobytes())


def animated_shape(size: tuple[int, int]) -> bytes:
    """A three-frame animated WebP of `size`."""
    first, *rest = (Image.new("RGB", size, (60 * i, 90, 120)) for i in range(3))
    return _encode(first, "WEBP", save_all=True, append_images=rest, duration=100, loop=0)


def png_16bit_rgb_shape(width: int, height: int) -> bytes:
    """48-bit RGB at `width` x `height`."""
    row = b"\x00" + struct.pack(">HHH", 1000, 30000, 65535) * width
    return _raw_png(width, height, 16, 2, row * height)


def cmyk_jpeg() -> bytes:
    """CMYK JPEG, as print workflows and some phone editors produce."""
    return _encode(_gradient().convert("CMYK"), "JPEG", quality=85)


def exif_rotated_jpeg() -> bytes:
    """Stored 64 x 32 with EXIF orientation 6 (rotate 90 clockwise): shown 32 x 64."""
    image = _gradient((64, 32))
    exif = image.getexif()
    exif[0x0112] = 6
    return _encode(image, "JPEG", quality=85, exif=exif.tobytes())


def palette_transparent_png() -> bytes:
    """Palette image with a tRNS chunk making index 0 transparent."""
    image = _gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def _frames(count: int = 3) -> list[Image.Image]:
    return [Image.new("RGB", (32, 32), (60 * i, 255 - 60 * i, 90)) for i in range(count)]


def animated(fmt: str) -> bytes:
    """A three-frame animation (APNG, WebP, GIF), multi-frame TIFF or MPO."""
    first, *rest = _frames()
    options: dict[str, object] = {"save_all": True, "append_images": rest}
    if fmt in {"PNG", "WEBP", "GIF"}:
        options.update(duration=100, loop=0)
    return _encode(first, fmt, **options)


def eps_disguised() -> bytes:
    """PostScript: an image format whose PIL plugin would run Ghostscript."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n"
        b"newpath 0 0 moveto 32 32 lineto stroke showpage\n%%EOF\n"
    )


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<rect width="64" height="64" fill="red"/><script>alert(1)</script></svg>\n'
)
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>\n"


def builders() -> dict[str, Callable[[], bytes]]:
    """File name -> how to build it. The manifest says what each must do."""
    noise_jpeg = _encode(_noise("RGB", (96, 96)), "JPEG", quality=90)
    noise_png = _encode(_noise("RGB", (48, 48)), "PNG")
    return {
        "rgb.png": lambda: _encode(_gradient(), "PNG"),
        "rgb.jpg": lambda: _encode(_gradient(), "JPEG", quality=85),
        "progressive.jpg": lambda: _encode(_gradient(), "JPEG", quality=85, progressive=True),
        "rgb.webp": lambda: _encode(_gradient(), "WEBP", quality=80),
        "rgba_lossless.webp": lambda: _encode(_with_alpha(), "WEBP", lossless=True),
        "rgba.png": lambda: _encode(_with_alpha(), "PNG"),
        "grayscale.png": lambda: _encode(_gradient().convert("L"), "PNG"),
        "gray_alpha.png": lambda: _encode(_gradient().convert("LA"), "PNG"),
        "palette_transparency.png": palette_transparent_png,
        "gray16.png": png_16bit_gray,
        "rgb48.png": png_16bit_rgb,
        "cmyk.jpg": cmyk_jpeg,
        "exif_rotated.jpg": exif_rotated_jpeg,
        "animated.png": lambda: animated("PNG"),
        "animated.webp": lambda: animated("WEBP"),
        "multi_picture.mpo": lambda: animated("MPO"),
        "png_named.jpg": lambda: _encode(_gradient(), "PNG"),
        "jpeg_named.webp": lambda: _encode(_gradient(), "JPEG", quality=85),
        "one_pixel.png": lambda: _encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
        "empty.png": lambda: b"",
        "truncated.png": lambda: truncated(noise_png),
        "truncated.jpg": lambda: truncated(noise_jpeg),
        "header_only.png": png_header_only,
        "bad_crc.png": png_bad_crc,
        "bomb_48mp.png": png_bomb,
        "bomb_header.png": png_header_bomb,
        "bomb_header.jpg": jpeg_header_bomb,
        "bomb_header.webp": webp_header_bomb,
        "animated.gif": lambda: animated("GIF"),
        "multi_frame.tiff": lambda: animated("TIFF"),
        "bmp_named.png": lambda: _encode(_gradient(), "BMP"),
        "eps_named.png": eps_disguised,
        "svg_named.png": lambda: SVG,
        "html_named.jpg": lambda: HTML,
        "text_named.webp": lambda: b"just some text, not a picture\n",
        "random_bytes.png": lambda: random.Random(3).randbytes(2048),
        # Shapes: the widest accepted (8:1), and just beyond it, in each format.
        "aspect_8.png": lambda: shape((800, 100), "PNG"),
        "aspect_8_tall.jpg": lambda: shape((100, 800), "JPEG", quality=80),
        "aspect_8.webp": lambda: shape((800, 100), "WEBP", quality=80),
        "aspect_9.png": lambda: shape((900, 100), "PNG"),
        "aspect_9_tall.jpg": lambda: shape((100, 900), "JPEG", quality=80),
        "aspect_9.webp": lambda: shape((900, 100), "WEBP", quality=80),
        "aspect_one_pixel_row.png": lambda: shape((4000, 1), "PNG"),
        "aspect_9_animated.webp": lambda: animated_shape((900, 100)),
        "aspect_8_animated.webp": lambda: animated_shape((800, 100)),
        "aspect_9_rgb48.png": lambda: png_16bit_rgb_shape(900, 100),
        "aspect_9_cmyk.jpg": lambda: _encode(Image.new("CMYK", (100, 900)), "JPEG"),
        "aspect_8_cmyk.jpg": lambda: _encode(Image.new("CMYK", (800, 100)), "JPEG"),
        # Huge declared sizes in tiny files, in pixels and in shape.
        "bomb_header_vp8x.webp": webp_vp8x_bomb,
        "shape_header.png": lambda: png_header_shape(65500, 610),
        "shape_header.jpg": lambda: jpeg_header_shape(65500, 610),
        "shape_header_vp8x.webp": lambda: webp_vp8x_bomb(16383, 1000),
        # EXIF orientations on extreme shapes: the turn happens after the check.
        "aspect_8_exif_6.jpg": lambda: oriented((800, 100), 6),
        "aspect_8_exif_8.jpg": lambda: oriented((800, 100), 8),
        "aspect_8_exif_3.jpg": lambda: oriented((100, 800), 3),
        "aspect_9_exif_6.jpg": lambda: oriented((900, 100), 6),
        "truncated.webp": lambda: truncated(_encode(_noise("RGB", (48, 48)), "WEBP", quality=90)),
    }


def main() -> None:
    """Write every corpus image and print its size."""
    IMAGES_DIR.mkdir(exist_ok=True)
    for name, build in builders().items():
        data = build()
        (IMAGES_DIR / name).write_bytes(data)
        print(f"{len(data):>8}  {name}")


if __name__ == "__main__":
    main()
