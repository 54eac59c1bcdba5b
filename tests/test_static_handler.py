"""The static-files handler (bivio.adapters.static.StaticFiles) over an in-memory stream."""

from __future__ import annotations

import asyncio
import os
from email.utils import formatdate
from pathlib import Path

import pytest
from fakes import FakeStream

from bivio.adapters.static import StaticFiles
from bivio.core.paths import parse_mounts

CSS = b"body { color: red; }\n" * 10
GZ = b"\x1f\x8bpretend-gzip"


class NextHandler:
    """The handler StaticFiles wraps: records what reaches it."""

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.bound: object = None
        self.stopped = False

    async def __call__(self, stream: FakeStream) -> None:
        self.streams.append(stream)
        await stream.start_response(200, [(b"content-length", b"3")])
        await stream.send_body(b"app", False)

    def bind(self, ctx: object) -> None:
        self.bound = ctx

    def shutdown(self) -> None:
        self.stopped = True


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "site.css").write_bytes(CSS)
    (tmp_path / "app.js").write_bytes(b"console.log(1);\n")
    (tmp_path / "app.js.gz").write_bytes(GZ)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return tmp_path


@pytest.fixture
def static(root: Path) -> StaticFiles:
    return StaticFiles(parse_mounts([f"/static/={root}"]), NextHandler())


def serve(static: StaticFiles, method: str = "GET", path: bytes = b"/static/site.css",
          headers: list[tuple[bytes, bytes]] | None = None) -> FakeStream:
    stream = FakeStream(method, path, headers=headers)
    asyncio.run(static(stream))
    return stream


def test_a_file_is_sent(static: StaticFiles, root: Path) -> None:
    stream = serve(static)
    assert stream.status == 200
    assert bytes(stream.body) == CSS
    assert stream.header(b"content-type") == b"text/css; charset=utf-8"
    assert stream.header(b"content-length") == b"%d" % len(CSS)
    assert stream.header(b"accept-ranges") == b"bytes"
    assert stream.header(b"cache-control") == b"no-cache"
    st = os.stat(root / "site.css")
    assert stream.header(b"etag") == b'"%x-%x"' % (st.st_mtime_ns, st.st_size)
    assert stream.header(b"last-modified") == formatdate(st.st_mtime, usegmt=True).encode()
    assert stream.header(b"vary") is None  # no precompressed sibling
    assert stream.response_complete and not stream.aborted and not stream.closes_after
    assert stream.interface == "static"
    assert static.next_handler.streams == []  # type: ignore[attr-defined]


def test_a_file_in_a_subdirectory(static: StaticFiles) -> None:
    stream = serve(static, path=b"/static/sub/data.bin")
    assert stream.status == 200 and bytes(stream.body) == bytes(range(256))
    assert stream.header(b"content-type") == b"application/octet-stream"


def test_head_sends_the_headers_only(static: StaticFiles) -> None:
    stream = serve(static, "HEAD")
    assert stream.status == 200
    assert stream.header(b"content-length") == b"%d" % len(CSS)
    assert bytes(stream.body) == b""


def test_if_none_match_gives_304(static: StaticFiles) -> None:
    etag = serve(static).header(b"etag")
    assert etag is not None
    stream = serve(static, headers=[(b"if-none-match", b'"other", ' + etag)])
    assert stream.status == 304
    assert bytes(stream.body) == b""
    assert stream.header(b"etag") == etag
    assert stream.header(b"content-length") is None
    assert stream.response_complete


def test_if_none_match_that_does_not_match_sends_the_file(static: StaticFiles) -> None:
    stream = serve(static, headers=[(b"if-none-match", b'"stale"')])
    assert stream.status == 200 and bytes(stream.body) == CSS


def test_if_modified_since_gives_304(static: StaticFiles, root: Path) -> None:
    mtime = os.stat(root / "site.css").st_mtime
    since = formatdate(mtime + 60, usegmt=True).encode()
    assert serve(static, headers=[(b"if-modified-since", since)]).status == 304
    earlier = formatdate(mtime - 3600, usegmt=True).encode()
    assert serve(static, headers=[(b"if-modified-since", earlier)]).status == 200


