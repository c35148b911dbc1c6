"""Integrity fields (RFC 9530): the SHA-256 a client sends with an upload, and the one a
download carries.

One check for both backends: the route parses the headers into a :class:`Digests`, each
backend's upload calls :meth:`Digests.require` with the SHA-256 it computed anyway, before
it commits; a mismatch stores nothing. A form's fields cover its whole multipart body, which
no backend sees: `app.server.multipart.MultipartSink` hashes that and calls the same
:meth:`Digests.require` before the commit. Parsed by ``http-sf`` (Mark Nottingham's parser of
RFC 9651 structured fields): a dictionary's keys, byte sequences and parameters have enough
corners (``:...:`` padding, duplicate keys, inner lists) that a regular expression would
accept what the RFC refuses.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from app.errors import BadRequestError, DigestMismatchError, DigestUnsupportedError

#: The integrity fields an upload may carry. The server refuses a ``Content-Encoding``
#: (415), so a body is always identity-coded and its ``Content-Digest`` covers the same
#: bytes as its ``Repr-Digest`` (RFC 9530, 2 and 3): both are checked the same way.
FIELDS: Final = ("Repr-Digest", "Content-Digest")
#: Integrity fields of the specifications before RFC 9530, which clients still send: RFC
#: 3230's ``Digest`` (its ``SHA-256`` is the hash this server computes: checked) and RFC
#: 1864's ``Content-MD5`` (S3 checks it; this server computes no MD5: refused). Ignored, a
#: body changed on the way was stored and acknowledged under them (red team 46).
LEGACY_FIELDS: Final = ("Digest", "Content-MD5")
#: The fields a chunked body's trailer may not carry, with what each says: RFC 9110 (6.5.1)
#: has them read from the head alone (framing, the content's format, the request's
#: preconditions), so the server never acts on one sent after the body. Read past as any
#: other trailer field, each made the request do other than its sender asked, where the
#: same field in the head is evaluated or refused (red team 67): ``If-Match`` replaced a
#: version it did not name, ``If-None-Match: *`` replaced an existing file, ``Content-Range``
#: stored a part as the whole file, ``Content-Encoding: gzip`` stored the coded bytes.
HEAD_ONLY: Final = {
    "if-match": ("If-Match", "is a precondition: the change is made only at the versions it names"),
    "if-none-match": ("If-None-Match", "is a precondition: a PUT with it only creates"),
    "if-unmodified-since": ("If-Unmodified-Since", "is a precondition on the file's date"),
    "if-modified-since": ("If-Modified-Since", "is a precondition on the file's date"),
    "if-range": ("If-Range", "is a precondition of a range"),
    "content-range": ("Content-Range", "says the body is a part of a file"),
    "content-encoding": ("Content-Encoding", "says the body is coded"),
    "content-type": ("Content-Type", "says what the body is"),
    "content-length": ("Content-Length", "frames the body"),
    "transfer-encoding": ("Transfer-Encoding", "frames the body"),
}
#: The one algorithm the server computes (the file's ETag and ``sha256`` are made of it).
#: A refusal says so in ``Want-Repr-Digest`` (the errors' ``want_digest``).
ALGORITHM: Final = "sha-256"


def field_value(sha256_hex: str) -> str:
    """A ``Repr-Digest`` value for a file's hex SHA-256: ``sha-256=:<base64>:``."""
    return f"{ALGORITHM}=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


