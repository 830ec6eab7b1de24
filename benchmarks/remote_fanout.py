"""Fan-out benchmark for remote.run_many: `inventory` over N simulated hosts, prints hosts/second.

    .venv/bin/python benchmarks/remote_fanout.py --hosts 200 --concurrency 50 [--rounds 3] [--in-process]

By default the fleet runs in a separate process (`python -m simfleet serve`), so the client and the
simulated hosts do not share one GIL; --in-process runs SimFleet in a thread of this process.
Results are printed (human line + one JSON line); nothing is asserted. Tests never time things.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remote import HostTarget, run_many_sync  # noqa: E402


def targets_from_inventory(state_dir: Path, op_timeout: float) -> list[HostTarget]:
    key = (state_dir / "client_key").read_text()
    with open(state_dir / "inventory.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [HostTarget(name=r["name"], address=r["address"], port=int(r["port"]), username=r["username"],
                       private_key=key, known_host_key=r["host_key"], connect_timeout=30.0,
                       op_timeout=op_timeout) for r in rows]


def start_fleet_process(state_dir: Path, hosts: int, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simfleet", "serve", "--count", str(hosts), "--state-dir", str(state_dir),
         "--base-port", "0", "--workers", str(workers)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simfleet exited early (status {proc.wait()})")
        if "hosts up" in line:
            print(line.strip(), file=sys.stderr)
            return proc
    proc.terminate()
    raise RuntimeError("simfleet did not come up in 300 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8, help="simfleet agent worker threads")
    ap.add_argument("--op-timeout", type=float, default=120.0)
    ap.add_argument("--in-process", action="store_true", help="run SimFleet in a thread of this process")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="remote-fanout-") as tmp:
        state_dir = Path(tmp)
        proc = fleet = None
        try:
            if args.in_process:
                from simfleet import SimFleet

                fleet = SimFleet(state_dir, count=args.hosts, base_port=0, agent_workers=args.workers,
                                 users=("root", "admin")).start()
            else:
                proc = start_fleet_process(state_dir, args.hosts, args.workers)
            targets = targets_from_inventory(state_dir, args.op_timeout)
            rounds = []
            for i in range(args.rounds):
                t0 = time.perf_counter()
                results = run_many_sync([(t, "inventory", {}) for t in targets], concurrency=args.concurrency)
                elapsed = time.perf_counter() - t0
                kinds = Counter(r.kind for r in results)
                durations = sorted(r.duration for r in results)
                rounds.append({
                    "round": i + 1,
                    "seconds": round(elapsed, 3),
                    "hosts_per_second": round(len(results) / elapsed, 1),
                    "kinds": dict(kinds),
                    "p50_host_seconds": round(durations[len(durations) // 2], 3),
                    "p95_host_seconds": round(durations[int(len(durations) * 0.95) - 1], 3),
                })
                print(f"round {i + 1}: {len(results)} hosts in {elapsed:.2f} s = "
                      f"{len(results) / elapsed:.1f} hosts/s  kinds={dict(kinds)}")
        finally:
            if fleet is not None:
                fleet.stop()
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    summary = {
        "benchmark": "remote_fanout",
        "hosts": args.hosts,
        "concurrency": args.concurrency,
        "fleet": "in-process" if args.in_process else "subprocess",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rounds": rounds,
        "best_hosts_per_second": max(r["hosts_per_second"] for r in rounds),
    }
    print(json.dumps(summary))
    return 0 if all(set(r["kinds"]) == {"ok"} for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
