"""Autobahn TestSuite conformance, driven by kosoku against bivio's echo app.

The fast cases (all but the 12.* and 13.* compression volume cases) run here;
``make conformance`` runs all 517 (see scripts/conformance.py and docs/websockets.md).
Every case must be OK, NON-STRICT or INFORMATIONAL.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

kosoku = pytest.importorskip("kosoku")

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def run_cases(port: int, exclude: list[str], concurrency: int) -> list:
    async def go():
        try:
            return await kosoku.run_fuzzingclient(
                f"ws://127.0.0.1:{port}", exclude_cases=exclude, concurrency=concurrency
            )
        except kosoku.FailureError as exc:
            return exc.results

    return asyncio.run(go())


@pytest.mark.timeout(300)
def test_autobahn_fast_cases(serve):
    running = serve("tests.apps.ws:app", "--no-access-log")
    results = run_cases(running.port, ["12.*", "13.*"], 4)
    verdicts = collections.Counter(r.behavior.value for r in results)
    bad = [(r.case_id, r.behavior.value, r.behavior_close.value) for r in results
           if r.behavior.value not in ACCEPTED or r.behavior_close.value not in ACCEPTED]
    assert not bad, f"failing Autobahn cases: {bad}"
    assert sum(verdicts.values()) == 301, verdicts
