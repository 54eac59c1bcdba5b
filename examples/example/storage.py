"""collectstatic with hashed names and ``.gz`` siblings, the two things ``--static`` rewards.

ManifestStaticFilesStorage gives files content-hashed names
(``base.3f2a9c1b7e4d.css``) that bivio caches for a year as immutable; the
``.gz`` written next to each compressible file lets bivio answer
``Accept-Encoding: gzip`` with no compression work per request.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.staticfiles.storage import ManifestStaticFilesStorage

COMPRESSIBLE = {".css", ".js", ".mjs", ".svg", ".txt", ".map", ".json", ".html", ".xml"}
MIN_SIZE = 256  # smaller files gain nothing worth a second file


class GzipManifestStaticFilesStorage(ManifestStaticFilesStorage):
    def post_process(self, paths: dict[str, Any], dry_run: bool = False,
                     **options: Any) -> Iterator[tuple[str, str, bool]]:
        yield from super().post_process(paths, dry_run, **options)
        if dry_run:
            return
        for name, hashed in self.hashed_files.items():
            for each in {name, hashed}:
                self._write_gzip(Path(self.path(each)))

    @staticmethod
    def _write_gzip(path: Path) -> None:
        if path.suffix not in COMPRESSIBLE or not path.is_file():
            return
        data = path.read_bytes()
        if len(data) < MIN_SIZE:
            return
        packed = gzip.compress(data, compresslevel=9, mtime=0)
        if len(packed) < len(data):
            path.with_name(path.name + ".gz").write_bytes(packed)
