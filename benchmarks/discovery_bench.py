"""Discovery benchmark: N simulated hosts discovered into the database, next to the bare transport.

    createdb -h 127.0.0.1 -U postgres bench_discovery
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_discovery \\
        .venv/bin/python benchmarks/discovery_bench.py --hosts 1000 [--repeats 1] [--pages]

Uses a scratch database (migrated here; it must not be a production one: the benchmark creates
hosts, users and audit events in it). The fleet runs in its own process (`python -m simfleet
serve`) on the same machine. In one run, on the same hosts:

1. round 1, the first discovery (`hosts.discovery.discover_hosts`, exactly what a Celery chunk
   task runs, here over the whole fleet at DISCOVERY_CONCURRENCY);
2. round 2, a repeat discovery that finds nothing new;
3. the bare transport fan-out (`remote.run_many_sync` of `inventory`, no database), same targets.

With --repeats K, steps 2 and 3 alternate K times and the medians are reported. SQL statements
are counted per round (a connection execute wrapper, no DEBUG needed); the console process's CPU
time and peak RSS are printed, with the CPU of the fleet process and of the PostgreSQL backend:
on a shared machine the wall time depends on what else runs, the CPU seconds much less, so each
round also gets an "idle-machine floor" (the fleet alone is one GIL-bound process; all three
share the two cores). --pages also renders the main pages with Django's test client.
Nothing is asserted. The LAST line is always exactly:

    discovery_over_transport=<ratio> hosts=<n> discovery_s=<s> transport_s=<s> queries_per_host=<q>

where ratio = round-2 discovery wall time ÷ transport wall time and q = round-2 queries per host.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
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
    return Hypervisor.objects.bulk_create(hosts, batch_size=1000)


@contextmanager
def counting_queries():
    from django.db import connection

    count = {"n": 0}

    def wrapper(execute, sql, params, many, context):
        count["n"] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield count


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def process_cpu(pid: int) -> float:
    """user + system CPU seconds of another process on this machine (the fleet, the PostgreSQL
    backend), from /proc; 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Others:
    """CPU of the fleet process and of this connection's PostgreSQL backend, per round."""

    def __init__(self, fleet_pid):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.pg_pid = cursor.fetchone()[0]
        self.fleet_pid = fleet_pid

    def snapshot(self):
        return process_cpu(self.fleet_pid), process_cpu(self.pg_pid)


def with_cpu(others, run, *args):
    fleet0, pg0 = others.snapshot()
    result = run(*args)
    fleet1, pg1 = others.snapshot()
    result.update(fleet_cpu=fleet1 - fleet0, pg_cpu=pg1 - pg0)
    # What the round needs of a 2-core machine with nothing else running: the fleet is one
    # GIL-bound process, and all three share the two cores.
    result["floor"] = max(result["fleet_cpu"], (result["cpu"] + result["fleet_cpu"] + result["pg_cpu"]) / 2)
    return result


def discovery_round(ids):
    from hosts.discovery import discover_hosts
    from hosts.models import Hypervisor

    cpu, started = cpu_seconds(), time.perf_counter()
    with counting_queries() as queries:
        outcomes = discover_hosts(Hypervisor.objects.filter(pk__in=ids).order_by("pk"))
    return {"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - cpu, "queries": queries["n"],
            "kinds": dict(Counter(o.kind for o in outcomes))}


def transport_round(ids):
    from django.conf import settings

    import remote
    from hosts.discovery import build_target
    from hosts.models import Hypervisor

    hosts = Hypervisor.objects.filter(pk__in=ids).select_related("credential").order_by("pk")
    jobs = [(build_target(h), "inventory", {}) for h in hosts]
    cpu, started = cpu_seconds(), time.perf_counter()
    results = remote.run_many_sync(jobs, concurrency=settings.DISCOVERY_CONCURRENCY)
    return {"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - cpu, "queries": 0,
            "kinds": dict(Counter(r.kind for r in results))}