@dataclass(frozen=True, slots=True)
class Digests:
    """The SHA-256 values an upload's integrity fields name, each with the field it came in.

    Attributes:
        method: the request's method, for messages.
        what: the body they cover, for messages ("the body", "the multipart body").
        wanted: ``(field, digest)`` pairs, the 32-byte SHA-256 a field names.
        trailer: for a chunked body, what gives its trailer fields once it has all come
            (``(name, value)`` byte pairs), whose integrity fields :meth:`require` checks
            too: RFC 9530 lets a client send its digest there, after the bytes it covers.
    """

    method: str
    what: str
    wanted: tuple[tuple[str, bytes], ...]
    trailer: Callable[[], Iterable[tuple[bytes, bytes]]] | None = None

    @classmethod
    def parse(
        cls,
        headers: Mapping[str, str],
        method: str,
        what: str = "the body",
        trailer: Callable[[], Iterable[tuple[bytes, bytes]]] | None = None,
    ) -> Digests | None:
        """The request's ``Repr-Digest`` and ``Content-Digest``; ``None`` if it has neither
        (and no ``trailer`` that may bring them).

        A member in another algorithm is ignored, as RFC 9530 (3) allows, when a ``sha-256``
        is there too. A field with no ``sha-256`` member is refused rather than ignored: the
        client asked for its bytes to be checked, and storing them unchecked would answer
        as if they had been (the hole this closes).

        Raises:
            BadRequestError: a field that is not a structured-field dictionary of byte
                sequences, or a ``sha-256`` that is not 32 bytes.
            DigestUnsupportedError: a field that names no ``sha-256``.
        """
        wanted: list[tuple[str, bytes]] = []
        for name in FIELDS:
            value = headers.get(name.lower())
            if value is None:
                continue
            members = _dictionary(name, value)
            for algorithm, digest in members.items():
                if not isinstance(digest, bytes):
                    raise BadRequestError(
                        f"{name}: {algorithm} is not a byte sequence; nothing was stored. "
                        f"Send {name}: {ALGORITHM}=:<base64 of the SHA-256>: (with the colons)"
                    )
            sha256 = members.get(ALGORITHM)
            if sha256 is None:
                raise DigestUnsupportedError(name, ", ".join(members) or "(none)", ALGORITHM)
            assert isinstance(sha256, bytes)
            if len(sha256) != 32:
                raise BadRequestError(
                    f"{name}: {ALGORITHM} is {len(sha256)} bytes; a SHA-256 is 32 bytes "
                    f"(44 characters of base64); nothing was stored. Send {name}: "
                    f"{ALGORITHM}=:<base64 of the 32-byte SHA-256>:"
                )
            wanted.append((name, sha256))
        if headers.get("content-md5") is not None:
            raise DigestUnsupportedError("Content-MD5", "md5", ALGORITHM)
        if (value := headers.get("digest")) is not None:
            wanted.append(("Digest", _rfc3230_sha256(value)))
        if not wanted and trailer is None:
            return None
        return cls(method, what, tuple(wanted), trailer)

    def named(self) -> str | None:
        """The SHA-256 (hex) the request's fields name before its body, where they name one
        (all alike); ``None`` otherwise. What the body will be, if it comes as sent."""
        found = {digest for _field, digest in self.wanted}
        return found.pop().hex() if len(found) == 1 else None

    def require(self, session_id: str, name: str, sha256_hex: str) -> None:
        """Refuse the upload unless every digest named equals ``sha256_hex`` (what was
        received); the caller has not committed yet.

        Raises:
            DigestMismatchError: one does not (HTTP 400).
        """
        computed = bytes.fromhex(sha256_hex)
        wanted = self.wanted
        if self.trailer is not None:
            wanted = (*wanted, *self._in_trailer(self.trailer()))
        for field, digest in wanted:
            if digest != computed:
                raise DigestMismatchError(
                    self.method,
                    session_id,
                    name,
                    field,
                    self.what,
                    base64.b64encode(digest).decode(),
                    base64.b64encode(computed).decode(),
                )

    def _in_trailer(self, fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, bytes]]:
        """The integrity fields of a chunked body's trailer, checked as a header's are.

        Ignored, a client that sent its digest there (RFC 9530 allows it, after the bytes
        it covers) had a body changed on the way stored and acknowledged (red team 35).
        """
        found: dict[str, str] = {}
        for raw_name, raw_value in fields:
            name = raw_name.decode("latin-1").lower()
            if name in HEAD_ONLY:
                self._refuse_head_only(name, raw_value.decode("latin-1"))
            shown = next((f for f in (*FIELDS, *LEGACY_FIELDS) if f.lower() == name), None)
            if shown is None:
                continue
            if name in found:
                raise BadRequestError(
                    f"{self.method} refused: the trailer of {self.what} has {shown} twice, so "
                    f"which one counts is ambiguous; nothing was stored. Send {shown} once"
                )
            found[name] = raw_value.decode("latin-1")
        parsed = Digests.parse(found, self.method, self.what)
        return [] if parsed is None else [(f"{f} (in the trailer)", d) for f, d in parsed.wanted]

    def _refuse_head_only(self, name: str, value: str) -> None:
        """Refuse a trailer field of `HEAD_ONLY`: read past, the request did other than its
        sender asked (a conditional replace made unconditionally, a part stored whole)."""
        shown, says = HEAD_ONLY[name]
        raise BadRequestError(
            f"{self.method} refused: the trailer of {self.what} has {shown}: {value}, which "
            f"{says}; RFC 9110 (6.5.1) has it read from the request's head, never after the "
            "body, so the server would have ignored it and done other than the client asked. "
            f"Nothing was done. Send {shown} in the head, before the body"
        )


