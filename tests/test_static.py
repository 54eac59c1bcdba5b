"""Static files without sockets: option parsing, Range, validators, path resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bivio.adapters.static import (
    HASHED_NAME,
    accepts,
    content_type,
    etag_matches,
    parse_range,
    resolve,
)
from bivio.core.config import Config, ConfigError
from bivio.core.paths import parse_mounts


def test_static_option_normalizes_to_absolute(tmp_path, monkeypatch):
    (tmp_path / "files").mkdir()
    monkeypatch.chdir(tmp_path)
    config = Config.from_options({"static": ["/static=files"]}, env={})
    # Absolute, so a worker started elsewhere serves the same directory.
    assert config.static == (f"/static/={tmp_path / 'files'}",)


def test_static_option_from_environment(tmp_path):
    config = Config.from_options({}, env={"BIVIO_STATIC": f"/a/={tmp_path};/b/={tmp_path}"})
    assert config.static == (f"/a/={tmp_path}", f"/b/={tmp_path}")


@pytest.mark.parametrize("spec, message", [
    ("static", "expected URL_PREFIX=DIRECTORY"),
    ("static=/tmp", "must start with '/'"),
    ("/static/=", "expected URL_PREFIX=DIRECTORY"),
    ("/static/../x/=/tmp", "invalid URL prefix"),
    ("/static/=/no/such/directory/here", "is not a directory"),
])
def test_static_option_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_options({"static": [spec]}, env={})


def test_longest_prefix_first(tmp_path):
    mounts = parse_mounts([f"/static/={tmp_path}", f"/static/admin/={tmp_path}"])
    assert [m.prefix for m in mounts] == [b"/static/admin/", b"/static/"]


@pytest.mark.parametrize("header, expected", [
    (b"bytes=0-4", (0, 4)),
    (b"bytes=5-", (5, 9)),
    (b"bytes=-3", (7, 9)),
    (b"bytes=-30", (0, 9)),
    (b"bytes=8-100", (8, 9)),
    (b"bytes=10-", False),
    (b"bytes=-0", False),
    (b"bytes=4-2", None),
    (b"bytes=0-1,4-5", None),
    (b"items=0-1", None),
    (b"bytes=a-b", None),
    (b"bytes=-", None),
    (b"bytes", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 10) == expected


def test_parse_range_empty_file_is_unsatisfiable():
    assert parse_range(b"bytes=0-", 0) is False
    assert parse_range(b"bytes=-5", 0) is False


@pytest.mark.parametrize("header, coding, expected", [
    (b"gzip, deflate, br", "br", True),
    (b"gzip;q=0, br", "gzip", False),
    (b"GZIP", "gzip", True),
    (b"*", "br", True),
    (b"*;q=0", "gzip", False),
    (b"br;q=0, *", "br", False),
    (b"identity", "gzip", False),
    (b"gzip;q=oops", "gzip", False),
])
def test_accepts(header, coding, expected):
    assert accepts(header, coding) is expected


def test_etag_matches():
    assert etag_matches(b'"a", "b"', b'"b"')
    assert etag_matches(b'W/"b"', b'"b"')
    assert etag_matches(b"*", b'"x"')
    assert not etag_matches(b'"a"', b'"b"')


def test_hashed_names():
    assert HASHED_NAME.search("admin/css/base.3f2a9c1b7e4d.css")
    assert not HASHED_NAME.search("admin/css/base.css")
    assert not HASHED_NAME.search("app.3F2A9C1B7E4D.css")  # Django writes lower-case hex
    assert not HASHED_NAME.search("app.3f2a9c1b7e4.css")


def test_content_type():
    assert content_type("a.css") == b"text/css; charset=utf-8"
    assert content_type("a.png") == b"image/png"
    assert content_type("a.js.gz") == b"application/gzip"  # asked for by its own name
    assert content_type("README") == b"application/octet-stream"


def test_resolve(tmp_path):
    root = str(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_text("x")
    os.symlink("/etc", tmp_path / "out")
    os.symlink(tmp_path / "sub" / "f.txt", tmp_path / "in")
    assert resolve(root, b"sub/f.txt") == str(tmp_path / "sub" / "f.txt")
    assert resolve(root, b"sub//f.txt") == str(tmp_path / "sub" / "f.txt")
    assert resolve(root, b"in") == str(Path(tmp_path / "sub" / "f.txt"))
    for malformed in (b"../x", b"sub/../f", b"%2e%2e/x", b"%2E%2E%2Fx", b"a%5cb", b"a\\b",
                      b"a%00b", b"./x", b"%ff"):
        assert resolve(root, malformed) is None, malformed
    assert resolve(root, b"out/passwd") == ""  # a symlink out of the root
    assert resolve(root, b"sub/") == ""  # directories are never listed
    assert resolve(root, b"") == ""
