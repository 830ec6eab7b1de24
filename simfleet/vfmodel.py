"""What a simulated host does with its VFs beyond counting them: the per-VF settings a PF driver
holds (`ip link set dev <pf> vf N ...`, shown by `ip -j -d link show`), VF driver binding through
sysfs (driver_override, bind/unbind, drivers_probe, sriov_drivers_autoprobe), the PF MTU, udev's
VF add events running the console's installed agent, and libvirt networks (`virsh net-*`).

A mixin of `simfleet.host.SimHost`: every method runs under the host lock, as the rest of the model.
"""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
import xml.etree.ElementTree as ElementTree

# Which `ip link set ... vf` settings each PF driver implements (its ndo_set_vf_* callbacks), and
# what it answers otherwise: igb has no ndo_set_vf_link_state (EOPNOTSUPP), refuses a minimum
# rate (igb_ndo_set_vf_bw: EINVAL) and any rate on the I350 the profiles have (igb_ndo_set_vf_bw:
# only the 82576 limits rates, EOPNOTSUPP); i40e refuses a minimum rate (i40e_ndo_set_vf_bw: EINVAL).
# ixgbe and i40e refuse a maximum rate while the PF link is down (they check the link speed: EINVAL).
ALL_SETTINGS = frozenset(("mac", "vlan", "qos", "spoofchk", "trust", "link_state", "max_tx_rate", "min_tx_rate"))
VF_SETTING_REFUSALS = {
    "igb": {"link_state": errno.EOPNOTSUPP, "min_tx_rate": errno.EINVAL, "max_tx_rate": errno.EOPNOTSUPP},
    "ixgbe": {"link_state": errno.EOPNOTSUPP, "min_tx_rate": errno.EINVAL},
    "i40e": {"min_tx_rate": errno.EINVAL},
}
RATE_NEEDS_LINK = ("ixgbe", "i40e")
# igb_ndo_set_vf_mac / ixgbe_ndo_set_vf_mac: "Reload the VF driver to make this change effective":
# a bound VF's interface keeps its MAC until igbvf/ixgbevf probes it again.
MAC_ON_RELOAD = ("igb", "ixgbe")
MTU_MAX = {"igb": 9216, "ixgbe": 9710, "i40e": 9702, "mlx5_core": 9978, "tg3": 9000}
RTNETLINK_TEXT = {errno.EOPNOTSUPP: "Operation not supported", errno.EINVAL: "Invalid argument",
                  errno.ENODEV: "No such device"}
IP_WORDS = {"mac": "mac", "vlan": "vlan", "qos": "qos", "spoofchk": "spoofchk", "trust": "trust",
            "state": "link_state", "max_tx_rate": "max_tx_rate", "min_tx_rate": "min_tx_rate"}

