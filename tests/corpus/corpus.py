"""The bad-input corpus: request bodies and images, each with its expected outcome.

``manifest.json`` describes every case; this module turns it into bytes. Large
bodies (near and over the 256 KiB limit, deep nesting, huge strings) are built
here from a few numbers in the manifest, so no large file is committed.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from consumer.contract.signing import sign

CORPUS_DIR = Path(__file__).parent
IMAGES_DIR = CORPUS_DIR / "images"
MANIFEST = CORPUS_DIR / "manifest.json"

CORPUS_USER = "corpus-user"
# The key a live consumer verifies signatures with; ``signature`` cases spoil it.
AUTH_TOKEN = "corpus-signing-token-3f9a"
MAX_INPUT_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class RequestCase:
    """One request body and what must become of it."""

    name: str
    why: str
    body: bytes
    expect: str
    expect_live: str
    signature: str | None
    expect_job_id: str | None

    @property
    def text(self) -> str | None:
        """The body as SQS would carry it, or ``None`` when it is not UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return None


@dataclass(frozen=True)
class ImageCase:
    """One input image and what decoding it must give."""

    name: str
    why: str
    data: bytes
    expect: str
    size: tuple[int, int] | None


def _base(kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": name, "kind": kind, "user_id": CORPUS_USER}
    if kind == "memory":
        body["prompt"] = "a lighthouse at dusk"
    return body


def _nested(body: dict[str, Any], spec: dict[str, Any]) -> bytes:
    # Built as text: json.dumps would itself recurse too deeply.
    depth = int(spec["depth"])
    deep = spec["open"] * depth + "0" + spec["close"] * depth
    return _with_raw_field(body, spec["field"], deep)


def _with_raw_field(body: dict[str, Any], field: str, raw: str) -> bytes:
    head = json.dumps({k: v for k, v in body.items() if k != field})
    return (head[:-1] + f', "{field}": {raw}}}').encode()


def _padded(body: dict[str, Any], size: int) -> bytes:
    data = json.dumps(body).encode()
    if len(data) > size:
        raise ValueError(f"body is already {len(data)} bytes, over {size}")
    return data + b" " * (size - len(data))


def _generate(body: dict[str, Any], spec: dict[str, Any]) -> bytes:
    kind = spec["kind"]
    if kind == "repeat":
        for field, (char, count, *prefix) in spec["fields"].items():
            body[field] = "".join(prefix) + char * count
        return json.dumps(body, ensure_ascii=False).encode()
    if kind == "padded":
        return _padded(body, int(spec["size"]))
    if kind == "nested":
        return _nested(body, spec)
    if kind == "raw_field":
        char, count = spec["repeat"]
        return _with_raw_field(body, spec["field"], char * count)
    if kind == "many_keys":
        body.update({f"unknown_{i}": i for i in range(int(spec["count"]))})
        return json.dumps(body).encode()
    if kind == "long_key":
        body["k" * int(spec["length"])] = 1
        return json.dumps(body).encode()
    raise ValueError(f"unknown generator {kind!r}")


def _body(entry: dict[str, Any]) -> bytes:
    if "text" in entry:
        return str(entry["text"]).encode()
    if "hex" in entry:
        return bytes.fromhex(entry["hex"])
    if "value" in entry:
        return json.dumps(entry["value"]).encode()
    body = _base(entry["base"], entry["name"])
    body.update(entry.get("set", {}))
    for field in entry.get("unset", []):
        body.pop(field)
    if "generate" in entry:
        return _generate(body, entry["generate"])
    return json.dumps(body, ensure_ascii=False).encode()


def _expect_live(entry: dict[str, Any]) -> str:
    if "expect_live" in entry:
        return str(entry["expect_live"])
    return "succeeded" if entry["expect"] == "ok" else str(entry["expect"])


@cache
def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


@cache
def request_cases() -> tuple[RequestCase, ...]:
    """Every request case of the manifest, bodies built."""
    return tuple(
        RequestCase(
            name=entry["name"],
            why=entry["why"],
            body=_body(entry),
            expect=entry["expect"],
            expect_live=_expect_live(entry),
            signature=entry.get("signature"),
            expect_job_id=entry.get("expect_job_id"),
        )
        for entry in _manifest()["requests"]
    )


def signature_for(case: RequestCase, token: str = AUTH_TOKEN) -> str | None:
    """The ``signature`` attribute the case is sent with (``None``: no attribute)."""
    right = sign(case.body, token)
    spoiled = {
        None: right,
        "missing": None,
        "other_key": sign(case.body, token + "-other"),
        "uppercase": right.upper(),
        "other_body": sign(case.body + b" ", token),
        "truncated": right[:32],
        "junk": "подпись",
    }
    if case.signature not in spoiled:
        raise ValueError(f"unknown signature spoiler {case.signature!r}")
    return spoiled[case.signature]


def oversize_png(size: int = MAX_INPUT_BYTES + 1) -> bytes:
    """A valid 1x1 PNG padded by a private ancillary chunk to exactly `size` bytes."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    chunks = [
        (b"IHDR", header),
        (b"IDAT", zlib.compress(b"\x00\x10\x20\x30")),
    ]
    fixed = 8 + sum(12 + len(p) for _, p in chunks) + 12 + 12  # + padding chunk + IEND
    chunks.append((b"pdDg", b"\x00" * (size - fixed)))
    chunks.append((b"IEND", b""))
    out = b"\x89PNG\r\n\x1a\n"
    for kind, payload in chunks:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        out += struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
    return out


_GENERATED_IMAGES = {"oversize": oversize_png}


@cache
def image_cases() -> tuple[ImageCase, ...]:
    """Every image case of the manifest, data read or generated."""
    cases = []
    for entry in _manifest()["images"]:
        if "generate" in entry:
            data = _GENERATED_IMAGES[entry["generate"]]()
        else:
            data = (IMAGES_DIR / entry["file"]).read_bytes()
        size = entry.get("size")
        cases.append(
            ImageCase(
                name=entry["file"],
                why=entry["why"],
                data=data,
                expect=entry["expect"],
                size=(int(size[0]), int(size[1])) if size else None,
            )
        )
    return tuple(cases)
