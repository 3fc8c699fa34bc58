"""Where the signing tokens come from: the settings, a file, or Secrets Manager.

A token file (``AUTH_TOKEN_FILE``) holds the current token on its first line
and the previous one, if any, on its second; it must be a regular file that
only its owner can read or write (mode 0600 or narrower), since anyone who
reads it can sign requests. A Secrets Manager secret
(``AUTH_TOKEN_SECRET_ID``) holds one token as its string: the version staged
``AWSCURRENT`` is the current token and ``AWSPREVIOUS`` the previous one,
which Secrets Manager keeps after every rotation until the next.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from consumer.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_secretsmanager import SecretsManagerClient

# A token file is a line or two; anything larger is not one.
MAX_TOKEN_FILE_BYTES = 64 * 1024
CURRENT_STAGE = "AWSCURRENT"
PREVIOUS_STAGE = "AWSPREVIOUS"


@dataclass(frozen=True, slots=True)
class Tokens:
    """The tokens a signature may be made with: the current one, and the
    previous one while producers may still sign with it ("" when none)."""

    current: str
    previous: str = ""

    def accepted(self) -> tuple[str, ...]:
        """The tokens to try, the current one first."""
        return tuple(token for token in (self.current, self.previous) if token)


def read_token_file(path: str) -> Tokens:
    """The tokens in the file at `path`; :class:`ConfigError` naming
    ``AUTH_TOKEN_FILE`` when it is missing, unreadable, open to others or empty."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"AUTH_TOKEN_FILE={path}: not a regular file")
            if info.st_mode & 0o077:
                mode = stat.S_IMODE(info.st_mode)
                raise ConfigError(
                    f"AUTH_TOKEN_FILE={path}: mode {mode:04o} lets others read or change it;"
                    " make it 0600"
                )
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"AUTH_TOKEN_FILE={path}: cannot be read ({error.strerror})") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"AUTH_TOKEN_FILE={path}: larger than a token file can be")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"AUTH_TOKEN_FILE={path}: not UTF-8 text") from None
    current = lines[0].strip() if lines else ""
    if not current:
        raise ConfigError(f"AUTH_TOKEN_FILE={path}: its first line (the current token) is empty")
    previous = lines[1].strip() if len(lines) > 1 else ""
    return Tokens(current, previous)


async def read_secret(client: SecretsManagerClient, secret_id: str) -> Tokens:
    """The secret's ``AWSCURRENT`` and ``AWSPREVIOUS`` strings.

    A secret never rotated has no ``AWSPREVIOUS``; any other failure (denied,
    missing secret, an outage) is raised for the caller to classify.
    """
    current = await _stage(client, secret_id, CURRENT_STAGE)
    if not current:
        raise ConfigError(f"AUTH_TOKEN_SECRET_ID={secret_id}: its current version is empty")
    try:
        previous = await _stage(client, secret_id, PREVIOUS_STAGE)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        previous = ""
    return Tokens(current, previous)


async def _stage(client: SecretsManagerClient, secret_id: str, stage: str) -> str:
    response = await client.get_secret_value(SecretId=secret_id, VersionStage=stage)
    return str(response.get("SecretString", "")).strip()
