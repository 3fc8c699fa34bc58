"""Request signatures: lowercase hex HMAC-SHA256 of the raw body bytes."""

from __future__ import annotations

import hashlib
import hmac

from consumer.errors import Unauthorized

SIGNATURE_ATTRIBUTE = "signature"


def sign(body: bytes, token: str) -> str:
    """The signature AutoBio attaches as the ``signature`` message attribute."""
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, token: str, *retiring: str) -> None:
    """Raise :class:`Unauthorized` unless `signature` is right for `body`.

    `retiring` tokens (``AUTH_TOKEN_PREVIOUS`` during a rotation) are accepted
    too, so producers can switch to the new token without a gap. Each
    comparison takes constant time so the signature cannot be guessed byte by
    byte.
    """
    if not signature:
        raise Unauthorized("the request carries no signature attribute")
    given = signature.encode("utf-8", "replace")
    for key in (token, *retiring):
        if key and hmac.compare_digest(given, sign(body, key).encode()):
            return
    raise Unauthorized("the request's signature does not match its body")
