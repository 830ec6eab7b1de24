"""The agent in-process with a double of the kernel (the edge of the world).

A regular file cannot return EBUSY or grow VF links, so KernelSystem -- the agent's real System
over a fake tree -- plays the kernel for sriov_numvfs: EBUSY on a direct non-zero -> non-zero
write, EINVAL above sriov_totalvfs, VFs (links, netdevs) materialised on success, and injected
errnos. Everything else is the real System on the fake tree.
"""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent and shell snippets)

import errno
import json
import os
import threading

import pytest

from tests import fakesys

UDEV = "etc/udev/rules.d/70-sriov-console.rules"


def make_kernel_system(agent, host, fail_errno=None, materialise=True, guests=None, etc_errno=None):
    class KernelSystem(agent.System):
        def __init__(self):
            agent.System.__init__(self, str(host.root))
            self.writes = []
            self.spawned = []
            self.clock = 0.0

        def write_text(self, path, data):
            if not path.endswith("/sriov_numvfs"):
                return agent.System.write_text(self, path, data)
            pf = path.split("/")[4]
            new = int(data)
            current = int(self.read_text(path))
            self.writes.append((pf, new))
            if fail_errno is not None:
                raise OSError(fail_errno, os.strerror(fail_errno))
            if current and new and current != new:
                raise OSError(errno.EBUSY, "Device or resource busy")
            total = int(self.read_text(path.replace("sriov_numvfs", "sriov_totalvfs")))
            if new > total:
                raise OSError(errno.EINVAL, "Invalid argument")
            if materialise:
                host.set_numvfs(pf, new)
            else:
                agent.System.write_text(self, path, data)

        def write_sysfs(self, path, data, timeout):
            return self.write_text(path, data)

        def atomic_write(self, path, data, mode=0o644):
            if etc_errno is not None and path.startswith("/etc/"):
                raise OSError(etc_errno, os.strerror(etc_errno))
            return agent.System.atomic_write(self, path, data, mode)

        def which(self, name):
            if name == "virsh" and guests is not None:
                return "/usr/bin/virsh"
            return None

        def run(self, argv, timeout):
            if argv[:2] == ["virsh", "list"]:
                running = "--inactive" not in argv  # no stopped guests here
                return 0, "".join(g + "\n" for g in guests if running) + "\n", ""
            if argv[:2] == ["virsh", "dumpxml"]:
                hostdevs = "".join(
                    "<hostdev type='pci'><source><address domain='0x0000' bus='0x%s' slot='0x%s' "
                    "function='0x%s'/></source></hostdev>" % (p[5:7], p[8:10], p[11])
                    for p in guests[argv[-1]])
                return 0, "<domain><devices>%s</devices></domain>" % hostdevs, ""
            return 127, "", "not found"

        def spawn_detached(self, argv):
            self.spawned.append(list(argv))

        def sleep(self, seconds):
            self.clock += seconds

        def monotonic(self):
            return self.clock

    return KernelSystem()


def call(agent, system, op, args):
    request = json.dumps({"op": op, "args": args, "request_id": "t"}).encode()
    status, out, err = agent.run_payload(request, system)
    doc = json.loads(out)
    assert out.endswith("\n") and out.count("\n") == 1
    doc["_exit"] = status
    doc["_stderr"] = err
    return doc


def args(count, pf="eno49", pci="0000:04:00.0", **extra):
    out = {"pf": pf, "pci_address": pci, "count": count}
    out.update(extra)
    return out


@pytest.fixture
def host(tmp_path):
    return fakesys.dl360_gen9(tmp_path / "h", programs=False)


def test_zero_to_four_creates_vfs_and_persists(agent, host):
    system = make_kernel_system(agent, host)
    doc = call(agent, system, "set_vfs", args(4))
    assert doc["ok"] and doc["_exit"] == 0, doc
    res = doc["result"]
    assert system.writes == [("eno49", 4)]
    assert res["actions"] == [  # ownership recorded first
        "persisted 4 VFs for 0000:04:00.0 in /etc/udev/rules.d/70-sriov-console.rules",
        "wrote 4 to sriov_numvfs of eno49 (0000:04:00.0) (was 0)"]
    assert res["before"]["sriov_numvfs"] == 0 and res["before"]["vfs"] == []
    assert res["after"]["sriov_numvfs"] == 4
    assert [(vf["index"], vf["netdev"], vf["driver"], vf["pci_address"]) for vf in res["after"]["vfs"]] == [
        (0, "eno49v0", "igbvf", "0000:04:10.0"), (1, "eno49v1", "igbvf", "0000:04:10.4"),
        (2, "eno49v2", "igbvf", "0000:04:11.0"), (3, "eno49v3", "igbvf", "0000:04:11.4")]
    assert res["reboot_required"] is False and res["persisted"] is True
    assert host.read(UDEV).splitlines()[-1] == (
        'ACTION=="add", SUBSYSTEM=="net", KERNELS=="0000:04:00.0", ATTR{device/sriov_numvfs}="4"')
    # idempotent
    again = call(agent, system, "set_vfs", args(4))["result"]
    assert again["actions"] == [] and system.writes == [("eno49", 4)]


