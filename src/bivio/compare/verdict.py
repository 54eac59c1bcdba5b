"""The recommendation: which mode, why, and the exact command to run it.

The rule is deliberately simple, and printed with the verdict so nobody has
to trust it blindly:

1. A mode that failed (did not start, or answered unlike the others) is out.
2. If the project has WebSocket routes, pure WSGI is out: it cannot serve them.
3. Of the rest, the mode with the most requests/s over the measured paths at
   the loaded concurrency (geometric mean) wins, unless a simpler mode is
   within :data:`TIE` of it. Simpler means fewer moving parts: WSGI, then
   ASGI, then hybrid (two apps in one worker).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from . import servers
from .run import LABELS, Comparison

TIE = 0.10
SIMPLICITY = ("wsgi", "asgi", "hybrid")
RULE = ("failing modes are out; WebSocket routes rule out pure WSGI; of the rest, the most "
        "requests/s over the measured paths at the loaded concurrency (geometric mean) wins, "
        f"unless a simpler mode (WSGI, then ASGI, then hybrid) is within {TIE:.0%} of it")
WAITS = 1.5
"""A path not written async goes to ASGI in hybrid mode only when ASGI served it this many
times faster: the mark of a view that waits (streams, polls), which holds one of WSGI's
threads all along. A smaller lead is within the noise of a busy machine."""
MEMORY_SHARE = 0.8
"""Of the memory available now, the share the workers may take (the rest: the OS, the
database, a deploy's second set of workers starting)."""


@dataclass
class Verdict:
    mode: str
    command: str
    reasons: list[str] = field(default_factory=list)
    rule: str = RULE
    workers: int | None = None
    workers_memory_allows: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "command": self.command, "reasons": self.reasons,
                "rule": self.rule, "workers": self.workers,
                "workers_memory_allows": self.workers_memory_allows}


@dataclass
class Targets:
    """How to spell each mode as a bivio command for the user."""

    django: str | None
    wsgi: str
    asgi: str
    passthrough: list[str]

    def command(self, mode: str, asgi_paths: list[str], workers: int | None) -> str:
        if mode == "wsgi":
            argv = [self.wsgi]
        elif mode == "asgi":
            argv = [self.asgi]
        elif self.django:
            argv = ["--django", self.django]
        else:
            argv = [self.wsgi, "--asgi-app", self.asgi]
        if mode == "hybrid":
            for prefix in asgi_paths:
                argv += ["--asgi-path", prefix]
        argv += self.passthrough
        if workers and workers > 1:
            argv += ["--workers", str(workers)]
        return "bivio " + shlex.join(argv)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×"


