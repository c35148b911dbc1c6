"""The multipart body of ``POST /sessions/{id}/files``, parsed as a stream into an upload.

python-multipart's low-level parser calls back for each piece; the ``file`` part's bytes go
straight into the upload's `Pipeline`, and everything else is bounded and dropped.

A received chunk that lies wholly inside the ``file`` part skips the parser (`_content_only`):
finding the delimiter is nearly all a large part costs the parser, and its ``bytes.find``
(0.21 ms per MiB for the 17-byte delimiter of a 13-character boundary) is three times slower
than the C library's ``memmem`` (0.065 ms), which runs without the GIL.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool

from app.digests import Digests
from app.errors import AppError, BadRequestError, InvalidNameError, UploadTooLargeError
from app.names import check_stored_name
from app.server.uploads import Pipeline, refuse_content_coding, refuse_repeated_parameter
from app.storage import Storage, Upload

# Form fields other than `file` are ignored, but they still cost memory while parsed.
_MAX_OTHER_FIELD_BYTES: Final = 64 * 1024
MULTIPART_OVERHEAD: Final = 2 * _MAX_OTHER_FIELD_BYTES
"""How many bytes of a multipart body may be other than the file's own: its boundaries, part
headers and other fields, held to it however small the file (`MultipartSink._refuse_overhead`).

