"""The one header validator: what may go into a response head, for every protocol.

Response headers come from applications (ASGI ``headers``, WSGI
``start_response``, a WebSocket ``accept``) and from the command line
(``--header``). Whatever the source, one rule decides, so a value refused on
one path can never slip through another:

- a name is an RFC 9110 token (5.6.2), non-empty;
- a value holds no CR, LF, NUL or other control character but horizontal tab
  (RFC 9110 5.5): those would split the head (response splitting) or be
  rejected by the client.

HTTP/2 adds its own rules on top (lower-case names, no connection-specific
fields); those belong to its protocol module, not here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

Headers = list[tuple[bytes, bytes]]

_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Header pairs already found valid: apps send the same few headers on every
# response, and a set lookup is several times cheaper than two regex searches.
_CHECKED: set[tuple[bytes, bytes]] = set()
_CHECKED_MAX = 4096


def valid_name(name: bytes) -> bool:
    """Whether ``name`` is a non-empty RFC 9110 token."""
    return bool(name) and _BAD_NAME.search(name) is None


def valid_value(value: bytes) -> bool:
    """Whether ``value`` is free of CR, LF, NUL and the other controls but tab."""
    return _BAD_VALUE.search(value) is None


def check_header(name: bytes, value: bytes) -> None:
    """Raise :class:`ValueError` naming the header if it may not be sent."""
    if not valid_name(name):
        raise ValueError(f"invalid response header name {name!r}")
    if not valid_value(value):
        raise ValueError(f"invalid response header value for {name!r}")


def check_headers(headers: Iterable[Any]) -> None:
    """Refuse header names/values that would split or corrupt the response (hot path)."""
    checked = _CHECKED
    for pair in headers:
        try:
            if pair in checked:
                continue
        except TypeError:  # a list pair, a bytearray: check it, never cache it
            pass
        name, value = pair
        check_header(name, value)
        if type(name) is bytes and type(value) is bytes:
            if len(checked) >= _CHECKED_MAX:
                checked.clear()  # bounded: per-response values (cookies, etags) churn it
            checked.add((name, value))
