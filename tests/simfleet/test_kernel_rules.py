"""The simulated kernel's rules, directly through SimSystem (no SSH): DESIGN §7."""

from __future__ import annotations

import errno
import time

import pytest

from simfleet import PROFILES, SimHost, iommu_rule

pytestmark = pytest.mark.timeout(60)

NUMVFS = "/sys/class/net/eno49/device/sriov_numvfs"


def test_ebusy_on_nonzero_to_nonzero_and_reset_path():
    host = SimHost("k1", "dl360g9", vf_delay=0.0)
    sys_ = host.system()
    assert sys_.read_text(NUMVFS) == "0\n"
    assert sys_.read_text("/sys/class/net/eno49/device/sriov_totalvfs") == "7\n"
    sys_.write_text(NUMVFS, "2\n")
    with pytest.raises(OSError) as exc:
        sys_.write_text(NUMVFS, "4\n")
    assert exc.value.errno == errno.EBUSY
    assert "busy" in exc.value.strerror.lower()
    sys_.write_text(NUMVFS, "2\n")  # same value: accepted, nothing changes
    sys_.write_text(NUMVFS, "0\n")
    sys_.write_text(NUMVFS, "4\n")
    assert sys_.read_text(NUMVFS) == "4\n"
    with pytest.raises(OSError) as exc:
        sys_.write_text(NUMVFS, "abc")
    assert exc.value.errno == errno.EINVAL


def test_above_totalvfs_is_refused_and_non_sriov_has_no_numvfs():
    host = SimHost("k2", "dl360g9")
    sys_ = host.system()
    with pytest.raises(OSError) as exc:
        sys_.write_text(NUMVFS, "8")
    assert exc.value.errno == errno.ERANGE  # drivers/pci/iov.c: num_vfs > totalvfs -> -ERANGE
    assert not sys_.exists("/sys/class/net/eno1/device/sriov_numvfs")
    with pytest.raises(OSError) as exc:
        sys_.write_text("/sys/class/net/eno1/device/sriov_numvfs", "1")
    assert exc.value.errno == errno.EACCES  # sysfs: cannot create attributes


def test_vfs_appear_with_links_and_netdevs_after_delay():
    host = SimHost("k3", "dl360g9", vf_delay=0.3)
    sys_ = host.system()
    sys_.write_text(NUMVFS, "3")
    dev = "/sys/class/net/eno49/device"
    assert sys_.read_link(dev) == "../../../0000:04:00.0"
    assert [e for e in sys_.list_dir(dev) if e.startswith("virtfn")] == ["virtfn0", "virtfn1", "virtfn2"]
    assert sys_.read_link(dev + "/virtfn1") == "../0000:04:10.4"  # I350: offset 0x80, stride 4
    assert sys_.read_link(dev + "/virtfn0/physfn") == "../0000:04:00.0"
    assert not sys_.exists(dev + "/virtfn0/net")  # the VF driver has not probed yet
    deadline = time.monotonic() + 5
    while not sys_.exists(dev + "/virtfn0/net") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sys_.list_dir(dev + "/virtfn0/net") == ["eno49v0"]
    assert sys_.read_text("/sys/class/net/eno49v2/address") == "00:00:00:00:00:00\n"  # igbvf: zero MAC
    assert sys_.read_link("/sys/class/net/eno49v0/device/driver").endswith("/igbvf")
    sys_.write_text(NUMVFS, "0")
    assert not [e for e in sys_.list_dir(dev) if e.startswith("virtfn")]
    assert not sys_.exists("/sys/class/net/eno49v0")


def test_other_profiles_vf_naming_and_mlx5_firmware_bound():
    x710 = SimHost("k4", "x710", vf_delay=0.0)
    s = x710.system()
    s.write_text("/sys/class/net/enp59s0f0/device/sriov_numvfs", "2")
    assert "enp59s0f0v1" in s.list_dir("/sys/class/net")
    assert s.read_link("/sys/class/net/enp59s0f0v0/device/driver").endswith("/iavf")
    cx5 = SimHost("k5", "cx5", vf_delay=0.0)
    s = cx5.system()
    assert s.read_text("/sys/class/net/enp94s0f0np0/device/sriov_totalvfs") == "8\n"  # NUM_OF_VFS
    with pytest.raises(OSError):
        s.write_text("/sys/class/net/enp94s0f0np0/device/sriov_numvfs", "9")