Boundaries and part headers are small, and other fields are capped.
"""
# The parser is fed at most this much at once, so that the bytes besides the file's own are
# counted as they come: python-multipart parses a part's boundary and headers a byte at a
# time on the event loop (about 1.3 s a MiB of empty parts), and a form of many empty parts
# beside a small file held the server's other clients for as long (red team 73). Between
# two slices the other clients have a turn: a read of 256 KiB, the 128 KiB of parts allowed
# in it, was parsed in one turn and held `GET /health` up to 1.5 s (red team 73 on
# regress, round d).
_PARSE_SLICE: Final = 16 * 1024
# RFC 2046, section 5.1.1: a boundary is 1 to 70 characters.
_MAX_BOUNDARY_CHARS: Final = 70
# A parameter's name in any case, with spaces around "=" (RFC 2183, 2231), as the parser
# that stores the file reads it.
_QUOTED_FILENAME: Final = re.compile(rb';\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.I)
_QUOTED: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_PARAMETER: Final = re.compile(rb";\s*([^\s=;]+)\s*=")
# One parameter of a Content-Disposition, its quoted value emptied (`_QUOTED`): a name, then
# one quoted value or one token (RFC 2183, 7578), white space around either.
_TOKEN_PARAMETER: Final = re.compile(rb'\s*[^\s=;"]+\s*=\s*(?:""|[^\s=;"]+)\s*')
# `filename*=` (RFC 8187): a charset, a language (either may be empty), then the name
# percent-encoded; a token, so it stands whole once quoted values are emptied (`_QUOTED`).
_STAR_FILENAME: Final = re.compile(rb";\s*filename\*\s*=\s*([^\s;']*)'[^\s;']*'([^\s;]*)", re.I)


def form_boundary(request: Request) -> bytes:
    """The boundary of a ``POST``'s form (`boundary_of`), once its body is known to be in no
    content coding (`app.server.uploads.refuse_content_coding`)."""
    refuse_content_coding(request, "the form, and stored them as the file's bytes")
    refuse_repeated_parameter(request)
    return boundary_of(request.headers.get("content-type"))


def boundary_of(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type)
    found = params.get(b"boundary")
    if kind != b"multipart/form-data" or not found:
        raise BadRequestError(
            f"expected a multipart/form-data body with a boundary, got Content-Type "
            f"{content_type!r}; send the file in the form field 'file', or use "
            "PUT /sessions/{id}/files/{name} with the raw bytes"
        )
    if len(found) > _MAX_BOUNDARY_CHARS:
        raise BadRequestError(
            f"the multipart boundary is {len(found)} characters long; RFC 2046 allows at most "
            f"{_MAX_BOUNDARY_CHARS}. Let the HTTP client choose the boundary"
        )
    return found


def _memmem() -> Callable[[bytes, bytes], bool] | None:
    """Whether a needle occurs in a haystack, by the C library's ``memmem``; None without one.

    Not a package from PyPI for one call: ``ctypes`` reaches the C library already loaded,
    and releases the GIL for the call, so the worker thread hashing the last batch runs
    meanwhile. glibc's ``memmem`` (2.29 and later) skips by a hash of two bytes; CPython's
    ``bytes.find`` looks bytes up by their low six bits, 14 of whose 64 values a 17-byte
    delimiter takes: about one byte in five cuts its skip short.
    """
    try:
        found = ctypes.CDLL(None).memmem  # the C library the interpreter runs on
    except (OSError, TypeError, AttributeError):  # no memmem (Windows): `bytes.find` serves
        return None
    found.restype = ctypes.c_void_p
    found.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)

    def occurs(needle: bytes, haystack: bytes) -> bool:
        # c_char_p passes a bytes object's own buffer: nothing is copied.
        return found(haystack, len(haystack), needle, len(needle)) is not None

    return occurs


def _find_occurs(needle: bytes, haystack: bytes) -> bool:
    return needle in haystack


occurs: Final = _memmem() or _find_occurs
"""Whether ``needle`` occurs in ``haystack`` (a bytes object), by the fastest search here."""


def _parse(step: Callable[..., object], *args: Any) -> object:
    try:
        return step(*args)
    except (AppError, OSError, HTTPException):
        raise  # from our callbacks: a bad name, a size over the limit, a full disk, ...
    except Exception as error:  # python-multipart's own parse errors
        raise BadRequestError(f"malformed multipart body: {error}") from None


def _refuse_a_cut_path(disposition: bytes) -> None:
    # python-multipart keeps only what follows the last backslash of "C:\\dir\\a" (an old
    # browser's full path), so "C:\\x\\evil.txt" became "evil.txt" while "dir/evil.txt" was
    # refused. A backslash is a path separator here too: refuse the name it was part of.
    found = _QUOTED_FILENAME.search(disposition)
    value = found.group(1).replace(b'\\"', b'"') if found else disposition
    if b"\\" in value:
        shown = value.replace(b"\\\\", b"\\").decode("utf-8", "backslashreplace")
        raise InvalidNameError("file name", shown, "it contains a path separator")


def _refuse_another_file(params: dict[bytes, bytes]) -> None:
    """Refuse a file in a form field other than ``file``: it would be dropped unstored.

    Text fields are read past (a browser's form sends its buttons and tokens), but
    ``curl -F file=@a -F attachment=@b`` was a 201 for ``a`` alone, its client believing both
    stored.
    """
    filename = params.get(b"filename", params.get(b"filename*"))
    if filename is not None:
        field = params.get(b"name", b"").decode("utf-8", "replace")
        raise BadRequestError(
            f"the form field {field!r} holds a file ({filename.decode('utf-8', 'replace')!r}), "
            "which this server would not store: it stores the field 'file' only, one file a "
            "request. Nothing was stored; send each file as 'file', in a request of its own"
        )


def _refuse_a_second_name(disposition: bytes) -> None:
    # python-multipart keeps the last of two `filename` (or `name`) parameters and takes no
    # notice of `filename*`: a proxy or a scanner that read another one checked another name
    # than the one stored.
    names = [n.lower() for n in _PARAMETER.findall(_QUOTED.sub(b'""', disposition))]
    split = next((n for n in names if b"*" in n and n != b"filename*"), None)
    if split is not None:
        # RFC 2231's continuations (`filename*0*=utf-8''b; filename*1=.exe`): python-multipart
        # reads past them and stored the file as its `filename=` names it, where a reader
        # that joins them (Werkzeug, Python's email package) read `b.exe` (red team 70 on
        # regress, rt-regress70k).
        raise BadRequestError(
            f"a multipart part gives {split.decode('ascii', 'replace')!r} in its "
            "Content-Disposition, an RFC 2231 continuation or encoding, which RFC 7578 (4.2) "
            "does not allow in a form: this server reads past it, so readers of the part "
            "name different files or fields. Nothing was stored; send the name, UTF-8 "
            'encoded, as filename="..."'
        )
    if b"filename*" in names and not _star_names_the_same_file(disposition):
        raise BadRequestError(
            "a multipart part names its file with filename*=, which RFC 7578 (4.2) does not "
            "allow in a form, and not as its filename= names it (or it has no filename=), so "
            "readers of the part name different files. Nothing was stored; send the name, "
            'UTF-8 encoded, as filename="..." (beside a filename*= only where that names the same)'
        )
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise BadRequestError(
            f"a multipart part gives {twice.decode('ascii', 'replace')!r} twice in its "
            "Content-Disposition, so it names its field or file more than once; send it once"
        )


def _star_names_the_same_file(disposition: bytes) -> bool:
    """Whether the part's ``filename*=`` names, decoded, the file its ``filename=`` names as
    stored: a reader of either then reads one name.

    .NET's ``MultipartFormDataContent`` (its ``HttpClient``'s forms) sends both with every
    file, ``filename=a.txt; filename*=utf-8''a.txt`` (dotnet/runtime#121484), and each of its
    uploads was refused (red team 70 on regress, rt-regress70j). RFC 7578 (4.2) forbids
    ``filename*`` in a form, so one that says another name (``.NET``'s own for a name not
    ASCII: ``filename="=?utf-8?B?...?="``) is still refused."""
    star = _STAR_FILENAME.search(_QUOTED.sub(b'""', disposition))
    plain = parse_options_header(disposition)[1].get(b"filename")
    if star is None or plain is None or star[1].lower() not in (b"utf-8", b"us-ascii"):
        return False
    named = unquote_to_bytes(star[2])
    return named == plain and (named.isascii() or star[1].lower() == b"utf-8")


def _refuse_a_malformed_disposition(disposition: bytes | None) -> None:
    """Refuse a part that RFC 7578 (4.2) does not allow: every part has a
    ``Content-Disposition`` of type ``form-data``, and each of its parameters is
    ``name=value``.

    python-multipart read past the rest: a part with no such header, or of another type
    (``attachment``), was taken for a text field and its bytes dropped unsaid, beside a 201
    for the ``file`` part; and ``filename=a;b.txt`` (unquoted) was stored as ``a``, the
    ``b.txt`` dropped, where a reader that took the value to the end of the line (a proxy, a
    scanner) saw ``a;b.txt`` (red team 70 on the HTTP contract).
    """
    if disposition is None:
        raise BadRequestError(
            "a part of the multipart body has no Content-Disposition header, which RFC 7578 "
            "(4.2) requires of every part: it names no field, and its bytes would have been "
            "dropped. Nothing was stored; send the file as Content-Disposition: form-data; "
            'name="file"; filename="..."'
        )
    kind, _, parameters = _QUOTED.sub(b'""', disposition).partition(b";")
    if kind.strip().lower() != b"form-data":
        raise BadRequestError(
            f"a part of the multipart body has Content-Disposition: "
            f"{disposition.decode('latin-1')!r}, not form-data as RFC 7578 (4.2) requires "
            "of a form's parts, so it is not a field of the form and its bytes would have "
            "been dropped. Nothing was stored; send the file as Content-Disposition: "
            'form-data; name="file"; filename="..."'
        )
    if b'\\"' in disposition:
        # python-multipart undoes `\"` in a quoted name (`q\"p.txt` was stored as `q"p.txt`)
        # where a browser's reader (WHATWG, which escapes `"` as %22) ends the name at that
        # quote, `q\` (red team 70 on regress). curl before 7.81 sent it so; curl since, and
        # browsers, send %22. Its other escapes leave a `\`, which no file name holds
        # (`check_file_name`).
        raise BadRequestError(
            f"a part of the multipart body has Content-Disposition: "
            f"{disposition.decode('latin-1')!r}, with the escape '\\\"' in a quoted value, "
            "which readers of the part undo differently, so they name different files. "
            'Nothing was stored; send filename="..." without it, or a name with a \'"\' by '
            "PUT /sessions/{id}/files/{name}, the '\"' as %22"
        )
    names = set()
    for piece in parameters.split(b";"):
        if not piece.strip():
            continue
        if b"=" not in piece:
            raise BadRequestError(
                f"a part of the multipart body has {piece.strip().decode('latin-1')!r} in its "
                "Content-Disposition, which is not a parameter (name=value): a name with a "
                "';' must be quoted, or readers of the part cut it in different places. "
                'Nothing was stored; send filename="..." in quotes'
            )
        if _TOKEN_PARAMETER.fullmatch(piece) is None:
            # `filename="j.txt" x.exe` was stored as `"j.txt" x.exe` and read `j.txt` by a
            # reader that ends a quoted value at its quote; `filename=a b.txt` was stored as
            # `a b.txt` and read `a` by one that ends a token at white space (red team 70 on
            # regress).
            raise BadRequestError(
                f"a part of the multipart body has {piece.strip().decode('latin-1')!r} in its "
                'Content-Disposition (its quoted values shown as ""), which is not name= '
                "followed by one quoted value or one token: readers of the part end the value "
                'in different places. Nothing was stored; send filename="..." in quotes, '
                "and nothing after the closing quote but ';'"
            )
        names.add(piece.partition(b"=")[0].strip().lower())
    if b"name" not in names or not parse_options_header(disposition)[1].get(b"name"):
        # RFC 7578 (4.2): every part MUST name its field. A part without one, beside the
        # file, was read past as a text field and its bytes dropped, with a 201 for the
        # file alone (red team 70 on regress).
        raise BadRequestError(
            f"a part of the multipart body has Content-Disposition: "
            f"{disposition.decode('latin-1')!r}, without a name, which RFC 7578 (4.2) requires "
            "of every part: it names no field, and its bytes would have been dropped. Nothing "
            'was stored; send the file as Content-Disposition: form-data; name="file"; '
            'filename="..."'
        )


def _refuse_an_epilogue(boundary: bytes, after: bytes) -> None:
    """Refuse bytes other than white space after the closing boundary (``--B--``).

    RFC 2046 (5.1.1) calls them an epilogue, to be ignored, and python-multipart drops them
    unread: a second ``file`` part sent after the close (a client or a proxy that joined
    two forms) was a 201 for the first file alone, the second dropped unsaid, where a
    parser that reads on (or a scanner in front) saw both. No HTTP client sends an
    epilogue; one is refused before anything is stored.
    """
    if not after.strip(b" \t\r\n"):
        return
    shown = after.strip()[:40].decode("utf-8", "backslashreplace")
    close = boundary.decode("latin-1")
    raise BadRequestError(
        f"the multipart body goes on after its closing boundary (--{close}--) with {shown!r}, "
        "which this server would drop unread (a part there is no part of the form). Nothing "
        f"was stored; end the body at --{close}--, and send each file in a request of its own"
    )


def _refuse_nested_files(content_type: bytes | None, name: str) -> None:
    """Refuse a ``file`` part that is itself ``multipart/mixed``: several files in one field.

    RFC 2388 sent a field's several files so, and RFC 7578 (4.3) deprecates it but a
    receiver may still meet it. Nothing read the part's type: the nested body, boundaries
    and part headers included, was stored as one file under the outer name and answered
    201, its client believing each of its files stored (red team 53).
    """
    if content_type is None:
        return
    kind, _ = parse_options_header(content_type)
    if kind.lower() == b"multipart/mixed":
        raise BadRequestError(
            f"the form field 'file' ({name!r}) is a multipart/mixed body, several files in one "
            "field (RFC 2388; RFC 7578, 4.3, deprecates it), which this server would have "
            "stored as one file, boundaries and all. Nothing was stored; send each file as "
            "'file', in a request of its own"
        )


#: A part's headers that say how its bytes are coded: given twice, they are read together.
_CODING_HEADERS: Final = frozenset({b"content-encoding", b"content-transfer-encoding"})

#: What a part's Content-Transfer-Encoding may say of bytes sent as they are.
_IDENTITY_TRANSFER_ENCODINGS: Final = frozenset({b"", b"7bit", b"8bit", b"binary"})


class MultipartSink:
    """python-multipart callbacks that stream the ``file`` part into an `Upload`."""

    def __init__(self, store: Storage, session_id: str, digests: Digests | None = None) -> None:
        self.store = store
        self.session_id = session_id
        # RFC 7578 (4.8) forbids a part any header but Content-Type, Content-Disposition and
        # Content-Transfer-Encoding, so a file's own digest has no place in the form: the
        # request's Repr-Digest/Content-Digest covers the whole multipart body, hashed here.
        self.digests = digests
        self._body_hash = None if digests is None else hashlib.sha256()
        self._name: str | None = None
        self.upload: Upload | None = None
        self.pipeline: Pipeline | None = None
        self._in_file = False  # the part being parsed is the field `file`
        # A `file` part begins inside a parser callback, which cannot wait for a worker
        # thread: its name waits here, and its first bytes in `_early`, until `consume`
        # starts the upload off the event loop.
        self._pending_name: str | None = None
        self._early: list[bytes | memoryview] = []
        self._other_bytes = 0
        self._file_bytes = 0  # of the body, in the `file` part's content
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._ended = False

    async def consume(self, request: Request, boundary: bytes) -> None:
        parser = _parse(
            MultipartParser,
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )
        assert isinstance(parser, MultipartParser)
        limit = self.store.max_upload_bytes
        received = 0
        close = b"\r\n--" + boundary + b"--"
        tail = b"\r\n"  # the body's first delimiter has no CRLF before it
        async for chunk in request.stream():
            if chunk and self._ended:
                _refuse_an_epilogue(boundary, bytes(chunk))
            elif chunk:
                # The same bound a Content-Length is held to (`refuse_declared_length`), for
                # a chunked body: the parser skips junk around the parts without a limit.
                received += len(chunk)
                if received > limit + MULTIPART_OVERHEAD:
                    raise UploadTooLargeError(limit, received)
                if self._body_hash is not None:
                    self._body_hash.update(chunk)
                if not self._content_only(parser, chunk):
                    before = received - len(chunk)
                    for start in range(0, len(chunk), _PARSE_SLICE):
                        if start:
                            await asyncio.sleep(0)  # the other clients' turn (`_PARSE_SLICE`)
                        piece = chunk[start : start + _PARSE_SLICE]
                        _parse(parser.write, piece)  # the callbacks queue the file's bytes
                        self._refuse_overhead(before + start + len(piece))
                    if self._ended:  # the closing delimiter is in this chunk, or ends in it
                        seen = tail + bytes(chunk)
                        _refuse_an_epilogue(boundary, seen[seen.find(close) + len(close) :])
                tail = (tail + bytes(chunk[-len(close) :]))[-len(close) :]  # no copy of the chunk
                await self._begin_pending()
                if self.pipeline is not None:
                    await self.pipeline.flush_if_full()
        _parse(parser.finalize)
        await self._begin_pending()
        if self.pipeline is not None:
            await self.pipeline.drain()

    def _content_only(self, parser: MultipartParser, chunk: bytes) -> bool:
        """Queue ``chunk`` as the ``file`` part's bytes if none of it can be a delimiter.

        Only between two chunks of the part's content: the parser is in its part's data with
        no partial delimiter held (``index`` 0) and has handed out every byte before this
        chunk (its ``part_data`` mark at 0). Given a chunk without the delimiter, and without
        the delimiter's beginning at its end, the parser would do what this does: call back
        with the whole chunk and stay as it is. Any other chunk goes through the parser.
        """
        if not (
            self._in_file
            and type(chunk) is bytes
            and parser.state == MultipartState.PART_DATA
            and parser.index == 0
            and parser.marks.get("part_data") == 0
        ):
            return False
        delimiter = parser.boundary  # CRLF, "--" and the boundary
        if occurs(delimiter, chunk):
            return False
        # The delimiter begins with CR, which a boundary contains nowhere else: the last CR
        # near the end is the only place where one can begin and go on in the next chunk.
        cr = chunk.rfind(b"\r", max(len(chunk) - len(delimiter) + 1, 0))
        if cr != -1 and delimiter.startswith(chunk[cr:]):
            return False
        self._part_data(chunk, 0, len(chunk))
        return True

    async def _begin_pending(self) -> None:
        if self._pending_name is None:
            return
        name, self._pending_name = self._pending_name, None
        self._name = name
        # Reads session.json and creates the temporary file: not on the event loop.
        self.upload = await run_in_threadpool(self.store.begin_upload, self.session_id, name)
        self.pipeline = Pipeline(self.upload)
        early, self._early = self._early, []
        for piece in early:
            self.pipeline.queue(piece)

    def finish(self) -> Upload:
        if not self._ended:
            raise BadRequestError("the multipart body ended before its closing boundary")
        if self.upload is None or self._name is None:
            raise BadRequestError("no form field 'file' with a filename in the multipart body")
        if self.digests is not None and self._body_hash is not None:
            # Before the commit; the route's abort then removes the upload.
            self.digests.require(self.session_id, self._name, self._body_hash.hexdigest())
        return self.upload

    async def settle(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.settle()

    def abort(self) -> None:
        if self.upload is not None:
            self.upload.abort()  # a no-op once committed

    def _refuse_overhead(self, parsed: int) -> None:
        """Refuse a body more than `MULTIPART_OVERHEAD` of whose first ``parsed`` bytes are
        not the file's own (a delimiter the parser still holds is at most 74 bytes), the
        white space after its closing boundary too: a form that came whole in one read is
        parsed to its end in the same loop."""
        if parsed - self._file_bytes <= MULTIPART_OVERHEAD:
            return
        raise BadRequestError(
            f"POST /sessions/{self.session_id}/files refused: the multipart body holds more "
            f"than {MULTIPART_OVERHEAD} bytes ({MULTIPART_OVERHEAD // 1024} KiB) besides the "
            "file's own: boundaries, part headers and fields other than 'file', which this "
            "server parses and ignores, and whose parsing would hold its other clients. "
            "Nothing was stored; send the file in the field 'file' with few other fields, or "
            "its bytes alone with PUT "
            f"/sessions/{self.session_id}/files/{{name}}"
        )

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > _MAX_OTHER_FIELD_BYTES:
            raise BadRequestError("a multipart part header is too long")

    def _header_end(self) -> None:
        field = self._field.lower()
        if field == b"content-disposition" and field in self._headers:
            raise BadRequestError(
                "a multipart part has two Content-Disposition headers, so it names its field "
                "and file more than once; send one"
            )
        if field == b"content-type" and field in self._headers:
            # The last was read: a nested multipart/mixed (`_refuse_nested_files`) passed
            # behind a second type, which a scanner that reads the first did not see.
            raise BadRequestError(
                "a multipart part has two Content-Type headers, so it says two things of "
                "what it holds; send one"
            )
        if field in _CODING_HEADERS and field in self._headers:  # read together, as a list
            self._value = self._headers[field] + b"," + self._value
        self._headers[field] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _refuse_a_malformed_disposition(self._headers.get(b"content-disposition"))
        _refuse_a_second_name(self._headers.get(b"content-disposition", b""))
        disposition, params = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or params.get(b"name") != b"file":
            self._in_file = False
            _refuse_another_file(params)
            return
        if self.upload is not None or self._pending_name is not None:
            raise BadRequestError("more than one form field 'file'; upload one file per request")
        raw = params.get(b"filename")
        if not raw:
            raise BadRequestError("the form field 'file' has no filename; name the file")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNameError("file name", repr(raw), "it is not valid UTF-8") from None
        _refuse_a_cut_path(self._headers.get(b"content-disposition", b""))
        self._refuse_transfer_encoding()
        _refuse_nested_files(self._headers.get(b"content-type"), name)
        # Only what keeps it one name in a session here: the store holds a new name to the
        # full rule as the upload begins, and a name a file has already (stored by an earlier
        # build, whose rule was looser) is a conflict there, as any name is (red team 38).
        check_stored_name(name)
        self._pending_name, self._in_file = name, True

    def _refuse_transfer_encoding(self) -> None:
        # RFC 7578 (4.7) deprecates it, but allows it in a part: `base64` or
        # `quoted-printable` text was stored as the file's bytes, undecoded, and answered 201
        # (red team 46), as a Content-Encoding once was (`refuse_content_coding`).
        self._refuse_content_coding()
        given = self._headers.get(b"content-transfer-encoding", b"")
        if given.strip().lower() in _IDENTITY_TRANSFER_ENCODINGS:
            return
        shown = given.decode("latin-1")
        raise HTTPException(
            415,
            f"POST /sessions/{self.session_id}/files refused: the form field 'file' has "
            f"Content-Transfer-Encoding: {shown}, which this server does not decode (RFC "
            "7578, 4.7, deprecates it); it would have taken the encoded text as the file's "
            "bytes. Nothing was stored. Send the file's bytes themselves in the part, without "
            "Content-Transfer-Encoding",
        )

    def _refuse_content_coding(self) -> None:
        # RFC 7578 (4.8) says a part's other headers must be ignored, and so they were: a part
        # with `Content-Encoding: gzip` was stored compressed, answered 201 and downloaded
        # without the coding, under the SHA-256 of the compressed bytes (red team 53), as a
        # request's own Content-Encoding once was (`refuse_content_coding`).
        given = self._headers.get(b"content-encoding", b"")
        codings = [c.strip().lower() for c in given.split(b",")]
        if all(c in (b"", b"identity") for c in codings):
            return
        shown = given.decode("latin-1")
        raise HTTPException(
            415,
            f"POST /sessions/{self.session_id}/files refused: the form field 'file' has "
            f"Content-Encoding: {shown}, which this server does not decode (RFC 7578, 4.8, "
            "allows a part no such header); it would have taken the encoded bytes as the "
            "file's. Nothing was stored. Send the file's bytes themselves in the part, "
            "without Content-Encoding (a compressed file is kept as it is when it is sent "
            "without the header, under a name that says so: report.csv.gz)",
            headers={"Accept-Encoding": "identity"},
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._file_bytes += end - start
            piece = data if start == 0 and end == len(data) else memoryview(data)[start:end]
            if self.pipeline is None:
                self._early.append(piece)
            else:
                self.pipeline.queue(piece)
            return
        self._other_bytes += end - start
        if self._other_bytes > _MAX_OTHER_FIELD_BYTES:
            raise BadRequestError(
                f"form fields other than 'file' are larger than {_MAX_OTHER_FIELD_BYTES} bytes"
            )

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self._ended = True
