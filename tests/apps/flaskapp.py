"""A Flask app served as WSGI in tests/e2e/test_wsgi_flask.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flask import Flask, Response, request, send_file, stream_with_context

app = Flask(__name__)
FILE = Path(__file__).resolve()


@app.get("/")
def index():
    return "Hello from Flask"


@app.get("/file")
def file():
    return send_file(FILE, mimetype="text/x-python")


@app.get("/big-file")
def big_file():
    """send_file of the file named by $FLASKAPP_BIG_FILE (the slow-reader tests)."""
    return send_file(os.environ["FLASKAPP_BIG_FILE"], mimetype="application/octet-stream")


@app.get("/generate")
def generate():
    count = request.args.get("count", 5, type=int)

    def chunks():
        for i in range(count):
            yield f"item-{i} of {request.args.get('count', '5')};"
    return Response(stream_with_context(chunks()), mimetype="text/plain")


@app.post("/upload")
def upload():
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = request.stream.read(64 * 1024)
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
    return {"length": total, "sha256": digest.hexdigest()}


@app.post("/form")
def form():
    return {"name": request.form.get("name"), "files": sorted(request.files)}


@app.get("/boom")
def boom():
    raise RuntimeError("flask view exploded")
