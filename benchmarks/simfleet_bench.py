"""simfleet at scale: start N simulated hosts in one process, measure startup time and memory,
then fan an inventory out over all of them through real SSH (plain asyncssh, like the console).

    .venv/bin/python benchmarks/simfleet_bench.py [--count 1000] [--concurrency 100]
        [--out benchmarks/results/simfleet.md]

The fleet runs in its own process (`python -m simfleet serve`) so that the client (this process)
and the servers use the two cores separately, as in the demo. Results are appended as a Markdown
section; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remote.protocol import agent_source, command_for, encode_payload  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_fleet(state_dir: Path, count: int) -> tuple[subprocess.Popen, float]:
    (state_dir / "fleet.json").unlink(missing_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simfleet",
            "serve",
            "--count",
            str(count),
            "--state-dir",
            str(state_dir),
            "--base-port",
            "0",
            "--workers",
            "8",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (state_dir / "fleet.json").exists():
        if proc.poll() is not None:
            raise SystemExit("simfleet serve failed: " + proc.stderr.read())
        time.sleep(0.05)
    return proc, time.monotonic() - t0


def stop_fleet(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


async def fan_out(rows: list[dict], key: str, concurrency: int) -> tuple[float, list[float], int]:
    source = agent_source()
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures = 0

    async def one(row):
        nonlocal failures
        async with sem:
            t0 = time.monotonic()
            try:
                known = asyncssh.import_known_hosts(f"[{row['address']}]:{row['port']} {row['host_key']}\n")
                async with asyncssh.connect(
                    row["address"],
                    int(row["port"]),
                    username=row["username"],
                    client_keys=[key],
                    known_hosts=known,
                ) as conn:
                    result = await conn.run(
                        command_for(row["username"]),
                        encoding=None,
                        input=encode_payload(
                            source, {"op": "inventory", "args": {}, "request_id": row["name"]}
                        ),
                    )
                    if not json.loads(result.stdout)["ok"]:
                        failures += 1
            except (OSError, asyncssh.Error, ValueError):
                failures += 1
            latencies.append(time.monotonic() - t0)

    t0 = time.monotonic()
    await asyncio.gather(*(one(r) for r in rows))
    return time.monotonic() - t0, latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "simfleet.md"))
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="simfleet-bench-"))
    try:
        proc, cold = start_fleet(state_dir, args.count)  # generates N host keys
        stop_fleet(proc)
        proc, warm = start_fleet(state_dir, args.count)  # keys already on disk
        try:
            rss_idle = rss_mb(proc.pid)
            rows = list(csv.DictReader((state_dir / "inventory.csv").open()))
            key = str(state_dir / "client_key")
            total, lat, failures = asyncio.run(fan_out(rows, key, args.concurrency))
            rss_after = rss_mb(proc.pid)
            total2, lat2, failures2 = asyncio.run(fan_out(rows, key, args.concurrency))
            rss_after2 = rss_mb(proc.pid)
        finally:
            stop_fleet(proc)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]

    report = f"""
## simfleet, {args.count} hosts — {time.strftime("%Y-%m-%d %H:%M")}

Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},
asyncssh {asyncssh.__version__}. Fleet in one process (`python -m simfleet serve --count {args.count}`,
8 agent worker threads); client in a second process, plain asyncssh, concurrency {args.concurrency},
one SSH connection per host, `inventory` with the real agent bytes.

| measure | value |
| --- | --- |
| startup, cold (generates {args.count} ed25519 host keys) | {cold:.2f} s |
| startup, warm (keys on disk) | {warm:.2f} s |
| fleet RSS after startup | {rss_idle:.0f} MiB |
| fan-out inventory #1: wall time | {total:.2f} s ({args.count / total:.0f} hosts/s) |
| fan-out #1: per host p50 / p95 / max | {statistics.median(lat):.3f} / {pct(lat, 0.95):.3f} / \
{max(lat):.3f} s |
| fan-out #1: failures | {failures} |
| fleet RSS after fan-out #1 | {rss_after:.0f} MiB |
| fan-out inventory #2: wall time | {total2:.2f} s ({args.count / total2:.0f} hosts/s) |
| fan-out #2: per host p50 / p95 | {statistics.median(lat2):.3f} / {pct(lat2, 0.95):.3f} s |
| fan-out #2: failures | {failures2} |
| fleet RSS after fan-out #2 | {rss_after2:.0f} MiB |
"""
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("# simfleet benchmarks\n\nProduced by `benchmarks/simfleet_bench.py`; newest last.\n")
    with out.open("a") as f:
        f.write(report)


if __name__ == "__main__":
    main()
