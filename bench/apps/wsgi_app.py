"""The WSGI benchmark app: the same routes as :mod:`bench.apps.asgi_app`, as WSGI."""

import time

HELLO = b"Hello, world!"
BIG = b"x" * (64 * 1024)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = HELLO
    elif path == "/64k":
        body = BIG
    elif path == "/post":
        stream = environ["wsgi.input"]
        size = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            size += len(chunk)
        body = b"%d" % size
    elif path == "/sleep":
        time.sleep(0.01)  # a blocking call, as a WSGI view would make
        body = HELLO
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
