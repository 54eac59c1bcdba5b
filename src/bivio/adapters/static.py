"""Static files answered from the event loop, before any application.

``--static URL_PREFIX=DIRECTORY`` (repeatable) mounts a directory. A request
whose path starts with a mount's prefix never reaches the app, WSGI or ASGI:
:class:`StaticFiles` wraps the final stream handler and answers it here,
with ``os.sendfile`` through :meth:`Stream.send_file` (zero copy, no thread).
Why here: a Django deployment's ``STATIC_ROOT`` is a directory of immutable
files; sending them through the app (or a WSGI thread) costs a thread and a
copy per file for nothing.

Decisions (docs/static.md says the same to users):

- Under a prefix, only GET and HEAD are served; any other method gets 405
  with ``Allow: GET, HEAD``. A missing file is 404: the prefix belongs to the
  files, the app is not asked.
- Paths: percent-decoded once; NUL, backslashes, ``.``/``..`` segments and
  invalid UTF-8 get 400; a resolved path (symlinks followed) outside the
  mount's root, a directory or anything but a regular file gets 404.
- Validators: a strong ETag from size and mtime (per encoding), Last-Modified;
  If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2); a match is 304.
- Range: one ``bytes=`` range gets 206, an unsatisfiable one 416 with
  ``Content-Range: bytes */SIZE``; several ranges, another unit or a
  malformed header get the whole file (200), which RFC 9110 14.2 allows;
  If-Range that does not match gives the whole file.
- A ``NAME.gz`` / ``NAME.br`` sibling is sent instead of ``NAME`` when the
  client's Accept-Encoding allows it (``Content-Encoding`` and
  ``Vary: Accept-Encoding``; Vary is sent whenever a sibling exists).
- Names carrying a 12-hex-digit content hash (``app.3f2a9c1b7e4d.css``,
  Django's ManifestStaticFilesStorage) are cached for a year, ``immutable``;
  other files get ``no-cache`` (cache, but revalidate: a cheap 304).

Blocking: ``os.open``/``os.fstat``/``os.stat`` run on the loop. On a local
disk they are metadata lookups served from the kernel's cache in
microseconds; the bytes themselves go out with ``sendfile`` without the loop
reading them. A static root on a slow network filesystem would stall the
loop; serve such files from the app or a CDN instead.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Iterable
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import unquote_to_bytes

from ..core.context import Handler, ServerContext, StreamHandler
from ..core.paths import Mount
from ..core.stream import ClientDisconnected, Headers, Stream, send_plain

HASHED_NAME = re.compile(r"\.[0-9a-f]{12}\.[A-Za-z0-9]+$")
IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
# Tried in this order when the client accepts both: brotli is the smaller.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_TEXT_LIKE = ("application/javascript", "application/json", "image/svg+xml",
              "application/xml", "application/manifest+json")
_WRAPPED_TYPES = {"gzip": "application/gzip", "br": "application/x-brotli",
                  "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def parse_range(value: bytes, size: int) -> tuple[int, int] | None | bool:
    """One ``Range`` header against a file of ``size`` bytes.

    Returns ``(first, last)`` inclusive for one satisfiable range, ``None``
    to ignore the header (malformed, another unit, several ranges: serve the
    whole file), or ``False`` when the single range is unsatisfiable (416).
    """
    unit, sep, spec = value.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes":
        return None
    spec = spec.strip()
    if b"," in spec:
        return None
    first_text, dash, last_text = spec.partition(b"-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or first_text == b"") \
            or not (last_text.isdigit() or last_text == b""):
        return None
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid syntax (RFC 9110 14.1.1): ignored
    last = int(last_text) if last_text else size - 1
    if first >= size:
        return False
    return first, min(last, size - 1)


def accepts(accept_encoding: bytes, coding: str) -> bool:
    """Whether ``Accept-Encoding`` allows ``coding`` (q=0 refuses; ``*`` counts)."""
    star: bool | None = None
    for item in accept_encoding.split(b","):
        name, _, params = item.strip().partition(b";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(b";"):
            key, _, val = param.strip().partition(b"=")
            if key.strip().lower() == b"q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if name == coding.encode("ascii"):
            return q > 0
        if name == b"*":
            star = q > 0
    return bool(star)


def etag_matches(header: bytes, etag: bytes) -> bool:
    """If-None-Match: weak comparison against a list of tags or ``*``."""
    if header.strip() == b"*":
        return True
    strong = etag.removeprefix(b"W/")
    return any(tag.strip().removeprefix(b"W/") == strong for tag in header.split(b","))


def content_type(name: str) -> bytes:
    """The Content-Type of ``name``; text gets ``charset=utf-8`` (what collectstatic writes)."""
    ctype, wrapper = mimetypes.guess_type(name, strict=False)
    if wrapper:  # a .gz/.br asked for by its own name: the archive itself
        ctype = _WRAPPED_TYPES.get(wrapper, "application/octet-stream")
    if ctype is None:
        return b"application/octet-stream"
    if ctype.startswith("text/") or ctype in _TEXT_LIKE:
        ctype += "; charset=utf-8"
    return ctype.encode("ascii")


def http_date(timestamp: float) -> bytes:
    return formatdate(timestamp, usegmt=True).encode("ascii")


def _not_modified_since(header: bytes, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(header.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # an invalid date is ignored (RFC 9110 13.1.3)
    return int(mtime) <= since


class StaticFiles:
    """Answer requests under ``mounts`` from disk; pass every other stream to ``next_handler``.

    ``bind`` and ``shutdown`` are passed on to ``next_handler``, so wrapping
    changes nothing else.
    """

    def __init__(self, mounts: Iterable[Mount], next_handler: StreamHandler) -> None:
        self.mounts = tuple(mounts)
        self.next_handler: StreamHandler = next_handler
        self._next: Handler = next_handler

    def bind(self, ctx: ServerContext) -> None:
        self.next_handler.bind(ctx)

    def shutdown(self) -> None:
        self.next_handler.shutdown()

    async def __call__(self, stream: Stream) -> None:
        path = stream.raw_path
        for mount in self.mounts:
            if path.startswith(mount.prefix):
                stream.interface = "static"
                await self.serve(stream, mount, path[len(mount.prefix):])
                return
        await self._next(stream)

    async def serve(self, stream: Stream, mount: Mount, rel: bytes) -> None:
        """Answer one request under ``mount``; ``rel`` is the raw path after its prefix."""
        if stream.method not in ("GET", "HEAD"):
            await _plain(stream, 405, b"Method Not Allowed", [(b"allow", b"GET, HEAD")])
            return
        filename = resolve(mount.root, rel)
        if filename is None:
            await _plain(stream, 400, b"Bad Request")
            return
        fd, st, encoding = _open_best(filename, _header(stream.headers, b"accept-encoding"))
        if fd is None or st is None:
            await _plain(stream, 404, b"Not Found")
            return
        try:
            await self._send(stream, filename, fd, st, encoding)
        except ClientDisconnected:
            pass
        finally:
            os.close(fd)

    async def _send(self, stream: Stream, filename: str, fd: int, st: os.stat_result,
                    encoding: str | None) -> None:
        size = st.st_size
        etag = b'"%x-%x%s"' % (st.st_mtime_ns, size,
                               b"-" + encoding.encode("ascii") if encoding else b"")
        headers: Headers = [
            (b"etag", etag),
            (b"last-modified", http_date(st.st_mtime)),
            (b"cache-control", IMMUTABLE if HASHED_NAME.search(filename) else REVALIDATE),
        ]
        if encoding is not None or _has_sibling(filename):
            headers.append((b"vary", b"Accept-Encoding"))
        request = stream.headers
        inm = _header(request, b"if-none-match")
        ims = _header(request, b"if-modified-since")
        if inm is not None:
            not_modified = etag_matches(inm, etag)
        else:
            not_modified = ims is not None and _not_modified_since(ims, st.st_mtime)
        if not_modified:
            await stream.start_response(304, headers)
            await stream.send_body(b"", False)
            return
        headers.append((b"content-type", content_type(filename)))
        if encoding is not None:
            headers.append((b"content-encoding", encoding.encode("ascii")))
        headers.append((b"accept-ranges", b"bytes"))
        status, offset, count = 200, 0, size
        range_header = _header(request, b"range")
        if range_header is not None and stream.method == "GET" \
                and _if_range_ok(_header(request, b"if-range"), etag, st.st_mtime):
            chosen = parse_range(range_header, size)
            if chosen is False:
                headers = [h for h in headers if h[0] != b"accept-ranges"]
                headers.append((b"content-range", b"bytes */%d" % size))
                await _plain(stream, 416, b"Range Not Satisfiable", headers)
                return
            if isinstance(chosen, tuple):
                first, last = chosen
                status, offset, count = 206, first, last - first + 1
                headers.append((b"content-range", b"bytes %d-%d/%d" % (first, last, size)))
        headers.append((b"content-length", b"%d" % count))
        await stream.start_response(status, headers)
        await stream.send_file(fd, offset, count)


def resolve(root: str, rel: bytes) -> str | None:
    """The real path ``rel`` (raw, percent-encoded) names under ``root``.

    ``None``: malformed (400). ``""``: nothing that may be served (a
    directory, or a symlink resolving outside ``root``): 404 like a missing
    file, so probing cannot tell them apart.
    """
    raw = unquote_to_bytes(rel)
    if b"\0" in raw or b"\\" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = [p for p in text.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    if not parts or text.endswith("/"):
        return ""  # a directory: never listed; "" does not open
    real = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath((root, real)) != root:
        return ""  # a symlink leading out of the root: as if it were not there
    return real


def _open_best(filename: str, accept_encoding: bytes | None
               ) -> tuple[int | None, os.stat_result | None, str | None]:
    """Open the best variant of ``filename``: a precompressed sibling if accepted, else it."""
    if not filename:
        return None, None, None
    if accept_encoding:
        for coding, suffix in ENCODINGS:
            if accepts(accept_encoding, coding):
                fd, st = _open_regular(filename + suffix)
                if fd is not None:
                    return fd, st, coding
    fd, st = _open_regular(filename)
    return fd, st, None


def _open_regular(filename: str) -> tuple[int | None, os.stat_result | None]:
    """Open a regular file (O_NONBLOCK: a FIFO planted in the root cannot hang the loop)."""
    try:
        fd = os.open(filename, _OPEN_FLAGS)
    except OSError:
        return None, None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None, None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None
    return fd, st


def _has_sibling(filename: str) -> bool:
    return any(os.path.isfile(filename + suffix) for _, suffix in ENCODINGS)


def _if_range_ok(if_range: bytes | None, etag: bytes, mtime: float) -> bool:
    """Whether a Range applies: no If-Range, or one naming the current representation."""
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(b'"'):
        return if_range == etag  # strong comparison (RFC 9110 13.1.5)
    if if_range.startswith(b"W/"):
        return False
    try:
        return parsedate_to_datetime(if_range.decode("latin-1")).timestamp() == int(mtime)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


async def _plain(stream: Stream, status: int, text: bytes, extra: Headers | None = None
                 ) -> None:
    try:
        await send_plain(stream, status, text + b"\n", extra or ())
    except ClientDisconnected:
        pass