def _dictionary(name: str, value: str) -> dict[str, object]:
    # Imported here: about 30 ms (-X importtime), paid only by a request that sends a digest,
    # not by every `app` command that imports the remote backend.
    import http_sf

    twice: list[str] = []

    def duplicate(key: str, context: str) -> None:
        if context == "dictionary":
            twice.append(key)

    try:
        parsed = http_sf.parse(
            value.encode("latin-1"), tltype="dictionary", on_duplicate_key=duplicate
        )
    except (ValueError, UnicodeEncodeError) as error:  # StructuredFieldError is a ValueError
        raise BadRequestError(
            f"{name}: {value} is not a structured-field dictionary (RFC 9651): {error}; "
            f"nothing was stored. Send {name}: {ALGORITHM}=:<base64 of the SHA-256>:, "
            "e.g. sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=: for no bytes"
        ) from None
    if twice:
        # RFC 9651 (4.2.2) keeps the last of a key given twice: `sha-256=:<wrong>:,
        # sha-256=:<right>:` was taken, one of its two digests never compared, though two
        # `Repr-Digest` lines, which a proxy may join into that one (RFC 9110, 5.3), are
        # refused, and so is RFC 3230's `Digest` naming SHA-256 twice (rt-regress66b).
        raise BadRequestError(
            f"{name}: {value} names {twice[0]} twice, so which one counts is ambiguous; "
            f"nothing was stored. Send {name} with each algorithm once"
        )
    assert isinstance(parsed, dict)
    # Each member is (value, parameters); RFC 9530 defines no parameters, so none are read.
    return {key: item[0] if isinstance(item, tuple) else item for key, item in parsed.items()}


def _rfc3230_sha256(value: str) -> bytes:
    """The SHA-256 an RFC 3230 ``Digest`` field names (``SHA-256=<base64>``, one member of a
    comma-separated list; the algorithm's case does not matter, RFC 5843 names it).

    Raises:
        BadRequestError: a member that is not ``<algorithm>=<value>``, or a SHA-256 that is
            not 32 bytes of base64.
        DigestUnsupportedError: no ``SHA-256`` member.
    """
    members: dict[str, str] = {}
    for member in value.split(","):
        algorithm, equals, digest = member.strip().partition("=")
        if not (algorithm and equals and digest):
            raise BadRequestError(
                f"Digest: {value} is not a list of <algorithm>=<value> (RFC 3230); nothing was "
                "stored. Send Repr-Digest: sha-256=:<base64 of the SHA-256>:, which replaces it"
            )
        if members.setdefault(algorithm.lower(), digest) != digest:
            # The first checked and the other ignored: a proxy may have read the other.
            raise BadRequestError(
                f"Digest: {value} names {algorithm} twice, with two values; nothing was "
                "stored. Send each algorithm once"
            )
    named = members.get(ALGORITHM)
    if named is None:
        raise DigestUnsupportedError("Digest", ", ".join(members), ALGORITHM)
    try:
        sha256 = base64.b64decode(named, validate=True)
    except ValueError:
        sha256 = b""
    if len(sha256) != 32:
        raise BadRequestError(
            f"Digest: SHA-256={named} is not the base64 of a 32-byte SHA-256; nothing was "
            "stored. Send Repr-Digest: sha-256=:<base64 of the SHA-256>:, which replaces it"
        )
    return sha256
