#!/usr/bin/env python3
"""The long fuzzing run of the HTTP/1.1 request path (issue 13, item 5): ``make fuzz``.

It drives the properties of ``tests/fuzz_http1.py``, the harness of the short run in
``make test`` (grammar requests, the llhttp corpus, WebSocket upgrades and frames: each
mutated and split, checked against the four invariants in that module's docstring), for
``--inputs`` inputs (default 10**6), in batches of hypothesis runs with seeds derived
from ``--seed``, so a run is reproducible with the same seed and hypothesis version.

It prints one progress line per batch and ends with one summary line::

    fuzz: inputs=1000000 failures=0 known=12 time=812.4s rate=1231/s seed=0 ...

On a failure hypothesis shrinks the input, the harness shrinks it further byte by byte,
and the reproducer is printed (the invariant, the case as Python, a JSON file for
``--replay``); the exit status is then 1 (2 for a usage error). ``--keep-going`` carries
on after a failure to find more. Bugs already reported are tolerated and counted
(``known=``; see ``KNOWN_ISSUES`` in the harness) unless ``--strict``.

    .venv/bin/python scripts/fuzz.py --inputs 20000          # a smoke run
    .venv/bin/python scripts/fuzz.py --replay /tmp/bivio-fuzz-XXXX.json
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_http1 as fz  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402
from hypothesis import seed as seed_with  # noqa: E402

# Which property each batch runs, in turn: the grammar and the WebSocket inputs reach
# deeper than the llhttp corpus (111 cases, mostly one request each).
ROTATION = ("requests", "websocket", "llhttp", "requests", "websocket")


@dataclass
class Tally:
    inputs: int = 0
    shrink_runs: int = 0
    failures: int = 0


def run_batch(name: str, count: int, batch_seed: int,
              tally: Tally) -> tuple[fz.Case, fz.Violation] | None:
    """``count`` inputs of property ``name``; the shrunk failing case, if one fails."""
    failing: list[tuple[fz.Case, fz.Violation]] = []

    @seed_with(batch_seed)
    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              phases=[Phase.generate, Phase.shrink], verbosity=Verbosity.quiet)
    @given(fz.STRATEGIES[name])
    def prop(case: fz.Case) -> None:
        if failing:
            tally.shrink_runs += 1
        else:
            tally.inputs += 1
        try:
            fz.check(case)
        except fz.Violation as exc:
            failing.append((case, exc))  # hypothesis replays the minimal one last
            raise

    try:
        prop()
    except fz.Violation:
        return failing[-1]
    except Exception as exc:  # hypothesis' own (Flaky: the failure did not replay)
        if not failing:
            raise
        print(f"fuzz: hypothesis: {type(exc).__name__}: {exc}", flush=True)
        return failing[0]
    return None


def report(case: fz.Case, violation: fz.Violation) -> None:
    """Shrink further, then print the reproducer and save it for --replay."""
    small = fz.minimize(case, violation)
    try:
        fz.check(small)
        text = str(violation)
    except fz.Violation as exc:
        text = str(exc)
    fd, path = tempfile.mkstemp(prefix="bivio-fuzz-", suffix=".json")
    with open(fd, "w", encoding="utf-8") as file:
        file.write(small.to_json() + "\n")
    print("fuzz: FAILURE " + "-" * 60)
    print(text)
    print(f"fuzz: minimal case ({len(small.data)} bytes, from {len(case.data)}):")
    print(f"    {small!r}")
    print(f"fuzz: replay: {sys.executable} scripts/fuzz.py --replay {path}")
    print("fuzz: " + "-" * 68, flush=True)


def replay(source: str) -> int:
    """Play one saved case, known issues included, and say what happened."""
    fz.TOLERATE_KNOWN = False
    text = Path(source).read_text(encoding="utf-8") if Path(source).is_file() else source
    case = fz.Case.from_json(text)
    print(repr(case))
    result = fz.replay(case)
    print(result)
    return 1 if result.startswith("VIOLATION") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10**6, help="inputs to run (10**6)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the batches (0)")
    parser.add_argument("--batch", type=int, default=5000, help="inputs per batch (5000)")
    parser.add_argument("--keep-going", action="store_true", help="carry on after a failure")
    parser.add_argument("--strict", action="store_true",
                        help="known (reported) bugs fail too")
    parser.add_argument("--replay", metavar="JSON", help="replay one case (file or JSON text)")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    if args.inputs < 1 or args.batch < 1:
        parser.error("--inputs and --batch must be at least 1")
    fz.TOLERATE_KNOWN = not args.strict

    tally = Tally()
    start = time.monotonic()
    batch = 0
    print(f"fuzz: {args.inputs} inputs in batches of {args.batch}, seed {args.seed}, "
          f"properties {sorted(set(ROTATION))}", flush=True)
    while tally.inputs < args.inputs:
        name = ROTATION[batch % len(ROTATION)]
        count = min(args.batch, args.inputs - tally.inputs)
        before = tally.inputs
        failed = run_batch(name, count, args.seed * 1_000_003 + batch, tally)
        batch += 1
        if failed is not None:
            tally.failures += 1
            report(*failed)
            if not args.keep_going:
                break
        elif tally.inputs == before:
            break  # hypothesis generated nothing: the space is exhausted
        elapsed = time.monotonic() - start
        rate = tally.inputs / elapsed if elapsed else 0.0
        eta = (args.inputs - tally.inputs) / rate if rate else 0.0
        print(f"fuzz: {tally.inputs:>8}/{args.inputs} {100 * tally.inputs / args.inputs:5.1f}% "
              f"{name:<9} {rate:6.0f}/s elapsed {elapsed:6.0f}s eta {eta:6.0f}s "
              f"failures {tally.failures} known {sum(fz.KNOWN_HITS.values())}", flush=True)
    elapsed = time.monotonic() - start
    known = ",".join(f"{k}:{v}" for k, v in sorted(fz.KNOWN_HITS.items())) or "none"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"fuzz: inputs={tally.inputs} failures={tally.failures} "
          f"known={sum(fz.KNOWN_HITS.values())} ({known}) time={elapsed:.1f}s "
          f"rate={tally.inputs / elapsed if elapsed else 0:.0f}/s seed={args.seed} "
          f"shrink_runs={tally.shrink_runs} maxrss={rss}MiB "
          f"result={'FAIL' if tally.failures else 'PASS'}", flush=True)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