def test_legacy_kernel_has_no_sriov_numvfs_and_uses_max_vfs_at_boot():
    host = SimHost("k6", "legacy")
    s = host.system()
    assert s.read_text("/proc/sys/kernel/osrelease").startswith("2.6.32")
    assert not s.exists("/sys/class/net/eth1/device/sriov_numvfs")
    s.make_dirs("/etc/modprobe.d")
    s.atomic_write("/etc/modprobe.d/sriov-console.conf", "options igb max_vfs=0,4,2\n")
    host.boot()
    vfs = host.true_state()["numvfs"]
    # Intel's out-of-tree igb: one value per port in PCI order; ports after the list keep 0
    assert vfs == {"0000:03:00.0": 0, "0000:03:00.1": 4, "0000:03:00.2": 2, "0000:03:00.3": 0}


def test_counts_reset_at_boot_unless_persisted_by_udev_rule():
    host = SimHost("k7", "dl360g9", vf_delay=0.0)
    s = host.system()
    s.write_text(NUMVFS, "4")
    s.write_text("/sys/class/net/eno50/device/sriov_numvfs", "2")
    s.atomic_write(
        "/etc/udev/rules.d/70-sriov-console.rules",
        "# Managed by SR-IOV Console\n"
        'ACTION=="add", SUBSYSTEM=="net", KERNELS=="0000:04:00.0", ATTR{device/sriov_numvfs}="4"\n',
    )
    old = host.boot_id
    host.shutdown()
    host.boot()
    state = host.true_state()
    assert state["boot_id"] != old
    assert state["numvfs"]["0000:04:00.0"] == 4
    assert state["numvfs"]["0000:04:00.1"] == 0
    assert state["persisted"] == {"0000:04:00.0": 4}


def test_cmdline_comes_from_the_generated_config():
    host = SimHost("k8", "x710")
    s = host.system()
    grub = s.read_text("/etc/default/grub")
    s.atomic_write("/etc/default/grub", grub.replace('DEFAULT="quiet"', 'DEFAULT="quiet intel_iommu=on"'))
    host.boot()  # forgot update-grub
    assert "intel_iommu=on" not in s.read_text("/proc/cmdline").split()
    assert not host.iommu_active and s.list_dir("/sys/class/iommu") == []
    rc, _out, err = s.run(["update-grub"], 30)
    assert rc == 0 and "Generating grub configuration file" in err
    host.boot()
    assert "intel_iommu=on" in s.read_text("/proc/cmdline").split()
    assert host.iommu_active and s.list_dir("/sys/class/iommu") == ["dmar0"]
    assert s.list_dir("/sys/kernel/iommu_groups")


def test_ubuntu_cloudimg_override_is_effective():
    host = SimHost("k9", "dl360g9")
    s = host.system()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"' in s.read_text("/etc/default/grub")
    assert "console=ttyS0" in s.read_text("/proc/cmdline")
    assert "splash" not in s.read_text("/proc/cmdline")  # 50-cloudimg-settings.cfg wins


@pytest.mark.parametrize(
    "vendor,cmdline,active",
    [
        ("GenuineIntel", "ro intel_iommu=on iommu=pt", True),
        ("GenuineIntel", "ro amd_iommu=on", False),
        # AMD-Vi is on by default where the firmware provides IVRS; only amd_iommu=off turns it off.
        ("AuthenticAMD", "ro quiet", True),
        ("AuthenticAMD", "ro iommu=pt", True),
        ("AuthenticAMD", "ro amd_iommu=off", False),
        ("AuthenticAMD", "ro iommu=off", False),
    ],
)
def test_iommu_rule(vendor, cmdline, active):
    assert iommu_rule(vendor, cmdline) is active


