"""The gateway stub's resident memory over time idle, and over handshakes: does it level off?

A soak judges memory growth after warm-up; this separates what fills once from what grows for good, on one
stub and outside the soak. Idle, RSS every 30 s (the stub's own timers and samplers run); under load, RSS
after each batch of handshakes (WebSocket open, connect.challenge, connect, hello-ok, close: 16 at a time,
the stub at time scale 0.1 and zero cost). Bounded in count and time; the stub is stopped at the end.

    python benchmarks/stub_memory.py --idle-minutes 10
    python benchmarks/stub_memory.py --batches 24 --batch 1500 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import psutil
from stub_handshake_rate import measure, start_server, stub_handshake

MB = 1024.0 * 1024.0
CONCURRENCY = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-minutes", type=float, help="sample an idle stub for this long")
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--batch", type=int, default=1500, help="handshakes per batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    process, ready = start_server([sys.executable, "-m", "gateway_stub", "--port", "0", "--time-scale", "0.1"])
    stub = psutil.Process(process.pid)
    rows: list[dict[str, Any]] = []
    try:
        if args.idle_minutes is not None:
            started = time.monotonic()
            while True:
                rows.append({"minutes": round((time.monotonic() - started) / 60.0, 1),
                             "rss_mb": round(stub.memory_info().rss / MB, 2)})
                if time.monotonic() - started >= args.idle_minutes * 60.0:
                    break
                time.sleep(30.0)
        else:
            for batch in range(1, args.batches + 1):
                rate = asyncio.run(measure(stub_handshake, ready["url"], ready["token"], args.batch, CONCURRENCY))
                rows.append({"handshakes": batch * args.batch, "rss_mb": round(stub.memory_info().rss / MB, 2),
                             "handshakes_per_s": round(rate, 1)})
    finally:
        process.terminate()
        process.wait(10)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print("  ".join(f"{key} {value}" for key, value in row.items()))


if __name__ == "__main__":
    main()
