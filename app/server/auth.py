"""The bearer token every route but ``/health`` and the API's own docs require, when set."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from app.config import Config


def require_token(config: Config) -> Callable[..., Awaitable[None]]:
    bearer = HTTPBearer(auto_error=False, description="The profile's api_token.")
    expected = config.api_token.encode() if config.api_token else None

    # async: FastAPI runs a plain `def` dependency on a worker thread, one more thread hop
    # (and GIL hand-over) per request for a comparison that takes microseconds.
    async def check(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(given, expected):
            message = (
                "missing bearer token; send 'Authorization: Bearer <token>'"
                if credentials is None
                else "invalid bearer token"
            )
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})

    return check