def test_iommu_by_vendor_on_epyc_host():
    host = SimHost("k10", "epyc")
    s = host.system()
    assert "AuthenticAMD" in s.read_text("/proc/cpuinfo")
    for arg, active in (("amd_iommu=off", False), ("iommu=pt", True)):
        text = s.read_text("/etc/default/grub")
        text = text.replace('DEFAULT="quiet"', f'DEFAULT="quiet {arg}"')
        s.atomic_write("/etc/default/grub", text)
        assert s.run(["update-grub"], 30)[0] == 0
        host.boot()
        assert host.iommu_active is active, arg
        s.atomic_write("/etc/default/grub", text.replace(" " + arg, ""))


def test_grubby_and_grub2_mkconfig_hosts():
    cx5 = SimHost("k11", "cx5")
    s = cx5.system()
    # RHEL 9 has grub2-mkconfig too, but on BLS it does not change the entries' options
    assert s.which("grubby") and s.which("grub2-mkconfig") and not s.which("update-grub")
    s.atomic_write("/etc/default/grub", s.read_text("/etc/default/grub") + 'GRUB_CMDLINE_LINUX_DEFAULT="y=1"\n')
    assert s.run(["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"], 30)[0] == 0
    cx5.boot()
    assert "y=1" not in cx5.cmdline.split()
    assert s.run(["grubby", "--update-kernel=ALL", "--args=intel_iommu=on iommu=pt"], 30)[0] == 0
    cx5.boot()
    assert cx5.iommu_active
    assert s.run(["grubby", "--update-kernel=ALL", "--remove-args=iommu"], 30)[0] == 0
    cx5.boot()
    assert "iommu=pt" not in cx5.cmdline.split() and "intel_iommu=on" in cx5.cmdline.split()
    rhel8 = SimHost("k12", "rhel8")
    s = rhel8.system()
    assert s.which("grub2-mkconfig") and not s.which("grubby")
    s.atomic_write(
        "/etc/default/grub", s.read_text("/etc/default/grub") + 'GRUB_CMDLINE_LINUX_DEFAULT="x=1"\n'
    )
    rc, _out, _err = s.run(["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"], 30)
    assert rc == 0
    rhel8.boot()
    assert "x=1" in rhel8.cmdline.split()


def test_unknown_paths_programs_and_readonly_etc():
    host = SimHost("k13", "dl360g9")
    s = host.system()
    with pytest.raises(FileNotFoundError):
        s.read_text("/etc/nope")
    with pytest.raises(FileNotFoundError):
        s.list_dir("/sys/class/nope")
    assert s.run(["nosuchprog"], 5)[0] == 127
    host.faults["readonly_etc"] = {}
    with pytest.raises(OSError) as exc:
        s.atomic_write("/etc/default/grub", "x")
    assert exc.value.errno == errno.EROFS
    s.atomic_write("/tmp/ok", "fine")  # only /etc is read-only
    host.faults.clear()
    unprivileged = host.system(privileged=False)
    with pytest.raises(PermissionError):
        unprivileged.write_text(NUMVFS, "1")


def test_guests_hold_vfs_and_virsh_reports_them():
    host = SimHost("k14", "dl360g9", vf_delay=0.0)
    s = host.system()
    s.write_text(NUMVFS, "2")
    host.add_guest("vm1", ["0000:04:10.0"])
    rc, out, _ = s.run(["virsh", "list", "--name"], 30)
    assert rc == 0 and out.split() == ["vm1"]
    rc, out, _ = s.run(["virsh", "dumpxml", "--domain", "vm1"], 30)
    assert "bus='0x04' slot='0x10' function='0x0'" in out
    assert s.read_link("/sys/class/net/eno49/device/virtfn0/driver").endswith("/vfio-pci")
    assert not s.exists("/sys/class/net/eno49/device/virtfn0/net")  # assigned: no host netdev


def test_every_profile_boots():
    for name in PROFILES:
        host = SimHost("p-" + name, name)
        assert host.state == "up" and host.cmdline and host.boot_id
