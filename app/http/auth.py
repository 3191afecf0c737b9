"""Optional bearer-token authentication (``ATTNMAP_API_TOKENS``, comma-separated).

Off when no token is configured (a warning is logged at start). When on, every request needs
``Authorization: Bearer <token>`` except the open paths below: probes and metrics (scraped by
the orchestrator, which holds no API token), the contract, and the web page's static files
(the page asks the user for a token before calling the API). Unknown paths are closed too, so
a client without a token cannot map the routes.

Several tokens may be valid at once so that a token can be rotated without downtime. Each
presented token is compared against every configured one with ``hmac.compare_digest`` over
SHA-256 digests: constant time, and independent of which token (or whether any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable

from flask import Flask, request

from app.core.errors import Unauthenticated

log = logging.getLogger("attnmap.auth")

OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.yaml", "/favicon.ico", "/examples"})
OPEN_PREFIXES = ("/assets/", "/static/", "/examples/")


MIN_TOKEN_CHARS = 16


def is_open_path(path: str) -> bool:
    """Whether ``path`` is served without a token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_matches(presented: str, digests: Iterable[bytes]) -> bool:
    """True when ``presented`` equals one of the configured tokens (constant time over all)."""
    candidate = _digest(presented)
    matched = False
    for digest in digests:
        # No early exit: the time taken must not reveal which token matched.
        matched |= hmac.compare_digest(candidate, digest)
    return matched


def install_auth(app: Flask, tokens: Iterable[str]) -> None:
    """Require a bearer token on every non-open path of ``app`` when ``tokens`` is non-empty."""
    token_list = [token for token in tokens if token]
    if not token_list:
        log.warning("ATTNMAP_API_TOKENS is not set: the API is open to anyone who can reach it")
        return
    if any(len(token) < MIN_TOKEN_CHARS for token in token_list):
        log.warning("an API token is shorter than %d characters; use long random tokens", MIN_TOKEN_CHARS)
    digests = tuple(_digest(token) for token in token_list)

    @app.before_request
    def require_token() -> None:
        # CORS preflights never carry credentials; they are answered without reaching a view.
        if request.method == "OPTIONS" or is_open_path(request.path):
            return
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise Unauthenticated("this endpoint needs an 'Authorization: Bearer <token>' header")
        if not token_matches(presented, digests):
            raise Unauthenticated("the bearer token is not valid", code="invalid_token")
