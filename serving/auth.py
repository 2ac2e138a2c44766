"""Bearer tokens: a client token for the private and state-changing endpoints (events, user
histories), an admin token for reloads.

Tokens are compared as bytes in constant time against every configured token (no early exit
that would tell which one nearly matched). Whatever bytes a client puts in the header (HTTP
headers arrive as Latin-1), the answer is 401, never a 500: a non-ASCII token once crashed
``hmac.compare_digest``, which refuses non-ASCII ``str``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from serving.requests import ServingError
from serving.settings import Settings


def read_tokens_file(path: Path) -> list[str]:
    """One token per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"client tokens file {path}: {e}") from e
    tokens = [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
    if not tokens:
        raise ValueError(f"client tokens file {path}: no token in it")
    return tokens


@dataclass(frozen=True)
class Tokens:
    """The tokens a server accepts, read once at start (``--client-tokens-file`` included)."""

    client: tuple[bytes, ...]
    admin: tuple[bytes, ...]
    open_to_clients: bool  # --insecure-open

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        client = [settings.client_token] if settings.client_token else []
        if settings.client_tokens_file:
            client += read_tokens_file(settings.client_tokens_file)
        admin = [settings.admin_token] if settings.admin_token else []
        return cls(
            tuple(t.encode("utf-8") for t in client),
            tuple(t.encode("utf-8") for t in admin),
            settings.insecure_open,
        )


def matches(presented: str | None, tokens: tuple[bytes, ...]) -> bool:
    """Whether the bearer token ``presented`` is one of ``tokens``."""
    if not presented or not tokens:
        return False
    given = presented.strip().encode("latin-1", "replace")  # headers arrive as Latin-1
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token)
    return ok


def check_bearer(kind: str, allowed: tuple[bytes, ...], presented: str | None) -> None:
    """Raises 403 when no token of ``kind`` is configured, 401 when ``presented`` is not one."""
    if not allowed:
        raise ServingError(403, f"this server has no {kind} token configured")
    if not matches(presented, allowed):
        raise ServingError(
            401,
            f"missing or wrong {kind} token (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