@pytest.mark.parametrize(("range_header", "first", "last"), [
    (b"bytes=2-4", 2, 4), (b"bytes=-5", len(CSS) - 5, len(CSS) - 1),
    (b"bytes=200-", 200, len(CSS) - 1), (b"bytes=0-99999", 0, len(CSS) - 1),
])
def test_range_gives_206(static: StaticFiles, range_header: bytes, first: int,
                         last: int) -> None:
    stream = serve(static, headers=[(b"range", range_header)])
    assert stream.status == 206
    assert bytes(stream.body) == CSS[first:last + 1]
    assert stream.header(b"content-range") == b"bytes %d-%d/%d" % (first, last, len(CSS))
    assert stream.header(b"content-length") == b"%d" % (last - first + 1)


@pytest.mark.parametrize("range_header", [b"bytes=%d-" % len(CSS), b"bytes=-0"])
def test_unsatisfiable_range_gives_416(static: StaticFiles, range_header: bytes) -> None:
    stream = serve(static, headers=[(b"range", range_header)])
    assert stream.status == 416
    assert stream.header(b"content-range") == b"bytes */%d" % len(CSS)
    assert stream.header(b"accept-ranges") is None
    assert CSS not in bytes(stream.body)


def test_if_range_that_does_not_match_sends_the_whole_file(static: StaticFiles) -> None:
    stream = serve(static, headers=[(b"range", b"bytes=0-0"), (b"if-range", b'"stale"')])
    assert stream.status == 200 and bytes(stream.body) == CSS


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_get_405_with_allow(static: StaticFiles, method: str) -> None:
    stream = serve(static, method)
    assert stream.status == 405
    assert stream.header(b"allow") == b"GET, HEAD"
    assert stream.interface == "static"
    assert static.next_handler.streams == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", [b"/static/missing.css", b"/static/sub", b"/static/sub/",
                                  b"/static/"])
def test_missing_files_and_directories_are_404(static: StaticFiles, path: bytes) -> None:
    stream = serve(static, path=path)
    assert stream.status == 404
    assert static.next_handler.streams == []  # type: ignore[attr-defined]


