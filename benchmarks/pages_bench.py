"""Pages at fleet scale: 10,000 hosts / 80,000 NICs (and 1,000,000 audit events) in PostgreSQL.

    createdb -h 127.0.0.1 -U postgres bench_pages    # a scratch database
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_pages CONSOLE_VAR_DIR=$PWD/var/bench-pages \\
        .venv/bin/python benchmarks/pages_bench.py [--hosts 10000] [--events 1000000] [--requests 30] \\
        [--write benchmarks/results/pages.md]

Rows are seeded directly (bulk inserts, no SSH): 8 NICs per host in the simulated fleet's mix
(igb, i40e, mlx5_core, tg3, bnxt), some with VFs, statuses, IOMMU and drift spread over the fleet;
the audit events are audit_bench.py's (a valid hash chain, loaded with COPY). Re-running reuses
the rows. Each page is requested --requests times through Django's test client (one client, the
full middleware and templates) after two warm-up requests; the table gives the median and p95
of the server time, the p95 of the CPU it took (web process + database backend: what a machine
nobody else is using would show) and the number of SQL queries. Nothing is asserted.
"""

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from hosts.models import Hypervisor, Label, Nic, VirtualFunction  # noqa: E402

PREFIX = "pg"
# (driver, vendor, device, totalvfs or None, VF driver): the simulated fleet's NIC families.
FAMILIES = [
    ("igb", "8086", "1521", 7, "igbvf"),
    ("i40e", "8086", "1572", 64, "iavf"),
    ("mlx5_core", "15b3", "1017", 16, "mlx5_core"),
    ("bnxt_en", "14e4", "16d7", 8, "bnxt_en"),
]
STATUSES = ["reachable"] * 14 + ["unreachable", "host_key_pending", "auth_failed", "error", "host_key_mismatch"]


def _host(i, rnd, now):
    status = rnd.choice(STATUSES)
    host = Hypervisor(
        name=f"{PREFIX}{i:05d}", address=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", status=status,
        hostname=f"{PREFIX}{i:05d}.example.net", kernel=rnd.choice(["5.15.0-91-generic", "6.1.0-18-amd64",
                                                                        "4.18.0-513.el8.x86_64"]),
        os_id="ubuntu", os_name="Ubuntu 22.04.4 LTS", cpu_vendor=rnd.choice(["intel", "intel", "amd"]),
        cmdline="BOOT_IMAGE=/vmlinuz ro quiet", iommu_active=rnd.choice([True, False, None]),
        drifted=rnd.random() < 0.03, last_discovery_ok=status == "reachable",
        facts_refreshed_at=now, last_discovery_at=now, last_contact_at=now,
    )
    host.drift_reasons = ["eno49 (0000:04:00.0) has 0 VFs; the console applied 4."] if host.drifted else []
    host.pending_host_key_fingerprint = "SHA256:pending" if status == "host_key_pending" else ""
    return host


def _nics(host, rnd, now):
    family = FAMILIES[host.pk % len(FAMILIES)]
    nics = []
    for port in range(4):  # onboard ports, no SR-IOV
        nics.append(Nic(host=host, name=f"eno{port + 1}", pci_address=f"0000:02:00.{port}", driver="tg3",
                        vendor_id="14e4", device_id="1657", present=True, last_seen_at=now))
    driver, vendor, device, total, _vf_driver = family
    for port in range(4):
        numvfs = rnd.choice([0, 0, 0, 2, 4]) if total else None
        nics.append(Nic(host=host, name=f"eno{49 + port}", pci_address=f"0000:04:00.{port}", driver=driver,
                        vendor_id=vendor, device_id=device, sriov_totalvfs=total, sriov_numvfs=numvfs,
                        present=rnd.random() > 0.01, last_seen_at=now))
    return nics


