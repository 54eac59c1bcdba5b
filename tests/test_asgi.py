"""Unit tests of the ASGI adapter's pure pieces."""

import pytest

from bivio.core.paths import scope_paths


@pytest.mark.parametrize(("raw", "root", "path", "raw_out"), [
    (b"/x", "", "/x", b"/x"),
    (b"/caf%C3%A9", "", "/café", b"/caf%C3%A9"),
    (b"/x", "/app", "/app/x", b"/app/x"),
    (b"/app/x", "/app", "/app/x", b"/app/x"),
    (b"/app", "/app", "/app", b"/app"),
    (b"/apple", "/app", "/app/apple", b"/app/apple"),
])
def test_scope_paths(raw, root, path, raw_out):
    assert scope_paths(raw, root) == (path, raw_out)
