"""Sample input pictures drawn in code, for the demo and the sandbox: an avatar and a photo."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def avatar(size: int = 256) -> bytes:
    """A cartoon face on a coloured disc, as a PNG with a transparent corner area."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / 256
    draw.ellipse((8 * s, 8 * s, 248 * s, 248 * s), fill=(120, 170, 220, 255))
    draw.ellipse((58 * s, 40 * s, 198 * s, 200 * s), fill=(240, 200, 170, 255))
    draw.pieslice((52 * s, 28 * s, 204 * s, 130 * s), 180, 360, fill=(90, 60, 40, 255))
    for x in (95, 161):
        draw.ellipse(((x - 9) * s, 105 * s, (x + 9) * s, 123 * s), fill=(40, 40, 60, 255))
    draw.arc(
        (92 * s, 130 * s, 164 * s, 175 * s),
        20,
        160,
        fill=(160, 60, 60, 255),
        width=max(1, int(5 * s)),
    )
    return _encode(image, "PNG")


def photo(width: int = 384, height: int = 512, fmt: str = "JPEG") -> bytes:
    """A person in front of hills under an evening sky, as a JPEG (or `fmt`)."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line((0, y, width, y), fill=(int(250 - 120 * t), int(170 - 60 * t), int(120 + 80 * t)))
    draw.ellipse((-width // 2, int(height * 0.62), width, int(height * 1.3)), fill=(70, 110, 70))
    draw.ellipse(
        (width // 3, int(height * 0.66), int(width * 1.6), int(height * 1.4)), fill=(50, 90, 60)
    )
    cx = width // 2
    draw.rounded_rectangle(
        (cx - 70, int(height * 0.52), cx + 70, height + 20), radius=40, fill=(60, 70, 120)
    )
    draw.ellipse((cx - 48, int(height * 0.30), cx + 48, int(height * 0.52)), fill=(235, 195, 165))
    draw.pieslice(
        (cx - 54, int(height * 0.27), cx + 54, int(height * 0.42)), 180, 360, fill=(50, 35, 30)
    )
    return _encode(image, fmt)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()