def seed(count):
    have = Hypervisor.objects.filter(name__startswith=PREFIX).count()
    if have >= count:
        return 0.0
    started = time.monotonic()
    rnd = random.Random(16)
    now = timezone.now()
    figures = any(f.name == "vfs_configured" for f in Hypervisor._meta.get_fields())
    labels = [Label.objects.get_or_create(name=name)[0] for name in ("rack-a", "rack-b", "prod")]
    with transaction.atomic():
        for start in range(have, count, 2000):
            hosts = Hypervisor.objects.bulk_create(
                [_host(i, rnd, now) for i in range(start, min(count, start + 2000))]
            )
            links = [Hypervisor.labels.through(hypervisor_id=h.pk, label_id=labels[h.pk % 3].pk) for h in hosts]
            Hypervisor.labels.through.objects.bulk_create(links)
            nics = Nic.objects.bulk_create([nic for h in hosts for nic in _nics(h, rnd, now)], batch_size=5000)
            vf_driver = {f[0]: f[4] for f in FAMILIES}
            vfs = [VirtualFunction(nic=nic, index=k, pci_address=f"0000:04:10.{k}", netdev=f"{nic.name}v{k}",
                                   driver=vf_driver[nic.driver], present=True, last_seen_at=now)
                   for nic in nics if nic.sriov_numvfs for k in range(nic.sriov_numvfs)]
            VirtualFunction.objects.bulk_create(vfs, batch_size=5000)
        if figures:
            Hypervisor.refresh_nic_figures(Hypervisor.objects.values_list("pk", flat=True))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return time.monotonic() - started


def backend_cpu() -> float:
    """CPU seconds of this connection's PostgreSQL backend so far (same machine, from /proc)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p95(values):
    values = sorted(values)
    return values[min(len(values) - 1, round(0.95 * len(values)) - 1)]


def timed(client, url, requests):
    """Wall time per request, and CPU: the web process's per request plus the database backend's
    mean (its clock ticks are too coarse per request). On a machine other work shares, the CPU
    figures are what an idle one would show; the wall times are what this one showed."""
    for _ in range(2):
        assert client.get(url).status_code == 200, url
    times, cpus = [], []
    db_before = backend_cpu()
    for _ in range(requests):
        with CaptureQueriesContext(connection) as ctx:
            started, cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        assert response.status_code == 200, (url, response.status_code)
    db_mean = (backend_cpu() - db_before) / requests
    return {"median": statistics.median(times), "p95": p95(times), "queries": len(ctx.captured_queries),
            "cpu_p95": p95(cpus) + db_mean}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--write", help="append the results as markdown to this file")
    args = ap.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("run against PostgreSQL (DATABASE_URL)")
    call_command("migrate", verbosity=0)
    seed_s = seed(args.hosts)
    import audit_bench

    events, events_s = audit_bench.load(args.events)

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-viewer")
    user.groups.set(Group.objects.filter(name__in=["viewer", "auditor"]))
    client = Client()
    client.force_login(user)
    host = Hypervisor.objects.filter(name__startswith=PREFIX, sriov_nics__gt=0).order_by("pk").first() \
        if hasattr(Hypervisor, "sriov_nics") else Hypervisor.objects.filter(name__startswith=PREFIX).first()
    pages = [
        ("dashboard", "/"),
        ("hosts list", "/hosts/"),
        ("hosts filtered driver=igb&iommu=yes", "/hosts/?driver=igb&iommu=yes"),
        ("hosts sorted by VFs, page 50", "/hosts/?sort=-vfs&page=50"),
        ("host page", f"/hosts/{host.pk}/"),
        ("API hypervisors", "/api/v1/hypervisors/"),
    ]
    nics = Nic.objects.count()
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — {Hypervisor.objects.count():,} hosts, "
        f"{nics:,} NICs, {VirtualFunction.objects.count():,} VFs, {events:,} audit events",
        "",
        f"PostgreSQL {connection.cursor().connection.info.server_version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; seeding {seed_s:.0f} s, audit load {events_s:.0f} s (rows added this run). "
        f"{args.requests} requests per page, one client.",
        "",
        f"Load average when it started: {os.getloadavg()[0]:.1f}.",
        "",
        "| page | median | p95 | CPU p95 (web + database) | queries |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    for name, url in pages:
        r = timed(client, url, args.requests)
        lines.append(f"| {name} | {r['median'] * 1000:.0f} ms | {r['p95'] * 1000:.0f} ms | "
                     f"{r['cpu_p95'] * 1000:.0f} ms | {r['queries']} |")
        print(lines[-1], flush=True)
    if args.write:
        with open(args.write, "a") as out:
            out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
