"""Audit at a million events: page, filtered pages, verify_audit and export on PostgreSQL.

    createdb h_audit_bench   # any scratch database
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h_audit_bench CONSOLE_VAR_DIR=$PWD/var/bench-audit \
        .venv/bin/python benchmarks/audit_bench.py --events 1000000 [--export] \
        [--write benchmarks/results/audit.md]

    # the cost of one append (record() in its own transaction) with and without the witnesses
    ... audit_bench.py --appends 3000 [--write benchmarks/results/audit.md]

Events are generated in Python with a valid hash chain and loaded with COPY (the same canonical
serialisation as audit.services.record), so verify_audit has real work to do. Re-running tops the
table up to --events. Timings are wall-clock medians of --repeat runs through Django's test client
(full middleware, templates, the chain-state box), with the query count of each page.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

from audit.chain import compute_hash  # noqa: E402
from audit.models import AuditEvent  # noqa: E402
from audit.services import chain_tail, lock_chain  # noqa: E402

COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "host_id",
    "host_name",
    "change_id",
    "data",
    "client_ip",
    "request_id",
    "prev_hash",
    "hash",
)
ACTORS = ["otto", "anna", "arne", "ada", "audrey", "vera"] + [f"op{i:02d}" for i in range(14)]
ACTIONS = [
    ("auth.login", 5),
    ("auth.logout", 4),
    ("auth.login_failed", 1),
    ("host.discovered", 30),
    ("host.updated", 3),
    ("host.drift_detected", 1),
    ("host.key_accepted", 1),
    ("change.created", 2),
    ("change.submitted", 2),
    ("change.approved", 2),
    ("rollout.state_changed", 4),
    ("hostrun.state_changed", 15),
    ("step.finished", 30),
]


def generate(count, start_id, prev_hash, seed=1):
    rnd = random.Random(seed + start_id)
    names, weights = zip(*ACTIONS, strict=True)
    t0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    for i in range(start_id, start_id + count):
        action = rnd.choices(names, weights)[0]
        host = rnd.randint(1, 1000)
        system = action in (
            "host.discovered",
            "hostrun.state_changed",
            "step.finished",
            "rollout.state_changed",
        )
        change = (
            rnd.randint(1, 5000) if action.split(".")[0] in ("change", "rollout", "hostrun", "step") else None
        )
        row = {
            "id": i,
            "created_at": t0 + datetime.timedelta(seconds=i * 30),
            "actor_id": None,
            "actor_name": "worker" if system else rnd.choice(ACTORS),
            "action": action,
            "object_type": "hosts.hypervisor",
            "object_id": str(host),
            "object_repr": f"hv{host:04d}",
            "host_id": host,
            "host_name": f"hv{host:04d}",
            "change_id": change,
            "data": {
                "before": {"numvfs": rnd.randint(0, 7)},
                "after": {"numvfs": rnd.randint(0, 7)},
                "note": f"event {i} token{rnd.randint(0, 10**6)}",
            },
            "client_ip": "" if system else f"10.0.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
            "request_id": f"{rnd.getrandbits(128):032x}",
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = compute_hash(row)
        yield row


def load(target):
    import json

    have = AuditEvent.objects.count()
    if have >= target:
        return have, 0.0
    started = time.monotonic()
    with transaction.atomic():
        lock_chain()
        last_id, last_hash = chain_tail()
        raw = connection.connection
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY audit_auditevent ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in generate(target - have, last_id + 1, last_hash):
                row["data"] = json.dumps(row["data"])
                copy.write_row([row[c] for c in COLUMNS])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditevent")
    return target, time.monotonic() - started


def timed_get(client, url, params, repeat):
    times, queries, status = [], 0, None
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as ctx:
            started = time.monotonic()
            response = client.get(url, params)
            times.append(time.monotonic() - started)
        queries, status = len(ctx), response.status_code
    return statistics.median(times), queries, status, len(response.context["events"])


def append_cost(count, repeat_label=""):
    """Median and mean wall time of record() in its own transaction, per witness configuration."""
    import socket

    from django.test import override_settings

    from audit.services import record
    from audit.witness import default_path

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a loopback "collector" that drops
    sink.bind(("127.0.0.1", 0))
    syslog = f"udp://127.0.0.1:{sink.getsockname()[1]}"
    configs = [
        ("no witness", {"AUDIT_WITNESS_FILE_ENABLED": False, "AUDIT_WITNESS_SYSLOG": ""}),
        ("file witness", {"AUDIT_WITNESS_FILE_ENABLED": True, "AUDIT_WITNESS_SYSLOG": ""}),
        ("file + syslog (UDP)", {"AUDIT_WITNESS_FILE_ENABLED": True, "AUDIT_WITNESS_SYSLOG": syslog}),
        ("file with fsync", {"AUDIT_WITNESS_FILE_ENABLED": True, "AUDIT_WITNESS_FSYNC": True,
                             "AUDIT_WITNESS_SYSLOG": ""}),
    ]
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — cost of one append ({count:,} each)",
        "",
        f"PostgreSQL {connection.cursor().connection.info.server_version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, witness file {default_path()}. `record()` in its own transaction "
        "(advisory lock, tail read, insert, commit, then the witness).",
        "",
        "| witness | median | mean | p99 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, overrides in configs * 2:  # twice, interleaved: the second pass is the one kept
        times = []
        with override_settings(**overrides):
            for n in range(count):
                started = time.perf_counter()
                record("host.discovered", actor_name="bench", data={"n": n})
                times.append(time.perf_counter() - started)
        times.sort()
        row = (f"| {name} | {statistics.median(times) * 1e6:.0f} µs | {statistics.mean(times) * 1e6:.0f} µs "
               f"| {times[int(len(times) * 0.99)] * 1e6:.0f} µs |")
        if row.split("|")[1] not in "".join(lines[6:]):
            lines.append(row)
        else:
            lines[[i for i, line in enumerate(lines) if line.split("|")[1:2] == row.split("|")[1:2]][0]] = row
        print(row, flush=True)
    from audit.witness import note

    lines += ["", "The witness step alone (`audit.witness.note()`: sign, append, send), without the database:", "",
              "| witness | median | mean |", "| --- | ---: | ---: |"]
    now = datetime.datetime.now(datetime.UTC)
    for name, overrides in configs[1:]:
        times = []
        with override_settings(**overrides):
            for n in range(count):
                started = time.perf_counter()
                note(10**9 + n, "a" * 64, now)
                times.append(time.perf_counter() - started)
        lines.append(f"| {name} | {statistics.median(times) * 1e6:.1f} µs | {statistics.mean(times) * 1e6:.1f} µs |")
        print(lines[-1], flush=True)
    default_path().unlink()  # the fake heads above are not this database's history
    sink.close()
    started = time.monotonic()
    call_command("verify_audit", "--no-save", stdout=open(os.devnull, "w"))  # noqa: SIM115
    total = AuditEvent.objects.count()
    lines += ["", f"`verify_audit` (chain + witness) over those {total:,} events: {time.monotonic() - started:.2f}s."]
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=0, help="only measure the cost of N appends per config")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--export", action="store_true", help="also stream a full CSV export")
    parser.add_argument("--write", help="append the results as markdown to this file")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("run against PostgreSQL (DATABASE_URL)")
    call_command("migrate", verbosity=0)
    if args.appends:
        lines = append_cost(args.appends)
        if args.write:
            with open(args.write, "a") as out:
                out.write("\n".join(lines) + "\n\n")
        return
    setup_test_environment()  # so the test client exposes response.context (rows shown)
    total, load_s = load(args.events)

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-auditor")
    user.groups.set(Group.objects.filter(name="auditor"))
    client = Client()
    client.force_login(user)
    middle = total // 2
    cases = [
        ("newest page", {}),
        ("deep page (before=N/2)", {"before": middle}),
        ("actor=anna", {"actor": "anna"}),
        ("action=change. (prefix)", {"action": "change."}),
        ("action=auth.login_failed", {"action": "auth.login_failed"}),
        ("host=hv0042", {"host": "hv0042"}),
        ("change=1234", {"change": "1234"}),
        ("host=42 + action=step.", {"host": "42", "action": "step."}),
        ("date range (one day in the middle)", {"since": "2025-06-01", "until": "2025-06-01"}),
        ("search q=token123456 (rare)", {"q": "token123456"}),
        ("search q=hv0042 (common)", {"q": "hv0042"}),
    ]
    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — {total:,} events",
        "",
        f"PostgreSQL {connection.cursor().connection.info.server_version}, "
        f"Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. Load (generate chain + COPY): {load_s:.1f}s for the rows added this run.",
        "",
        "| page | median | queries | rows |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, params in cases:
        seconds, queries, status, rows = timed_get(client, "/audit/", params, args.repeat)
        assert status == 200, (name, status)
        lines.append(f"| {name} | {seconds * 1000:.0f} ms | {queries} | {rows} |")
        print(lines[-1], flush=True)
    started = time.monotonic()
    call_command("verify_audit", stdout=open(os.devnull, "w"))  # noqa: SIM115
    verify_s = time.monotonic() - started
    from audit.models import VerifyRun

    checked = VerifyRun.objects.order_by("-id").values_list("checked", flat=True).first()
    lines += [
        "",
        f"`manage.py verify_audit` over {checked:,} events: {verify_s:.1f}s "
        f"({checked / verify_s:,.0f} events/s).",
    ]
    print(lines[-1], flush=True)
    if args.export:
        import resource

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started, size, rows = time.monotonic(), 0, -1  # minus the CSV header
        response = client.get("/audit/export/", {"format": "csv"})
        for chunk in response.streaming_content:
            size += len(chunk)
            rows += chunk.count(b"\n")
        export_s = time.monotonic() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        lines.append(
            f"Full CSV export of {rows:,} events: {export_s:.1f}s, {size / 1e6:.0f} MB streamed; "
            f"peak RSS of the process {rss_before / 1024:.0f} MB before, {rss_after / 1024:.0f} MB after."
        )
        print(lines[-1], flush=True)
    if args.write:
        with open(args.write, "a") as out:
            out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
