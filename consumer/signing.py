"""Request signatures: lowercase hex HMAC-SHA256 of the raw body bytes."""

from __future__ import annotations

import hashlib
import hmac

from consumer.errors import Unauthorized

SIGNATURE_ATTRIBUTE = "signature"


def sign(body: bytes, token: str) -> str:
    """The signature AutoBio attaches as the ``signature`` message attribute."""
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, token: str) -> None:
    """Raise :class:`Unauthorized` unless `signature` is right for `body`.

    The comparison takes constant time so the signature cannot be guessed
    byte by byte.
    """
    if not signature:
        raise Unauthorized("the request carries no signature attribute")
    if not hmac.compare_digest(signature.encode("utf-8", "replace"), sign(body, token).encode()):
        raise Unauthorized("the request's signature does not match its body")
