"""Discovery and page benchmark: N simulated hosts discovered into the database, then the main pages.

    createdb -h 127.0.0.1 -U postgres bench_discovery
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_discovery \\
        .venv/bin/python benchmarks/discovery_bench.py --hosts 200 [--rounds 2]

Uses a scratch database (migrated here; it must not be a production one: the benchmark creates
hosts, users and audit events in it). The fleet runs in its own process (`python -m simfleet
serve`), discovery runs `hosts.discovery.discover_hosts` exactly as the Celery task does, pages
are rendered with Django's test client. Prints a Markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench"))


def register_fleet(state_dir: Path):
    import remote
    from hosts.credentials import create_credential
    from hosts.models import Credential, Hypervisor

    # Each run's fleet has a new client key: start from a clean slate.
    Hypervisor.objects.filter(credential__name="bench").delete()
    Credential.objects.filter(name="bench").delete()
    credential = create_credential("bench", (state_dir / "client_key").read_text())
    with open(state_dir / "inventory.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    hosts = [
        Hypervisor(name=r["name"], address=r["address"], port=int(r["port"]), username=r["username"],
                   credential=credential, host_key=r["host_key"],
                   host_key_fingerprint=remote.fingerprint(r["host_key"]))
        for r in rows
    ]
    return Hypervisor.objects.bulk_create(hosts)


def time_pages(client, host, nic, repeat=5):
    from django.urls import reverse

    pages = {
        "dashboard": reverse("dashboard"),
        "hosts list": reverse("hosts:list"),
        "hosts list, filtered (driver=igb, drifted=no)": reverse("hosts:list") + "?driver=igb&drifted=no",
        "host detail": reverse("hosts:detail", args=[host.pk]),
        "NIC detail": reverse("hosts:nic", args=[nic.pk]),
        "audit list": reverse("audit:list"),
    }
    results = {}
    for name, url in pages.items():
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
        results[name] = statistics.median(timings)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=8, help="agent threads in the fleet process")
    args = ap.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from remote_fanout import start_fleet_process

    from hosts.discovery import discover_hosts
    from hosts.models import Hypervisor, Nic
    from tests.conftest import make_user

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    call_command("migrate", verbosity=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        fleet = start_fleet_process(state_dir, args.hosts, args.workers)
        try:
            hosts = register_fleet(state_dir)
            for round_no in range(1, args.rounds + 1):
                started = time.perf_counter()
                outcomes = discover_hosts(Hypervisor.objects.filter(pk__in=[h.pk for h in hosts]))
                elapsed = time.perf_counter() - started
                kinds = Counter(o.kind for o in outcomes)
                rows.append((f"discovery round {round_no}: {args.hosts} hosts, outcomes {dict(kinds)}",
                             f"{elapsed:.1f} s ({args.hosts / elapsed:.1f} hosts/s)"))
        finally:
            fleet.terminate()
            fleet.wait(timeout=30)

    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="bench-viewer").delete()
    client = Client()
    client.force_login(make_user("bench-viewer", "viewer", "auditor"))
    nic = Nic.objects.filter(host__name__startswith="hv", sriov_totalvfs__gt=0).select_related("host").first()
    host = nic.host
    for name, seconds in time_pages(client, host, nic).items():
        rows.append((f"page: {name}", f"{seconds * 1000:.0f} ms (median of 5)"))

    print(f"\n## discovery + pages, {args.hosts} hosts — {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"database {engine}; fleet in its own process ({args.workers} agent threads); "
          f"discovery concurrency {settings.DISCOVERY_CONCURRENCY}.\n")
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
