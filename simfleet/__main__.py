"""Command line: python -m simfleet serve|state|fault|reboot|list|commands ...

    python -m simfleet serve --count 24 --state-dir var/simfleet [--base-port 2222] [--reboot-delay S]
    python -m simfleet state <host> [--state-dir var/simfleet]
    python -m simfleet fault <host> <fault> [--param key=value ...] [--clear]
    python -m simfleet fault <host> all --clear
    python -m simfleet reboot <host>
    python -m simfleet list

`serve` writes <state-dir>/inventory.csv (name,address,port,username,profile,host_key), the client
key (<state-dir>/client_key, .pub) and <state-dir>/fleet.json (control port + token, mode 0600);
the other commands talk to the running server through that control port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
from pathlib import Path

from .host import FAULTS
from .profiles import PROFILES
from .server import SimFleet

DEFAULT_STATE_DIR = "var/simfleet"


def _raise_nofile(wanted: int) -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    except (ImportError, ValueError, OSError):
        pass


async def _serve(args) -> int:
    if args.profiles:
        names = [p.strip() for p in args.profiles.split(",") if p.strip()]
        hosts = [names[i % len(names)] for i in range(args.count)]
        fleet_kwargs = {"hosts": hosts, "variety": not args.clean}
    else:
        fleet_kwargs = {"count": args.count, "variety": not args.clean}
    _raise_nofile(args.count * 3 + 1024)
    fleet = SimFleet(
        args.state_dir,
        base_port=args.base_port,
        address_mode="addresses" if args.addresses else "ports",
        first_address=args.first_address,
        reboot_delay=args.reboot_delay,
        down_time=args.down_time,
        vf_delay=args.vf_delay,
        agent_workers=args.workers,
        users=tuple(args.users.split(",")),
        control=True,
        **fleet_kwargs,
    )
    await fleet.astart()
    print(
        f"simfleet: {len(fleet)} hosts up in {fleet.started_seconds:.2f} s; "
        f"inventory {fleet.inventory_path}; "
        f"client key {fleet.client_private_key_path}; control 127.0.0.1:{fleet.control_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fleet.astop()
    return 0


def _control(state_dir: str, request: dict):
    path = Path(state_dir) / "fleet.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        sys.exit(f"simfleet: no running fleet ({path} not found); start one with: python -m simfleet serve")
    request["token"] = info["token"]
    try:
        with socket.create_connection((info["control_host"], info["control_port"]), timeout=30) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        sys.exit(f"simfleet: cannot reach the control port of the fleet ({path}): {exc}")
    reply = json.loads(data)
    if not reply.get("ok"):
        sys.exit("simfleet: {}".format(reply.get("error")))
    return reply["result"]


def _param(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected key=value")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simfleet", description="Simulated SR-IOV hypervisor fleet"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    serve = sub.add_parser("serve", help="run N simulated hosts until interrupted")
    serve.add_argument("--count", type=int, default=24)
    serve.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    serve.add_argument(
        "--base-port",
        type=int,
        default=2222,
        help="first port (ports mode) or the port of every address (--addresses); 0 = any",
    )
    serve.add_argument("--addresses", action="store_true", help="one loopback address per host (127.100.x.y)")
    serve.add_argument("--first-address", default="127.100.0.1")
    serve.add_argument(
        "--reboot-delay",
        type=float,
        default=1.0,
        help="seconds from the reboot request to going down (default 1)",
    )
    serve.add_argument("--down-time", type=float, default=5.0, help="seconds unreachable while rebooting")
    serve.add_argument("--vf-delay", type=float, default=0.5, help="seconds until new VF netdevs appear")
    serve.add_argument("--workers", type=int, default=8, help="agent worker threads")
    serve.add_argument("--users", default="root,admin", help="login users, round-robin over the hosts")
    serve.add_argument(
        "--profiles",
        default="",
        help="comma-separated profiles to cycle through "
        "(default: the weighted mix); known: " + ", ".join(PROFILES),
    )
    serve.add_argument("--clean", action="store_true", help="no pre-existing VFs/IOMMU/guests on any host")

    for name, help_text in (
        ("state", "print a host's true state"),
        ("reboot", "reboot a host"),
        ("commands", "the commands a host executed"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("host")
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    lst = sub.add_parser("list", help="list the hosts")
    lst.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    fault = sub.add_parser("fault", help="inject or clear a fault: " + ", ".join(FAULTS))
    fault.add_argument("host")
    fault.add_argument("fault", help="one of: {} (or 'all' with --clear)".format(", ".join(FAULTS)))
    fault.add_argument("--clear", action="store_true")
    fault.add_argument("--param", action="append", type=_param, default=[], help="key=value (e.g. seconds=3)")
    fault.add_argument("--state-dir", default=DEFAULT_STATE_DIR)

    args = parser.parse_args(argv)
    if args.cmd == "serve":
        logging.basicConfig(level=logging.WARNING)
        return asyncio.run(_serve(args))
    if args.cmd == "fault":
        if args.fault != "all" and args.fault not in FAULTS:
            parser.error(f"unknown fault {args.fault!r}")
        if args.fault == "all" and not args.clear:
            parser.error("'all' only with --clear")
        result = _control(
            args.state_dir,
            {
                "cmd": "fault",
                "host": args.host,
                "clear": args.clear,
                "fault": None if args.fault == "all" else args.fault,
                "params": dict(args.param),
            },
        )
    elif args.cmd == "list":
        result = _control(args.state_dir, {"cmd": "list"})
    else:
        result = _control(args.state_dir, {"cmd": args.cmd, "host": args.host})
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