def test_nonzero_to_nonzero_writes_zero_first(agent, host):
    system = make_kernel_system(agent, host)
    call(agent, system, "set_vfs", args(4))
    # the double is faithful: a direct change is refused by the "kernel"
    with pytest.raises(OSError) as raised:
        system.write_text("/sys/class/net/eno49/device/sriov_numvfs", "6\n")
    assert raised.value.errno == errno.EBUSY
    system.writes.clear()
    res = call(agent, system, "set_vfs", args(6))["result"]
    assert system.writes == [("eno49", 0), ("eno49", 6)]
    assert res["actions"][0] == "persisted 6 VFs for 0000:04:00.0 in /etc/udev/rules.d/70-sriov-console.rules"
    assert res["actions"][1] == (
        "wrote 0 to sriov_numvfs of eno49 (0000:04:00.0) first: the kernel refuses to change a non-zero VF "
        "count to another non-zero count (EBUSY)")
    assert res["actions"][2] == "wrote 6 to sriov_numvfs of eno49 (0000:04:00.0) (was 0)"
    assert res["after"]["sriov_numvfs"] == 6 and len(res["after"]["vfs"]) == 6
    res = call(agent, system, "set_vfs", args(0))["result"]
    assert system.writes[-1] == ("eno49", 0) and res["after"]["vfs"] == []
    assert "0000:04:00.0" not in host.read(UDEV)


@pytest.mark.parametrize("number,code,words", [
    (errno.EBUSY, "ebusy", "busy"),
    (errno.ENOMEM, "enomem", "SR-IOV is disabled in the BIOS or the kernel needs pci=realloc"),
    (errno.ENOSPC, "enospc", "MSI-X"),
    (errno.ENOENT, "no_sriov_driver", "Bind the PF to its network driver"),
    (errno.ERANGE, "exceeds_total", "sriov_totalvfs"),
    (errno.EROFS, "readonly_fs", "read-only"),
    (errno.EINVAL, "einval", "rejected"),
    (errno.EIO, "write_failed", "failed"),
])
def test_errno_mapping(agent, host, number, code, words):
    system = make_kernel_system(agent, host, fail_errno=number)
    doc = call(agent, system, "set_vfs", args(3))
    assert not doc["ok"] and doc["_exit"] == 1
    assert doc["error"]["code"] == code
    assert words in doc["error"]["message"]
    assert doc["error"]["details"]["errno"] == errno.errorcode[number]
    assert not host.exists(UDEV)  # nothing persisted for a failed write


def test_failure_after_reset_reports_state(agent, host):
    host.add_vfs("eno49", 2)
    host.write(UDEV, "# Managed by SR-IOV Console.\n"
                     'ACTION=="add", SUBSYSTEM=="net", KERNELS=="0000:04:00.0", '
                     'ATTR{device/sriov_numvfs}="2"\n')
    system = make_kernel_system(agent, host)
    original = system.write_text

    def flaky(path, data):
        if data.strip() == "5":
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return original(path, data)

    system.write_text = flaky
    doc = call(agent, system, "set_vfs", args(5))
    assert doc["error"]["code"] == "enomem"
    details = doc["error"]["details"]
    # the reset to 0 succeeded, writing 5 failed -> the previous count is put back
    assert details["sriov_numvfs_after_failure"] == 0
    assert details["sriov_numvfs_now"] == 2 and details["sriov_numvfs_before"] == 2
    assert details["partially_applied"] is False
    assert "wrote 0" in details["actions"][1]
    assert details["actions"][2].startswith("restored the previous count: wrote 2")
    assert details["actions"][3].startswith("rolled back /etc/udev/rules.d/70-sriov-console.rules")
    assert doc["error"]["message"].startswith("eno49 now has 2 VFs (had 2). ")
    assert 'ATTR{device/sriov_numvfs}="2"' in host.read(UDEV)  # persistence rolled back too


def test_in_use_force_and_externally_managed_force(agent, host):
    host.add_vfs("eno49", 4)
    system = make_kernel_system(agent, host, guests={"vm-a": ["0000:04:11.4"]})
    assert call(agent, system, "set_vfs", args(2))["error"]["code"] == "externally_managed"
    doc = call(agent, system, "set_vfs", args(6, force=True))
    assert doc["ok"], doc
    assert system.writes == [("eno49", 0), ("eno49", 6)]
    # now owned: shrinking below the guest's VF (index 3) is refused without force
    doc = call(agent, system, "set_vfs", args(3))
    assert doc["error"]["code"] == "vfs_in_use" and doc["error"]["details"]["guests"] == ["vm-a"]
    assert call(agent, system, "set_vfs", args(6))["result"]["actions"] == []  # equal: fine
    assert call(agent, system, "set_vfs", args(0, force=True))["ok"]