def time_pages(client, host, nic, repeat=5):
    from django.urls import reverse

    pages = {
        "dashboard": reverse("dashboard"),
        "hosts list": reverse("hosts:list"),
        "hosts list, filtered (driver=igb, iommu=yes)": reverse("hosts:list") + "?driver=igb&iommu=yes",
        "host detail": reverse("hosts:detail", args=[host.pk]),
        "NIC detail": reverse("hosts:nic", args=[nic.pk]),
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


def page_rows():
    from django.contrib.auth import get_user_model
    from django.test import Client

    from hosts.models import Nic
    from tests.conftest import make_user

    get_user_model().objects.filter(username="bench-viewer").delete()
    client = Client()
    client.force_login(make_user("bench-viewer", "viewer", "auditor"))
    nic = Nic.objects.filter(sriov_totalvfs__gt=0).select_related("host").first()
    return [(f"page: {name}", f"{seconds * 1000:.0f} ms (median of 5)")
            for name, seconds in time_pages(client, nic.host, nic).items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1, help="repeat discovery / transport pairs (medians)")
    ap.add_argument("--workers", type=int, default=8, help="agent threads in the fleet process")
    ap.add_argument("--pages", action="store_true", help="also time the main pages afterwards")
    args = ap.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from remote_fanout import start_fleet_process

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        fleet = start_fleet_process(state_dir, args.hosts, args.workers)
        try:
            ids = [h.pk for h in register_fleet(state_dir)]
            others = Others(fleet.pid)
            first = with_cpu(others, discovery_round, ids)
            repeats, transports = [], []
            for _ in range(max(1, args.repeats)):
                repeats.append(with_cpu(others, discovery_round, ids))
                transports.append(with_cpu(others, transport_round, ids))
        finally:
            fleet.terminate()
            fleet.wait(timeout=30)

    def median(rounds, key):
        return statistics.median(r[key] for r in rounds)

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.hosts
    def cpu(r):
        return (f"CPU console {r['cpu']:.1f} s, fleet {r['fleet_cpu']:.1f} s, PostgreSQL {r['pg_cpu']:.1f} s "
                f"→ idle-machine floor {r['floor']:.1f} s")

    rows = [
        (f"round 1, first discovery, {first['kinds']}",
         f"{first['seconds']:.1f} s, {n / first['seconds']:.0f} hosts/s; {first['queries']} queries "
         f"({first['queries'] / n:.2f}/host); {cpu(first)}"),
    ]
    for i, (rep, tr) in enumerate(zip(repeats, transports, strict=True), start=1):
        rows.append((f"round 2.{i}, repeat discovery, {rep['kinds']}",
                     f"{rep['seconds']:.1f} s; {rep['queries']} queries ({rep['queries'] / n:.2f}/host); {cpu(rep)}"))
        rows.append((f"transport {i}, run_many_sync inventory, {tr['kinds']}",
                     f"{tr['seconds']:.1f} s; {cpu(tr)}"))
    rows.append(("console process peak RSS", f"{rss_mib:.0f} MiB"))
    if args.pages:
        rows += page_rows()

    fast_crypto = getattr(settings, "SSH_FAST_CRYPTO", "(no such setting)")
    print(f"\n## discovery, {n} hosts — {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"database {engine}; fleet in its own process ({args.workers} agent threads); "
          f"discovery concurrency {settings.DISCOVERY_CONCURRENCY}; SSH_FAST_CRYPTO={fast_crypto}.\n")
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    discovery_s, transport_s = median(repeats, "seconds"), median(transports, "seconds")
    queries_per_host = median(repeats, "queries") / n
    print(f"discovery_over_transport={discovery_s / transport_s:.2f} hosts={n} discovery_s={discovery_s:.2f} "
          f"transport_s={transport_s:.2f} queries_per_host={queries_per_host:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
