"""permessage-deflate settings, measured in-process: compression speed and size.

What bivio's ``deflate_factory()`` uses (docs/websockets.md) is chosen by this
table. Each row compresses a stream of distinct messages with websockets'
``PerMessageDeflate.encode`` (context takeover, as a server does by default),
4 KiB window (window bits 12) unless said otherwise:

- ``json``: compressible JSON-like text (records of ids, names, floats, tags);
- ``random``: incompressible bytes;
- "window 9": the smallest window a client may ask for (Autobahn 13.3, 13.5);
- "no context takeover": a new compressor per message (Autobahn 13.2, 13.5, 13.6).

Timing is the best of several ``timeit`` repeats of this thread's CPU time
(``time.thread_time``: other processes on a shared machine do not count).

    python -m bench.ws_deflate            # the Markdown table
    python -m bench.ws_deflate --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import random
import time
import timeit
import zlib

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

MESSAGES = 32  # distinct messages per stream: context takeover must not see repeats only
# (label, memLevel, level); level -1 is zlib's default (6), which websockets keeps.
SETTINGS = tuple((f"memLevel {m}, level {1 if lv == 1 else 6}", m, lv)
                 for lv in (-1, 1) for m in (5, 6, 7, 8, 9))
# (column, kind, size, window bits, no context takeover)
COLUMNS = (
    ("json 1 KiB", "json", 1024, 12, False),
    ("json 16 KiB", "json", 16 * 1024, 12, False),
    ("json 128 KiB", "json", 128 * 1024, 12, False),
    ("random 16 KiB", "random", 16 * 1024, 12, False),
    ("random 128 KiB", "random", 128 * 1024, 12, False),
    ("json 16 KiB, window 9", "json", 16 * 1024, 9, False),
    ("random 16 KiB, window 9", "random", 16 * 1024, 9, False),
    ("json 1 KiB, no context takeover", "json", 1024, 12, True),
)
UVICORN = ("window 15, memLevel 8, level 6 (uvicorn)", 8, -1)  # its window when none is asked
NAMES = ("ada", "grace", "linus", "guido", "barbara", "ken", "dennis", "margaret", "alan")
TAGS = ("asgi", "wsgi", "http", "ws", "deflate", "json", "python", "server", "bench")


def json_messages(size: int, count: int, rng: random.Random) -> list[bytes]:
    """``count`` distinct JSON-like messages of exactly ``size`` bytes."""
    messages = []
    for _ in range(count):
        parts: list[str] = []
        length = 0
        while length < size:
            record = json.dumps({
                "id": rng.randrange(10**9), "user": rng.choice(NAMES),
                "score": round(rng.random() * 1000, 3), "active": rng.random() < 0.5,
                "tags": rng.sample(TAGS, 3), "ts": f"2026-11-{rng.randrange(1, 31):02d}T"
                f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
            })
            parts.append(record)
            length += len(record) + 2
        messages.append(("[" + ", ".join(parts) + "]").encode()[:size])
    return messages


def random_messages(size: int, count: int, rng: random.Random) -> list[bytes]:
    return [rng.randbytes(size) for _ in range(count)]


def extension(wbits: int, mem_level: int, level: int, reset: bool) -> PerMessageDeflate:
    return PerMessageDeflate(False, reset, wbits, wbits, {"memLevel": mem_level, "level": level})


def measure(wbits: int, mem_level: int, level: int, reset: bool, messages: list[bytes],
            repeat: int) -> tuple[float, float]:
    """(MB/s of input compressed, compressed/original ratio)."""
    frames = [Frame(Opcode.BINARY, m) for m in messages]
    total = sum(len(m) for m in messages)
    ext = extension(wbits, mem_level, level, reset)
    compressed = sum(len(ext.encode(f).data) for f in frames)

    def run() -> None:
        encode = ext.encode
        for f in frames:
            encode(f)

    timer = timeit.Timer(run, timer=time.thread_time)
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat, number)) / number
    return total / best / 1e6, compressed / total


def memory(wbits: int, mem_level: int) -> int:
    """zlib's deflate state: window + hash + pending buffers (zconf.h), in KiB."""
    return ((1 << (wbits + 2)) + (1 << (mem_level + 9))) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    rng = random.Random(13)
    make = {"json": json_messages, "random": random_messages}
    payloads = {(kind, size): make[kind](size, MESSAGES, rng)
                for _, kind, size, _, _ in COLUMNS}
    print(f"zlib {zlib.ZLIB_RUNTIME_VERSION}; MB/s of input compressed, best of {repeat}")
    print()
    print("| setting | memory | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("| --- | --- |" + " --- |" * len(COLUMNS))
    ratios: dict[tuple[str, int, int], float] = {}
    rows = [(label, 12, m, lv) for label, m, lv in SETTINGS] + [(UVICORN[0], 15) + UVICORN[1:]]
    for label, wbits, mem_level, level in rows:
        cells = []
        for _, kind, size, bits, reset in COLUMNS:
            bits = wbits if bits == 12 else bits  # the row's window, unless the column's
            speed, ratio = measure(bits, mem_level, level, reset, payloads[kind, size], repeat)
            if bits == 12 and not reset:
                ratios[kind, size, level] = ratio
            cells.append(f"{speed:.0f}")
        print(f"| {label} | {memory(wbits, mem_level)} KiB | " + " | ".join(cells) + " |",
              flush=True)
    print()
    print("Compressed size / original (window 12; memLevel changes it by under 1 point):")
    print()
    for level in (-1, 1):
        print(f"- level {1 if level == 1 else 6}: " + ", ".join(
            f"{kind} {size // 1024} KiB {ratios[kind, size, level]:.1%}"
            for kind, size in sorted({(c[1], c[2]) for c in COLUMNS})))


if __name__ == "__main__":
    main()