def test_vf_timeout_is_bounded(agent, host):
    system = make_kernel_system(agent, host, materialise=False)
    doc = call(agent, system, "set_vfs", args(2, wait_seconds=1.5))
    assert doc["error"]["code"] == "vf_timeout"
    assert 1.5 <= system.clock <= 1.7
    # the count was written and persisted: the console owns it
    assert '"2"' in host.read(UDEV)


def test_persistence_on_readonly_etc(agent, host):
    system = make_kernel_system(agent, host, etc_errno=errno.EROFS)
    doc = call(agent, system, "set_vfs", args(1))
    assert doc["error"]["code"] == "readonly_fs"
    system = make_kernel_system(agent, host, etc_errno=errno.EACCES)
    assert call(agent, system, "set_vfs", args(1, persist=False))["ok"]


def test_kernel_args_readonly_etc_touches_nothing(agent, host):
    host.program_update_grub()
    before = host.snapshot()
    system = make_kernel_system(agent, host, etc_errno=errno.EROFS)
    system.which = lambda name: "/x/update-grub" if name == "update-grub" else None
    doc = call(agent, system, "kernel_args", {"add": ["intel_iommu=on"]})
    assert doc["error"]["code"] == "readonly_fs" and doc["_exit"] == 1
    assert host.snapshot() == before


def test_reboot_falls_back_to_sleep_reboot(agent, host):
    system = make_kernel_system(agent, host)
    res = call(agent, system, "reboot", {})["result"]
    assert system.spawned == [["sh", "-c", "sleep 2; reboot"]]
    assert res["boot_id"] == "11111111-2222-3333-4444-555555555555" and res["method"] == "sleep-reboot"


def test_unexpected_exception_becomes_internal_error(agent, host):
    class Broken(agent.System):
        def list_dir(self, path):
            raise RuntimeError("boom")

    status, out, err = agent.run_payload(b'{"op": "inventory", "args": {}, "request_id": "x"}', Broken("/"))
    doc = json.loads(out)
    assert status == 1 and doc["error"]["code"] == "internal_error" and doc["request_id"] == "x"
    assert "RuntimeError" in err
    status, out, _ = agent.run_payload(b"\xff\xfe", Broken("/"))
    assert status == 2 and json.loads(out)["error"]["code"] == "bad_request"


@pytest.mark.parametrize("text,add,remove,expected", [
    ('GRUB_CMDLINE_LINUX_DEFAULT=quiet\n', ["iommu=pt"], [], 'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=pt"\n'),
    ('GRUB_CMDLINE_LINUX_DEFAULT=""\n', ["iommu=pt"], [], 'GRUB_CMDLINE_LINUX_DEFAULT="iommu=pt"\n'),
    ('GRUB_CMDLINE_LINUX_DEFAULT="a iommu=soft b"\r\nX=1\r\n', ["iommu=pt"], [],
     'GRUB_CMDLINE_LINUX_DEFAULT="a iommu=pt b"\r\nX=1\r\n'),
    ('GRUB_CMDLINE_LINUX_DEFAULT=" quiet\tsplash "\n', [], ["quiet"],
     'GRUB_CMDLINE_LINUX_DEFAULT=" splash "\n'),
    ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"\n',
     ["iommu=pt"], ["quiet"],
     'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
     'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash iommu=pt"\n'),
    ('# nothing here\nGRUB_TIMEOUT=5', ["iommu=pt"], [],
     '# nothing here\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="iommu=pt"\n'),
])
def test_grub_line_editing(agent, host, text, add, remove, expected):
    host.program_update_grub()
    host.set_grub(text)
    system = make_kernel_system(agent, host)
    system.which = lambda name: "/x/update-grub" if name == "update-grub" else None
    system.run = lambda argv, timeout: (0, "", "")
    doc = call(agent, system, "kernel_args", {"add": add, "remove": remove})
    assert doc["ok"], doc
    assert host.read("etc/default/grub") == expected


def test_unsupported_grub_syntax_is_refused(agent, host):
    host.set_grub('GRUB_CMDLINE_LINUX_DEFAULT="quiet"$(echo x)\n')
    system = make_kernel_system(agent, host)
    system.which = lambda name: "/x/update-grub" if name == "update-grub" else None
    doc = call(agent, system, "kernel_args", {"add": ["iommu=pt"]})
    assert doc["error"]["code"] == "unsupported_config"


def test_concurrent_execs_share_nothing(tmp_path):
    """simfleet execs the agent bytes many times in one process from threads."""
    from tests.agent.conftest import load_agent

    hosts = [fakesys.dl360_gen9(tmp_path / ("h%d" % i), programs=False) for i in range(8)]
    results = [None] * len(hosts)

    def work(i):
        agent = load_agent()
        system = make_kernel_system(agent, hosts[i])
        results[i] = call(agent, system, "set_vfs", args(i % 7 + 1))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, doc in enumerate(results):
        assert doc["ok"], doc
        assert doc["result"]["after"]["sriov_numvfs"] == i % 7 + 1