def test_symlink_out_of_the_root_is_404(static: StaticFiles, root: Path,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_bytes(b"secret")
    (root / "link.txt").symlink_to(outside)
    stream = serve(static, path=b"/static/link.txt")
    assert stream.status == 404 and b"secret" not in bytes(stream.body)


@pytest.mark.parametrize("path", [
    b"/static/../secret", b"/static/sub/../site.css", b"/static/%2e%2e/secret",
    b"/static/./site.css", b"/static/a%00b", b"/static/a%5cb", b"/static/%ff.css",
])
def test_dot_segments_nul_backslash_and_bad_utf8_are_400(static: StaticFiles,
                                                         path: bytes) -> None:
    stream = serve(static, path=path)
    assert stream.status == 400
    assert static.next_handler.streams == []  # type: ignore[attr-defined]


def test_percent_encoded_names_are_decoded(static: StaticFiles, root: Path) -> None:
    (root / "a b é.txt").write_bytes(b"spaced")
    stream = serve(static, path=b"/static/a%20b%20%C3%A9.txt")
    assert stream.status == 200 and bytes(stream.body) == b"spaced"


def test_precompressed_gzip_sibling(static: StaticFiles) -> None:
    stream = serve(static, path=b"/static/app.js", headers=[(b"accept-encoding", b"gzip, br")])
    assert stream.status == 200
    assert bytes(stream.body) == GZ
    assert stream.header(b"content-encoding") == b"gzip"
    # the type of the file named, not of the archive (mimetypes says one or the other)
    assert stream.header(b"content-type") in (b"text/javascript; charset=utf-8",
                                              b"application/javascript; charset=utf-8")
    assert stream.header(b"content-length") == b"%d" % len(GZ)
    assert stream.header(b"vary") == b"Accept-Encoding"
    assert (stream.header(b"etag") or b"").endswith(b'-gzip"')  # its own validator


def test_brotli_is_preferred_when_both_are_accepted(static: StaticFiles, root: Path) -> None:
    (root / "app.js.br").write_bytes(b"pretend-brotli")
    stream = serve(static, path=b"/static/app.js", headers=[(b"accept-encoding", b"gzip, br")])
    assert stream.header(b"content-encoding") == b"br"
    assert bytes(stream.body) == b"pretend-brotli"


def test_hashed_names_are_immutable(static: StaticFiles, root: Path) -> None:
    (root / "base.3f2a9c1b7e4d.css").write_bytes(b"x")
    stream = serve(static, path=b"/static/base.3f2a9c1b7e4d.css")
    assert stream.header(b"cache-control") == b"public, max-age=31536000, immutable"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_404_and_does_not_hang(static: StaticFiles, root: Path) -> None:
    os.mkfifo(root / "pipe")
    assert serve(static, path=b"/static/pipe").status == 404


@pytest.mark.parametrize("accept", [None, b"identity", b"gzip;q=0", b"br"])
def test_sibling_not_accepted_sends_the_plain_file(static: StaticFiles,
                                                   accept: bytes | None) -> None:
    headers = [(b"accept-encoding", accept)] if accept is not None else []
    stream = serve(static, path=b"/static/app.js", headers=headers)
    assert stream.status == 200
    assert bytes(stream.body) == b"console.log(1);\n"
    assert stream.header(b"content-encoding") is None
    assert stream.header(b"vary") == b"Accept-Encoding"  # a sibling exists


@pytest.mark.parametrize("path", [b"/", b"/static", b"/staticfile.css", b"/api/static/x.css"])
def test_requests_outside_the_mount_reach_the_next_handler(static: StaticFiles,
                                                           path: bytes) -> None:
    stream = serve(static, "POST", path)
    assert static.next_handler.streams == [stream]  # type: ignore[attr-defined]
    assert stream.status == 200 and bytes(stream.body) == b"app"
    assert stream.interface == "-"  # not claimed by the static handler


def test_longest_mount_wins(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    admin = tmp_path_factory.mktemp("admin")
    (admin / "site.css").write_bytes(b"admin css")
    static = StaticFiles(parse_mounts([f"/static/={root}", f"/static/admin/={admin}"]),
                         NextHandler())
    assert bytes(serve(static, path=b"/static/admin/site.css").body) == b"admin css"
    assert bytes(serve(static, path=b"/static/site.css").body) == CSS


def test_bind_and_shutdown_are_passed_on(static: StaticFiles) -> None:
    ctx = object()
    static.bind(ctx)  # type: ignore[arg-type]
    static.shutdown()
    assert static.next_handler.bound is ctx  # type: ignore[attr-defined]
    assert static.next_handler.stopped  # type: ignore[attr-defined]


def test_client_gone_before_the_file_is_sent(static: StaticFiles) -> None:
    stream = FakeStream("GET", b"/static/site.css")
    stream.disconnect()
    asyncio.run(static(stream))  # no exception escapes
    assert bytes(stream.body) == b""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_file_descriptor_is_leaked(static: StaticFiles) -> None:
    before = set(os.listdir("/proc/self/fd"))
    for headers in ([], [(b"range", b"bytes=9999-")], [(b"if-none-match", b"*")],
                    [(b"accept-encoding", b"gzip")]):
        serve(static, headers=headers)
        serve(static, path=b"/static/app.js", headers=headers)
    serve(static, "HEAD")
    serve(static, path=b"/static/missing")
    stream = FakeStream("GET", b"/static/site.css")
    stream.disconnect()
    asyncio.run(static(stream))
    assert set(os.listdir("/proc/self/fd")) == before
