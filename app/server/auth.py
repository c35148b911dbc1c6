"""The bearer token every route but ``/health`` and the API's own docs require, when set."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from app.config import Config


class _BearerToken(HTTPBearer):
    """FastAPI's ``HTTPBearer`` that also checks the token: one dependency per request.

    A check depending on an ``HTTPBearer`` was two levels of FastAPI's dependency solving on
    every authenticated request (about a third of its cost there, cProfile). Being the
    security scheme itself keeps the OpenAPI document as it was: same scheme, same name.
    ``async``: FastAPI runs a plain ``def`` dependency on a worker thread, one more thread hop
    (and GIL hand-over) per request for a comparison that takes microseconds.
    """

    def __init__(self, expected: bytes | None) -> None:
        super().__init__(
            auto_error=False, description="The profile's api_token.", scheme_name="HTTPBearer"
        )
        self.expected = expected

    async def __call__(self, request: HTTPConnection) -> None:
        if self.expected is None:
            return
        credentials = await super().__call__(request)
        given = credentials.credentials.encode() if credentials else b""
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(given, self.expected):
            message = (
                "missing bearer token; send 'Authorization: Bearer <token>'"
                if credentials is None
                else "invalid bearer token"
            )
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def require_token(config: Config) -> HTTPBearer:
    return _BearerToken(config.api_token.encode() if config.api_token else None)