def decide(result: Comparison, targets: Targets) -> Verdict:
    top = max(result.setup.concurrency)
    paths = result.paths
    modes = result.modes
    reasons: list[str] = []
    for mode in modes.values():
        if not mode.ok:
            reasons.append(f"{LABELS[mode.name]} is out: {mode.error}")
    project = result.project
    needs_asgi = bool(project and project.needs_asgi)
    candidates = [m for m in SIMPLICITY if m in modes and modes[m].ok]
    if needs_asgi and "wsgi" in candidates:
        candidates.remove("wsgi")
        reasons.append(f"{', '.join(project.websocket_routes)} needs ASGI (WebSocket), "  # type: ignore[union-attr]
                       "so pure WSGI is ruled out")
    scores = {m: modes[m].score(paths, top) for m in candidates}
    scores = {m: s for m, s in scores.items() if s is not None}
    if not scores:
        reasons.append("no mode both works and was measured: nothing to recommend")
        return Verdict("none", "", reasons)
    best = max(scores, key=lambda m: scores[m])
    chosen = best
    for simpler in SIMPLICITY:
        if simpler == best:
            break
        if simpler in scores and scores[simpler] >= scores[best] * (1 - TIE):
            chosen = simpler
            reasons.append(f"{LABELS[simpler]} is within {TIE:.0%} of {LABELS[best]} "
                           f"({scores[simpler]:,.0f} vs {scores[best]:,.0f} req/s) and simpler")
            break
    where = f"{len(paths)} path{'s' if len(paths) != 1 else ''} at concurrency {top}"
    all_scores = {m: modes[m].score(paths, top) for m in modes if modes[m].ok}
    wsgi, asgi = all_scores.get("wsgi"), all_scores.get("asgi")
    if wsgi and asgi:
        if wsgi >= asgi:
            reasons.insert(0, f"pages through WSGI are {_ratio(wsgi, asgi)} faster here "
                              f"({wsgi:,.0f} vs {asgi:,.0f} req/s, geometric mean over {where})")
        else:
            reasons.insert(0, f"pages through ASGI are {_ratio(asgi, wsgi)} faster here "
                              f"({asgi:,.0f} vs {wsgi:,.0f} req/s, geometric mean over {where})")
    if chosen == "hybrid" and all_scores.get("hybrid") and asgi:
        reasons.append(f"hybrid serves the pages at {all_scores['hybrid']:,.0f} req/s against "
                       f"{asgi:,.0f} for pure ASGI")
    # --asgi-path: a path earns ASGI where ASGI measured faster for it, async view or not
    # (a view that waits pins one of WSGI's threads); an async view that is faster through
    # WSGI stays there.
    asgi_paths = []
    routed = hybrid_prefixes(result)
    for path in [*routed, *(p for p in paths if p not in routed and p != "/")]:
        w, a = _path_rps(result, "wsgi", path, top), _path_rps(result, "asgi", path, top)
        if path in routed and w is not None and a is not None and a < w:
            reasons.append(f"{path} is an async view, yet no faster through ASGI here (WSGI "
                           f"{w:,.0f}, ASGI {a:,.0f} req/s): route it to ASGI only if it waits "
                           "(SSE, long polling, slow I/O)")
        elif path in routed:
            asgi_paths.append(path)
        elif w is not None and a is not None and a > w * WAITS:
            asgi_paths.append(path)
            if chosen == "hybrid":
                reasons.append(f"{path} is faster through ASGI here ({a:,.0f} vs {w:,.0f} "
                               f"req/s at concurrency {top}): it waits, and under WSGI each "
                               "wait holds a thread; hybrid routes it with --asgi-path")
    if project is None and chosen == "wsgi":
        reasons.append("nothing was inspected (--wsgi/--asgi): if the ASGI app serves "
                       "WebSockets, WSGI cannot, and hybrid is the mode to run")
    workers, allows = _workers(modes[chosen].rss)
    if allows is not None:
        reasons.append(f"memory allows {allows} worker{'s' if allows != 1 else ''} here "
                       f"({modes[chosen].rss / 2**20:,.0f} MiB each, "
                       f"{servers.memory_available() / 2**20:,.0f} MiB available); "
                       f"--workers {workers} for {os.cpu_count() or 1} CPU cores")
    command = targets.command(chosen, asgi_paths, workers)
    return Verdict(chosen, command, reasons, workers=workers, workers_memory_allows=allows)


def hybrid_prefixes(result: Comparison) -> list[str]:
    """The ``--asgi-path`` prefixes hybrid mode was measured with (async views' paths)."""
    args = result.setup.modes.get("hybrid", [])
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--asgi-path"]


def _path_rps(result: Comparison, mode: str, path: str, concurrency: int) -> float | None:
    found = result.modes.get(mode)
    if found is None or not found.ok:
        return None
    for run in found.runs.get(path, []):
        if run.concurrency == concurrency:
            return run.rps
    return None


def _workers(rss: float) -> tuple[int | None, int | None]:
    """Workers to run: one per core, no more than the memory measured allows."""
    available = servers.memory_available()
    if not rss or not available:
        return None, None
    allows = max(1, int(available * MEMORY_SHARE // rss))
    return max(1, min(os.cpu_count() or 1, allows)), allows
