"""Run all 517 Autobahn TestSuite cases (via kosoku) against bivio's echo app.

``make conformance`` runs this. Cases 12.* and 13.* (permessage-deflate volume)
run one at a time (``-p 1``), the rest four at a time. Prints a Markdown table
of verdicts per case group for docs/websockets.md; exits 1 if any case is not
OK, NON-STRICT or INFORMATIONAL. Reports (HTML/JSON) go to reports/servers/.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import start_bivio  # noqa: E402
from kosoku import FailureError, run_fuzzingclient  # noqa: E402

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


async def run(url: str, include: list[str] | None, exclude: list[str] | None, p: int) -> list:
    try:
        return await run_fuzzingclient(url, include, exclude, concurrency=p)
    except FailureError as exc:
        return exc.results


def main() -> int:
    running = start_bivio("tests.apps.ws:app", "--no-access-log")
    try:
        url = f"ws://127.0.0.1:{running.port}"
        results = asyncio.run(run(url, None, ["12.*", "13.*"], 4))
        results += asyncio.run(run(url, ["12.*", "13.*"], None, 1))
    finally:
        running.stop()
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total: collections.Counter = collections.Counter()
    bad = []
    slowest = max(results, key=lambda r: r.duration)
    for r in results:
        group = r.case_id.split(".")[0]
        table[group][r.behavior.value] += 1
        total[r.behavior.value] += 1
        if r.behavior.value not in ACCEPTED or r.behavior_close.value not in ACCEPTED:
            bad.append((r.case_id, r.behavior.value, r.behavior_close.value))
    verdicts = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED", "ERROR"]
    print("| cases | " + " | ".join(verdicts) + " |")
    print("| --- |" + " --- |" * len(verdicts))
    for group in sorted(table, key=int):
        print(f"| {group}.* | " + " | ".join(str(table[group][v]) for v in verdicts) + " |")
    print(f"| **all {len(results)}** | "
          + " | ".join(f"**{total[v]}**" for v in verdicts) + " |")
    print(f"\nslowest case: {slowest.case_id} ({slowest.duration} ms)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"bivio at {commit or 'unknown commit'}")
    if bad:
        print(f"\nNOT CONFORMANT: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
