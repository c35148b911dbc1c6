"""`REQUESTER`: the HTTP client a server's change is made for, which its audit line names.

An audit line names the process that made its change (pid, argv, holder kind): for a change
made over HTTP, that is the server (``app serve``), never who asked for it. The pages said
the audit log "says who ran it"; a ``DELETE`` sent with the token by a script, a test suite
or a colleague's client was recorded as the server's own, with nothing to tell it from any
other (red team 75 on the documentation). The server sets this, for each request, once its
token is accepted (`app.server.auth.TokenRoute`); the audit writers of both backends add it
to the line (``"client"``: ``address`` as the access log names the client, ``user_agent``
as it sent it, cut to `USER_AGENT_CHARS`). A command's lines have none: their argv says who.

A context variable, since each request is a task of its own and its route's work runs in a
worker thread that anyio starts with a copy of the task's context: a value set for one
request is never another's.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

__all__ = ["REQUESTER", "USER_AGENT_CHARS"]

#: The HTTP client of the request being served, as an audit line records it; None outside one.
REQUESTER: ContextVar[dict[str, str] | None] = ContextVar("REQUESTER", default=None)

#: A client's `User-Agent` is kept to this many characters: it is the client's text, as long
#: as the server's header limit lets it be.
USER_AGENT_CHARS: Final = 200