VF_RULES_PATH = "/etc/udev/rules.d/71-sriov-console-vf.rules"
SYSTEMD_DIR = "/etc/systemd/system"
WANTS_DIR = SYSTEMD_DIR + "/multi-user.target.wants"
SYSTEMD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
LIBVIRT_UNITS = {"libvirtd.service", "virtqemud.service", "virtnetworkd.service"}
AGENT_COPY_PATH = "/usr/local/libexec/sriov-console/sriov_agent.py"
POOL_MODES = ("hostdev", "passthrough", "private", "vepa", "bridge")


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class VfModel:
    """Mixin: VF settings, VF drivers, MTU, udev VF events, libvirt networks."""

    # -- VF drivers ---------------------------------------------------------------------------

    def _default_vf_driver(self, nic) -> str | None:
        """The driver the kernel's own match binds a new VF to: the VF netdev driver, vfio-pci on a
        passthrough host (vfio-pci.ids), none when the VF driver is blacklisted."""
        binding = self.profile.vf_binding
        if binding == "vfio-pci":
            return "vfio-pci"
        return nic.spec.vf_driver if binding == "driver" else None

    def loaded_drivers(self) -> set[str]:
        drivers = {n.spec.driver for n in self.nics if n.loaded}
        drivers |= {n.spec.vf_driver for n in self.nics if n.spec.sriov and n.spec.vf_driver}
        bound = {vf.driver for n in self.nics for vf in n.vfs if vf.driver}
        if self.modules & {"vfio-pci", "vfio_pci"} or "vfio-pci" in bound or self._held_vfs() or any(
                n.spec.binding == "vfio-pci" for n in self.nics):
            drivers.add("vfio-pci")
        return drivers | bound

    def _vf_by_pci(self, pci: str):
        for nic in self.nics:
            for vf in nic.vfs:
                if vf.pci == pci:
                    return nic, vf
        return None, None

    def _vf_driver_write(self, kind: str, key: str, data: str, real: str) -> None:
        """sysfs-bus-pci: driver_override (only a driver of that name may bind; an empty write clears
        it; it does not unbind), drivers/<d>/unbind, drivers/<d>/bind, drivers_probe."""
        value = data.strip()
        if kind == "driver_override":
            _nic, vf = self._vf_by_pci(key)
            vf.driver_override = value or None
            self.events.append(f"{key}: driver_override <- {value!r}")
            return
        if kind == "autoprobe":
            if value not in ("0", "1"):
                raise _err(errno.EINVAL, real)
            self._nic_by_pci(key).autoprobe = int(value)
            return
        nic, vf = self._vf_by_pci(value)
        if vf is None:
            raise _err(errno.ENODEV, real)
        if kind == "unbind":
            if self._bound_driver(vf) != key:
                raise _err(errno.ENODEV, real)
            self._release_held(vf)
            vf.driver = None
        elif kind == "bind":
            if vf.driver is not None or (vf.driver_override or key) != key or key not in self._matching(nic, vf) \
                    or not self._can_probe(nic, vf):
                raise _err(errno.ENODEV, real)
            if not self._probe_ok(key):
                raise _err(errno.EINVAL, real)
            vf.driver = key
        elif kind == "probe" and vf.driver is None and self._can_probe(nic, vf):
            wanted = vf.driver_override or self._default_vf_driver(nic)
            if wanted in self.loaded_drivers() and wanted in self._matching(nic, vf) and self._probe_ok(wanted):
                vf.driver = wanted
        assigned = vf.admin_mac not in (None, "00:00:00:00:00:00")
        if kind in ("bind", "probe") and vf.driver == nic.spec.vf_driver and assigned:
            vf.mac = vf.admin_mac  # the VF driver reads the MAC the PF assigned when it probes
        self.events.append(f"{value}: {kind} {key or ''} -> {vf.driver}")

    @staticmethod
    def _can_probe(nic, vf) -> bool:
        """pci_device_can_probe(): a VF is probed only while its PF's sriov_drivers_autoprobe is 1,
        or by the driver its driver_override names."""
        return bool(nic.autoprobe or vf.driver_override)

    def _probe_ok(self, driver: str | None) -> bool:
        """vfio_pci_probe() fails without an IOMMU group for the device (no IOMMU on)."""
        return driver != "vfio-pci" or self.iommu_active

    def _matching(self, nic, vf) -> set[str]:
        """Drivers that may bind the VF: its own match, and any driver named by driver_override."""
        return {d for d in (self._default_vf_driver(nic), nic.spec.vf_driver, vf.driver_override) if d}

    def _bound_driver(self, vf) -> str | None:
        return "vfio-pci" if vf.pci in self._held_vfs() else vf.driver

    def _release_held(self, vf) -> None:
        """Unbinding vfio-pci from a VF a guest holds: QEMU is asked to let it go (unplugged)."""
        for guest in self.guests:
            if guest.running and vf.pci in guest.hostdevs:
                guest.hostdevs = [p for p in guest.hostdevs if p != vf.pci]
                guest.note = f"VF {vf.pci} unplugged: its driver was unbound"
            guest.allocated = {i: d for i, d in guest.allocated.items() if d not in (vf.pci, vf.netdev)}

    # -- ip: VF settings and MTU --------------------------------------------------------------

    def _vf_json(self, vf) -> dict:
        """One vfinfo_list entry as iproute2 5.x prints it (vlan/qos left out when 0)."""
        vlan = {}
        if vf.vlan:
            vlan["vlan"] = vf.vlan
            if vf.qos:
                vlan["qos"] = vf.qos
        return {"vf": vf.index, "link_type": "ether", "address": vf.admin_mac, "broadcast": "ff:ff:ff:ff:ff:ff",
                "vlan_list": [vlan], "rate": {"max_tx": vf.max_tx_rate, "min_tx": vf.min_tx_rate},
                "spoofchk": vf.spoofchk, "link_state": vf.link_state, "trust": vf.trust, "query_rss_en": False}

    def _link_json(self, nic) -> dict:
        doc = {"ifindex": nic.ifindex, "ifname": nic.name, "flags": ["BROADCAST", "MULTICAST", "UP"],
               "mtu": nic.mtu, "qdisc": "mq", "operstate": "UP" if nic.spec.link_up else "DOWN",
               "link_type": "ether", "address": nic.mac, "broadcast": "ff:ff:ff:ff:ff:ff",
               "num_tx_queues": 8, "num_rx_queues": 8, "parentbus": "pci", "parentdev": nic.pci}
        if nic.spec.sriov:
            doc["num_vf"] = len(nic.vfs)
            if nic.vfs:
                doc["vfinfo_list"] = [self._vf_json(vf) for vf in nic.vfs]
        return doc

    def _prog_ip_link(self, args: list[str]):
        if args[:1] == ["-j"] and self.legacy:  # iproute2 before 4.13 has no JSON output
            return 255, "", 'Option "-j" is unknown, try "ip -help".\n'
        if args[:4] == ["-j", "-d", "link", "show"] or args[:3] == ["-j", "link", "show"]:
            rest = [a for a in args if a not in ("-j", "-d", "link", "show", "dev")]
            nics = [n for n in self.nics if n.has_netdev and (not rest or n.name == rest[0])]
            if rest and not nics:
                return 1, "", f'Device "{rest[0]}" does not exist.\n'
            return 0, json.dumps([self._link_json(n) for n in nics]) + "\n", ""
        if args[:3] == ["link", "set", "dev"] and len(args) >= 6:
            nic = next((n for n in self.nics if n.has_netdev and n.name == args[3]), None)
            if nic is None:
                return 1, "", f'Cannot find device "{args[3]}"\n'
            if args[4] == "mtu" and len(args) == 6:
                return self._ip_set_mtu(nic, args[5])
            if args[4] == "vf":
                return self._ip_set_vf(nic, args[5], args[6:])
        return 1, "", "simfleet: ip {} is not simulated\n".format(" ".join(args))

    def _ip_set_mtu(self, nic, text: str):
        if not text.isdigit() or not 68 <= int(text) <= MTU_MAX.get(nic.spec.driver, 9000):
            if text.isdigit():
                return 2, "", "Error: mtu greater than device maximum.\n"
            return 2, "", f'Error: argument "{text}" is wrong: Invalid MTU\n'
        nic.mtu = int(text)
        self.events.append(f"{nic.name}: mtu {text}")
        self._touch()
        return 0, "", ""

    def _parse_vf_words(self, words: list[str]):
        changes = {}
        i = 0
        while i < len(words):
            key = IP_WORDS.get(words[i])
            if key is None or i + 1 >= len(words):
                return None, f'Error: argument "{words[i]}" is wrong: unknown vf option\n'
            value = words[i + 1]
            if key in ("spoofchk", "trust"):
                if value not in ("on", "off"):
                    return None, f'Error: argument "{value}" is wrong: Invalid "{key}" value\n'
                changes[key] = value == "on"
            elif key == "link_state":
                if value not in ("auto", "enable", "disable"):
                    return None, f'Error: argument "{value}" is wrong: Invalid "state" value\n'
                changes[key] = value
            elif key == "mac":
                if not re.match(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", value):
                    return None, f'Error: "{value}" is not a valid MAC address\n'
                changes[key] = value.lower()
            else:
                if not value.isdigit():
                    return None, f'Error: argument "{value}" is wrong: Invalid "{words[i]}" value\n'
                changes[key] = int(value)
            i += 2
        return changes, None

    def _ip_set_vf(self, nic, index_text: str, words: list[str]):
        changes, error = self._parse_vf_words(words)
        if error:
            return 1, "", error
        if not index_text.isdigit() or int(index_text) >= len(nic.vfs):
            return 2, "", "RTNETLINK answers: Invalid argument\n"
        vf = nic.vfs[int(index_text)]
        refusals = VF_SETTING_REFUSALS.get(nic.spec.driver, {})
        for key, value in changes.items():
            code = refusals.get(key)
            if code is not None and not (key in ("min_tx_rate", "max_tx_rate") and value == 0):
                return 2, "", f"RTNETLINK answers: {RTNETLINK_TEXT[code]}\n"
        if changes.get("max_tx_rate") and nic.spec.driver in RATE_NEEDS_LINK and not nic.spec.link_up:
            return 2, "", f"RTNETLINK answers: {RTNETLINK_TEXT[errno.EINVAL]}\n"
        if changes.get("vlan", vf.vlan) > 4095 or changes.get("qos", 0) > 7:
            return 2, "", "RTNETLINK answers: Invalid argument\n"
        for key, value in changes.items():
            setattr(vf, "admin_mac" if key == "mac" else key, value)
        if "vlan" in changes and "qos" not in changes:
            vf.qos = 0
        if changes.get("mac") and changes["mac"] != "00:00:00:00:00:00" and nic.spec.driver not in MAC_ON_RELOAD:
            vf.mac = changes["mac"]  # the VF driver takes the administrative MAC after its reset
        self.events.append(f"{nic.name} vf {vf.index}: {' '.join(words)}")
        self._touch()
        return 0, "", ""

    # -- boot: systemd units and udev's VF add events ------------------------------------------

    def _unit(self, name: str) -> dict | None:
        """A unit file of /etc/systemd/system -> {key: value} (repeated keys joined by a space; a
        template's %i replaced by the instance), or None when there is none."""
        template, at, rest = name.partition("@")
        instance = rest[: -len(".service")] if at and rest.endswith(".service") else ""
        text = self.files.get(f"{SYSTEMD_DIR}/{template}@.service" if at else f"{SYSTEMD_DIR}/{name}")
        if text is None:
            return None
        keys: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith(("#", ";", "[")):
                value = value.replace("%i", instance).replace("%I", instance)
                keys[key.strip()] = (keys[key.strip()] + " " + value) if key.strip() in keys else value
        return keys

    def _run_unit(self, name: str, unit: dict) -> None:
        """A oneshot unit that runs the installed agent: ExecStart's interpreter must exist, the PATH
        is the unit's Environment=PATH (else systemd's default for services, systemd.exec(5))."""
        env = dict(re.findall(r"([A-Za-z_]+)=(\S+)", unit.get("Environment", "")))
        self._run_agent_copy(unit.get("ExecStart", "").split(), env.get("PATH", SYSTEMD_DEFAULT_PATH), name)

    def _run_agent_copy(self, argv: list[str], env_path: str | None, label: str) -> None:
        """Run the installed agent as argv says (`<python> <copy> [--vf PCI | --boot] apply_persisted`)."""
        source = self.files.get(AGENT_COPY_PATH)
        if len(argv) < 3 or argv[1] != AGENT_COPY_PATH or source is None or self.which(argv[0]) is None:
            self.events.append(f"boot: {label}: {' '.join(argv[:2])}: No such file or directory")
            return
        args: dict = {}
        if "--vf" in argv:
            args["vf_pci"] = argv[argv.index("--vf") + 1]
        if "--boot" in argv:
            args["all"] = True
        from .host import SimSystem  # the seam the agent runs against

        namespace = {"__name__": "sriov_agent"}
        try:
            exec(compile(source, AGENT_COPY_PATH, "exec"), namespace)  # noqa: S102 - the host's installed agent
        except SyntaxError as exc:
            self.events.append(f"boot: {label}: {exc}")
            return
        request = json.dumps({"op": argv[-1], "args": args, "request_id": "boot"})
        system = SimSystem(self, agent_source=source.encode(), env_path=env_path)
        status, out, _err = namespace["run_payload"](request.encode(), system)
        self.boot_runs.append({"unit": label, "status": status, "response": json.loads(out)})
        self.events.append(f"boot: {label}: exit {status} {out.strip()[:300]}")

    def _boot_units(self) -> None:
        """Enabled units ordered before libvirt's daemons run before the networks and guests start."""
        for name in sorted(self.children.get(WANTS_DIR, ())):
            unit = self._unit(name)
            if unit is not None and set(unit.get("Before", "").split()) & LIBVIRT_UNITS:
                self._run_unit(name, unit)

    def trigger_vf_add_events(self) -> None:
        """`udevadm trigger --action=add` at run time: every VF's add event again."""
        with self.lock:
            self.boot_runs = []
            self._boot_udev_vf_events()
            self._touch()

    def _boot_udev_vf_events(self) -> None:
        """udev's add event of every VF: a rule's RUN (with no PATH: udev passes only the device's
        properties) or the unit its SYSTEMD_WANTS names. Nothing orders these before libvirt, so
        they run after the networks and guests started (the worst order the real host allows)."""
        rules = []
        for line in self.files.get(VF_RULES_PATH, "").splitlines():
            keys = dict(re.findall(r'([A-Za-z_]+(?:\{[^}]*\})?)\s*[=!:+]?=\s*"([^"]*)"', line))
            if not line.strip().startswith("#") and keys.get("SUBSYSTEM") == "pci" and keys.get("ACTION") == "add":
                rules.append(keys)
        for vf in [vf for nic in self.nics for vf in nic.vfs]:
            for keys in rules:
                if keys.get("KERNEL", vf.pci) != vf.pci or ("TEST" in keys and keys["TEST"] != "physfn"):
                    continue
                if "RUN" in keys:
                    self._run_agent_copy(keys["RUN"].replace("%k", vf.pci).split(), None, f"udev RUN {vf.pci}")
                wanted = keys.get("ENV{SYSTEMD_WANTS}", "").replace("%k", vf.pci)
                unit = self._unit(wanted) if wanted and "systemd" in keys.get("TAG", "") else None
                if unit is not None:
                    self._run_unit(wanted, unit)

    # -- libvirt networks -----------------------------------------------------------------------

    def _network_from_xml(self, text: str) -> tuple[str, dict]:
        root = ElementTree.fromstring(text)
        name = (root.findtext("name") or "").strip()
        if not name:
            raise ValueError("missing network name")
        forward = root.find("forward")
        pf = forward.find("pf") if forward is not None else None
        extra = "".join(ElementTree.tostring(e, encoding="unicode").strip() for e in root
                        if e.tag in ("metadata", "description"))
        return name, {"mode": (forward.get("mode") or "nat") if forward is not None else "isolated",
                      "pf": pf.get("dev") if pf is not None else None, "extra": extra}

    def _prog_virsh_net(self, cmd: str, opts: list[str]):
        names = [o for o in opts if not o.startswith("--")]
        if cmd == "net-list":
            listed = [n for n, net in sorted(self.networks.items()) if "--all" in opts or net.get("active", True)]
            return 0, "".join(n + "\n" for n in listed) + "\n", ""
        if cmd == "net-define":
            return self._virsh_net_define(names[0] if names else "")
        network = self.networks.get(names[0]) if names else None
        if network is None:
            wanted = names[0] if names else ""
            return 1, "", (f"error: failed to get network '{wanted}'\n"
                           f"error: Network not found: no network with matching name '{wanted}'\n")
        name = names[0]
        if cmd == "net-info":
            yes = lambda v: "yes" if v else "no"  # noqa: E731
            return 0, (f"Name:           {name}\nUUID:           {self._network_uuid(name)}\n"
                       f"Active:         {yes(network.get('active', True))}\n"
                       f"Persistent:     {yes(network.get('persistent', True))}\n"
                       f"Autostart:      {yes(network.get('autostart', True))}\n"
                       f"Bridge:         {network.get('bridge', '')}\n\n"), ""
        return self._virsh_net_change(cmd, name, network, opts)

    def _virsh_net_define(self, path: str):
        text = self.files.get(path)
        if text is None:
            return 1, "", f"error: Failed to open file '{path}': No such file or directory\n"
        try:
            name, spec = self._network_from_xml(text)
        except (ElementTree.ParseError, ValueError) as exc:
            return 1, "", f"error: Failed to define network from {path}\nerror: XML error: {exc}\n"
        old = self.networks.get(name, {"active": False, "autostart": False})
        self.networks[name] = dict(spec, active=old.get("active", False), autostart=old.get("autostart", False),
                                   persistent=True)
        self._touch()
        return 0, f"Network {name} defined from {path}\n\n", ""

    def _virsh_net_change(self, cmd: str, name: str, network: dict, opts: list[str]):
        active = network.get("active", True)
        if cmd == "net-start":
            if active:
                return 1, "", (f"error: Failed to start network {name}\n"
                               "error: Requested operation is not valid: network is already active\n")
            nic = next((n for n in self.nics if n.name == network.get("pf")), None)
            if network["mode"] in POOL_MODES and network.get("pf") and (nic is None or not nic.vfs):
                return 1, "", (f"error: Failed to start network {name}\nerror: internal error: No Vf's present on "
                               f"SRIOV PF {network.get('pf')}\n")
            network["active"] = True
        elif cmd == "net-destroy":
            if not active:
                return 1, "", (f"error: Failed to destroy network {name}\n"
                               f"error: Requested operation is not valid: network '{name}' is not active\n")
            network["active"] = False
            if not network.get("persistent", True):
                del self.networks[name]
        elif cmd == "net-autostart":
            network["autostart"] = "--disable" not in opts
        elif cmd == "net-undefine":
            if active:
                network["persistent"] = False
                network["autostart"] = False
            else:
                del self.networks[name]
        else:
            return 1, "", f"error: unknown command: '{cmd}'\n"
        self.events.append(f"virsh {cmd} {name}")
        self._touch()
        return 0, f"Network {name} {cmd[4:]}ed\n\n", ""

    def _network_uuid(self, name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, self.name + "/" + name))

    def _boot_networks(self) -> None:
        """libvirtd at boot: transient networks are gone, autostart ones start (a VF pool over a PF
        without VFs fails to start)."""
        for name in list(self.networks):
            network = self.networks[name]
            if not network.get("persistent", True):
                del self.networks[name]
                continue
            nic = next((n for n in self.nics if n.name == network.get("pf")), None)
            ok = network["mode"] not in POOL_MODES or not network.get("pf") or (nic is not None and bool(nic.vfs))
            network["active"] = bool(network.get("autostart", True)) and ok

    # -- the truth, for tests -------------------------------------------------------------------

    def vf_truth(self) -> dict:
        settings = {}
        drivers = {}
        for nic in self.nics:
            if not nic.spec.sriov:
                continue
            settings[nic.pci] = {
                vf.index: {"mac": vf.admin_mac, "vlan": vf.vlan, "qos": vf.qos, "spoofchk": vf.spoofchk,
                           "trust": vf.trust, "link_state": vf.link_state, "max_tx_rate": vf.max_tx_rate,
                           "min_tx_rate": vf.min_tx_rate}
                for vf in nic.vfs
            }
            for vf in nic.vfs:
                drivers[vf.pci] = self._bound_driver(vf)
        networks = {
            name: {"mode": n.get("mode"), "pf": n.get("pf"), "active": n.get("active", True),
                   "autostart": n.get("autostart", True), "persistent": n.get("persistent", True),
                   "managed": "sriov-console" in n.get("extra", "")}
            for name, n in self.networks.items()
        }
        return {"vf_settings": settings, "vf_drivers": drivers, "networks": networks,
                "mtu": {n.pci: n.mtu for n in self.nics if n.has_netdev},
                "driver_overrides": {vf.pci: vf.driver_override for n in self.nics for vf in n.vfs
                                     if vf.driver_override},
                "modules": sorted(self.modules), "boot_runs": list(self.boot_runs)}

