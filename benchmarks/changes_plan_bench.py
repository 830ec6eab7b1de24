"""Planning a change for a big fleet: time and SQL queries of the live preview and of create_change.

    createdb h_changes_bench   # any scratch database
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_changes_bench CONSOLE_VAR_DIR=$PWD/var/bench-changes \
        .venv/bin/python benchmarks/changes_plan_bench.py --hosts 1000 [--write benchmarks/results/changes_plan.md]

Hosts are DL360-like (4 tg3 ports, 4 igb ports with 7 VFs max, some VFs in use by guests). The
change targets all of them with a filter (driver=igb) and sets 4 VFs on every igb PF. Timings are
wall-clock medians of --repeat runs; the query count must not depend on --hosts.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from changes import services  # noqa: E402
from changes.models import ChangeRequest  # noqa: E402
from hosts.models import Credential, Hypervisor, Intent, Nic, VirtualFunction  # noqa: E402

PREFIX = "bench-"


def build(hosts: int) -> None:
    have = Hypervisor.objects.filter(name__startswith=PREFIX).count()
    if have >= hosts:
        return
    credential = Credential.objects.filter(name="bench").first()
    if credential is None:
        credential = Credential(name="bench")
        credential.set_private_key("x", "ssh-ed25519 AAAA bench", "SHA256:bench")
        credential.save()
    now = timezone.now()
    with transaction.atomic():
        new = Hypervisor.objects.bulk_create([
            Hypervisor(name=f"{PREFIX}{i:05d}", address=f"10.0.{i // 250}.{i % 250}", credential=credential,
                       status="reachable", host_key="ssh-ed25519 AAAA", facts_refreshed_at=now,
                       kernel="5.15.0-91-generic")
            for i in range(have, hosts)
        ])
        nics = []
        for host in new:
            for port in range(4):
                nics.append(Nic(host=host, name=f"eno{port + 1}", pci_address=f"0000:02:00.{port}", driver="tg3"))
                nics.append(Nic(host=host, name=f"eno{port + 49}", pci_address=f"0000:04:00.{port}", driver="igb",
                                vendor_id="8086", device_id="1521", sriov_totalvfs=7, sriov_numvfs=2,
                                persisted=True, persisted_numvfs=2))
        Nic.objects.bulk_create(nics)
        Intent.objects.bulk_create([
            Intent(host_id=nic.host_id, operation="set_vfs", subject=nic.pci_address, value=2,
                   summary=f"2 VFs on {nic.name}", applied_at=timezone.now())
            for nic in nics if nic.driver == "igb"
        ])
        VirtualFunction.objects.bulk_create([
            VirtualFunction(nic=nic, index=index, pci_address=f"0000:05:{index:02d}.0",
                            guest="vm-1" if index == 1 and nic.host_id % 10 == 0 else "")
            for nic in nics if nic.driver == "igb" for index in range(2)
        ])


def timed(fn, repeat):
    runs, queries = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        queries = len(ctx.captured_queries)
    return statistics.median(runs), queries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    build(args.hosts)
    user = get_user_model().objects.filter(username="bench-operator").first()
    if user is None:
        user = get_user_model().objects.create_user("bench-operator", password="x" * 20)
        user.groups.set(Group.objects.filter(name="operator"))
    ids = list(Hypervisor.objects.filter(name__startswith=PREFIX).order_by("name").values_list("pk", flat=True))
    data = {"title": "bench", "reason": "benchmark", "targets": {"host_ids": ids[:args.hosts]},
            "operations": [{"op": "set_vfs", "select": {"by": "driver", "value": "igb"}, "count": 4}],
            "parallelism": 10, "canary_count": 1, "max_failures": 1, "allow_guest_impact": True}
    preview = timed(lambda: services.preview_plan(data), args.repeat)
    created = []
    create = timed(lambda: created.append(services.create_change(data, user)), args.repeat)
    ChangeRequest.objects.filter(pk__in=[c.pk for c in created]).delete()
    lines = [
        f"# Change planning benchmark ({args.hosts} hosts × 4 igb PFs)",
        "",
        f"{platform.node()}, Python {platform.python_version()}, {connection.vendor}, {time.strftime('%Y-%m-%d')}",
        "",
        "| operation | median seconds | SQL queries |",
        "| --- | ---: | ---: |",
        f"| live preview (services.preview_plan) | {preview[0]:.3f} | {preview[1]} |",
        f"| create_change (plan stored, audited) | {create[0]:.3f} | {create[1]} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    main()
