"""Hardware and OS profiles of the simulated hypervisors.

A profile is static data: machine, CPU, OS files, the boot loader flavour, the programs that exist
and the NICs (with the PCI geometry of their VFs). `simfleet.host.SimHost` turns one into a live
host. Texts are module constants so that 1,000 hosts share them until one of them edits a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# ---------------------------------------------------------------------------------------------
# Boot loader flavours
# ---------------------------------------------------------------------------------------------
# "debian":      update-grub / grub-mkconfig -o /boot/grub/grub.cfg; boot reads /boot/grub/grub.cfg
# "rhel-mkconfig": grub2-mkconfig -o /boot/grub2/grub.cfg (GRUB_ENABLE_BLSCFG=false, BIOS boot);
#                boot reads /boot/grub2/grub.cfg
# "bls":         grubby edits /boot/loader/entries/*.conf ("options" line); boot reads the entry
# "grub-legacy": grubby edits /boot/grub/grub.conf ("kernel" lines); boot reads the default title

UBUNTU_GRUB = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""

# Uncomment to enable BadRAM filtering, modify to suit your needs
# This works with Linux (no patch required) and with any kernel that obtains
# the memory map information from GRUB (GNU Mach, kernel of FreeBSD ...)
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal (grub-pc only)
#GRUB_TERMINAL=console

# Uncomment if you don't want GRUB to pass "root=UUID=xxx" parameter to Linux
#GRUB_DISABLE_LINUX_UUID=true

# Uncomment to disable generation of recovery mode menu entries
#GRUB_DISABLE_RECOVERY="true"
"""

# Ubuntu cloud images: sourced after /etc/default/grub, overrides GRUB_CMDLINE_LINUX_DEFAULT.
UBUNTU_CLOUDIMG_CFG = """\
# Cloud Image specific Grub settings for Generic Cloud Images
# CLOUD_IMG: This file was created/modified by the Cloud Image build process

# Set the recordfail timeout
GRUB_RECORDFAIL_TIMEOUT=0

# Do not wait on grub prompt
GRUB_TIMEOUT=0

# Set the default commandline
GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"

# Set the grub console type
GRUB_TERMINAL=console
"""

DEBIAN_GRUB = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""

# Uncomment to enable BadRAM filtering, modify to suit your needs
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal (grub-pc only)
#GRUB_TERMINAL=console
"""

RHEL9_GRUB = """\
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap \
rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
"""

RHEL8_GRUB = """\
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=auto resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=false
"""

UBUNTU_2204_OS_RELEASE = """\
PRETTY_NAME="Ubuntu 22.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.3 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"""

DEBIAN_12_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

RHEL_9_OS_RELEASE = """\
NAME="Red Hat Enterprise Linux"
VERSION="9.3 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.3 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
"""

RHEL_8_OS_RELEASE = """\
NAME="Red Hat Enterprise Linux"
VERSION="8.9 (Ootpa)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="8.9"
PLATFORM_ID="platform:el8"
PRETTY_NAME="Red Hat Enterprise Linux 8.9 (Ootpa)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:redhat:enterprise_linux:8::baseos"
HOME_URL="https://www.redhat.com/"
"""

# CentOS 6 predates os-release; the file is provided anyway (the brief asks every host to have
# one); /etc/redhat-release is what a real CentOS 6 has.
CENTOS_6_OS_RELEASE = """\
NAME="CentOS Linux"
VERSION="6.10 (Final)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="6"
PRETTY_NAME="CentOS Linux 6.10 (Final)"
"""

# Programs present on each OS family (which() answers from these; run() simulates them).
_COMMON = {
    "python3": "/usr/bin/python3",
    "sh": "/bin/sh",
    "ethtool": "/usr/sbin/ethtool",
    "virsh": "/usr/bin/virsh",
    "reboot": "/usr/sbin/reboot",
    "shutdown": "/usr/sbin/shutdown",
    "systemctl": "/usr/bin/systemctl",
    "systemd-run": "/usr/bin/systemd-run",
    "udevadm": "/usr/bin/udevadm",
    "modprobe": "/usr/sbin/modprobe",
    "modinfo": "/usr/sbin/modinfo",
    "ip": "/usr/sbin/ip",
    "sudo": "/usr/bin/sudo",
    "true": "/usr/bin/true",
    "sync": "/usr/bin/sync",
}
DEBIAN_PROGRAMS = dict(
    _COMMON,
    **{
        "update-grub": "/usr/sbin/update-grub",
        "grub-mkconfig": "/usr/sbin/grub-mkconfig",
        "update-initramfs": "/usr/sbin/update-initramfs",
        "lsinitramfs": "/usr/bin/lsinitramfs",
    },
)
_RHEL = dict(_COMMON, dracut="/usr/bin/dracut", lsinitrd="/usr/bin/lsinitrd", nmcli="/usr/bin/nmcli")
RHEL_GRUBBY_PROGRAMS = dict(_RHEL, grubby="/usr/sbin/grubby")
# RHEL 8/9 BLS hosts have both: grub2-mkconfig regenerates grub.cfg but does not change the BLS
# entries' options, so choosing it over grubby would silently not apply kernel arguments.
RHEL_BLS_PROGRAMS = dict(
    RHEL_GRUBBY_PROGRAMS,
    **{
        "grub2-mkconfig": "/usr/sbin/grub2-mkconfig",
        "grub2-editenv": "/usr/bin/grub2-editenv",
        "kernel-install": "/usr/bin/kernel-install",
    },
)
RHEL9_BLS_PROGRAMS = RHEL_BLS_PROGRAMS
RHEL_MKCONFIG_PROGRAMS = dict(_RHEL, **{"grub2-mkconfig": "/usr/sbin/grub2-mkconfig"})
CENTOS6_PROGRAMS = {
    "python3": "/usr/bin/python3",
    "sh": "/bin/sh",
    "ethtool": "/sbin/ethtool",
    "virsh": "/usr/bin/virsh",
    "reboot": "/sbin/reboot",
    "shutdown": "/sbin/shutdown",
    "modprobe": "/sbin/modprobe",
    "modinfo": "/sbin/modinfo",
    "ip": "/sbin/ip",
    "sudo": "/usr/bin/sudo",
    "grubby": "/sbin/grubby",
    "dracut": "/sbin/dracut",
    "lsinitrd": "/sbin/lsinitrd",
    "true": "/bin/true",
    "sync": "/bin/sync",
}

# `modinfo -F parm <driver>` lines for max_vfs: the in-tree igb/ixgbe take one unsigned integer
# for every port (a list is rejected and the module does not load); Intel's out-of-tree drivers
# take one value per port.
MAX_VFS_PARM = {
    "uint": "max_vfs:Maximum number of virtual functions to allocate per physical function - default is "
    "zero and maximum value is {max}. (Deprecated) (uint)",
    "array of int": "max_vfs:Number of Virtual Functions: 0 = disable (default), 1-{max} = enable this many VFs "
    "(array of int)",
}

# RHEL 9's kernel-install plugin: a new kernel's BLS entry takes its options from /etc/kernel/cmdline,
# else from the running kernel's /proc/cmdline (simfleet models this, the 9.0-9.2 behaviour; 9.3
# also re-syncs /etc/kernel/cmdline from /etc/default/grub when that file is newer).
GRUB_INSTALL_HOOK = """\
#!/usr/bin/bash
# 20-grub.install (excerpt): where the options of a newly installed kernel's entry come from
if [[ -f /etc/kernel/cmdline ]]; then
    read -r -d '' -a BOOT_OPTIONS < /etc/kernel/cmdline
else
    read -r -d '' -a line < /proc/cmdline
fi
"""


@dataclass(frozen=True)
class NicSpec:
    name: str
    pci: str
    driver: str
    vendor: int
    device: int
    description: str
    driver_version: str
    firmware: str
    bridge: str  # upstream port, e.g. 0000:00:03.0
    speed: int = 1000  # Mb/s when the link is up
    link_up: bool = False
    sriov: bool = False
    totalvfs: int = 0  # device limit (mlx5: bounded by the firmware's NUM_OF_VFS below)
    fw_num_vfs: int | None = None  # mlx5 only: firmware NUM_OF_VFS (sriov_totalvfs reports it)
    vf_driver: str | None = None
    vf_device: int | None = None
    vf_offset: int = 0
    vf_stride: int = 1
    vf_zero_mac: bool = False  # igb/igbvf VFs come up with 00:00:00:00:00:00
    vf_name_base: str | None = None  # VF netdevs: <base>v<N>; default: the PF name
    subsystem: tuple[int, int] = (0x103C, 0x22BE)
    mac_oui: str = "00:1b:21"
    binding: str = "driver"  # "driver" | "vfio-pci" (handed to a guest/DPDK: no netdev) | "none" (unbound)

    @property
    def effective_totalvfs(self) -> int:
        if self.fw_num_vfs is not None:
            return min(self.totalvfs, self.fw_num_vfs)
        return self.totalvfs


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    sys_vendor: str
    product_name: str
    cpu_vendor: str  # GenuineIntel | AuthenticAMD
    cpu_model: str
    os_release: str
    distributor: str  # what `lsb_release -i -s` / the sed in RHEL's grub file prints
    kernel: str
    boot_flavour: str  # see the table at the top of this module
    programs: dict[str, str]
    grub_default: str | None  # /etc/default/grub (None: the file does not exist)
    grub_d: dict[str, str] = field(default_factory=dict)  # /etc/default/grub.d/<name>
    extra_etc: dict[str, str] = field(default_factory=dict)
    nics: tuple[NicSpec, ...] = ()
    root_arg: str = "root=UUID={root_uuid}"
    bls_root_arg: str = "root=/dev/mapper/rhel-root"
    guests_possible: bool = True
    # How VFs are bound once created: "driver" (the VF driver probes, netdevs appear), "vfio-pci"
    # (passthrough host: every VF handed to vfio-pci, no netdevs), "none" (VF driver blacklisted).
    vf_binding: str = "driver"
    # Host networking: the management interface (the SSH connection arrives there; the default
    # route leaves there), other addresses, and stacked devices {port: master} / {master: kind}.
    management: str = "eno1"
    addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    masters: dict[str, str] = field(default_factory=dict)
    master_kinds: dict[str, str] = field(default_factory=dict)
    # Firmware: the ACPI tables the BIOS publishes (DMAR: VT-d on, IVRS: AMD-Vi on); None: by vendor.
    acpi_tables: tuple[str, ...] | None = None
    # `modinfo -F parm` type of max_vfs per driver (default: the in-tree "uint").
    max_vfs_param: dict[str, str] = field(default_factory=dict)
    initramfs_modules: tuple[str, ...] = ()  # drivers that load from the initramfs (with its modprobe.d copy)
    # BLS hosts: where kernel-install takes a new kernel's options: "cmdline" (RHEL 9: /etc/kernel/cmdline,
    # else /proc/cmdline) or "kernelopts" (RHEL 8 entries say "options $kernelopts"; grubenv has the value).
    kernel_install: str | None = None
    grubby_etc_update_flag: bool = True  # grubby --help lists --no-etc-grub-update (grubby >= 8.40-41)
    # Pre-existing state: VF counts in the console's udev file, libvirt networks, guests.
    managed_vfs: dict[str, int] = field(default_factory=dict)
    networks: dict[str, dict] = field(default_factory=dict)
    guests: tuple[dict, ...] = ()
    # NUMA: the CPUs of each node (device/local_cpulist) and the node of each PCIe root port
    # (device/numa_node); no nodes: the kernel reports -1 and every CPU is local.
    node_cpus: tuple[str, ...] = ("0-15",)
    bridge_nodes: dict[str, int] = field(default_factory=dict)
    all_cpus: str = "0-15"

    def max_vfs_type(self, driver: str) -> str:
        return self.max_vfs_param.get(driver, "uint")

    def firmware_tables(self) -> tuple[str, ...]:
        if self.acpi_tables is not None:
            return self.acpi_tables
        return ("DMAR",) if self.cpu_vendor == "GenuineIntel" else ("IVRS",)


def _i350_ports(
    names,
    bus,
    bridge,
    *,
    vf_offset=0x80,
    oui="3c:a8:2a",
    link_up=(),
    version="5.6.0-k",
    firmware="1.61, 0x80000daa, 1.949.0",
    subsystem=(0x103C, 0x22BD),
):
    out = []
    for func, name in enumerate(names):
        out.append(
            NicSpec(
                name=name,
                pci=f"0000:{bus:02x}:00.{func}",
                driver="igb",
                vendor=0x8086,
                device=0x1521,
                description="Intel Corporation I350 Gigabit Network Connection (rev 01)",
                driver_version=version,
                firmware=firmware,
                bridge=bridge,
                speed=1000,
                link_up=name in link_up,
                sriov=True,
                totalvfs=7,
                vf_driver="igbvf",
                vf_device=0x1520,
                vf_offset=vf_offset,
                vf_stride=4,
                vf_zero_mac=True,
                subsystem=subsystem,
                mac_oui=oui,
            )
        )
    return tuple(out)


def _bcm5719_ports(
    names,
    bus,
    bridge,
    *,
    device=0x1657,
    link_up=("eno1", "eno4"),
    firmware=None,
    description="Broadcom Inc. and subsidiaries NetXtreme BCM5719 Gigabit Ethernet PCIe (rev 01)",
):
    return tuple(
        NicSpec(
            name=name,
            pci=f"0000:{bus:02x}:00.{func}",
            driver="tg3",
            vendor=0x14E4,
            device=device,
            description=description,
            driver_version="3.137",
            firmware=firmware or "5719-v1.46 NCSI v1.5.18.0",
            bridge=bridge,
            speed=1000,
            link_up=name in link_up,
            mac_oui="94:18:82",
        )
        for func, name in enumerate(names)
    )


def _x710_ports(names, bus, bridge, *, kernel_version, oui="f8:f2:1e", link_up=()):
    offsets = (16, 79, 142, 205)
    return tuple(
        NicSpec(
            name=name,
            pci=f"0000:{bus:02x}:00.{func}",
            driver="i40e",
            vendor=0x8086,
            device=0x1572,
            description="Intel Corporation Ethernet Controller X710 for 10GbE SFP+ (rev 02)",
            driver_version=kernel_version,
            firmware="9.20 0x8000d8c5 1.3429.0",
            bridge=bridge,
            speed=10000,
            link_up=name in link_up,
            sriov=True,
            totalvfs=64,
            vf_driver="iavf",
            vf_device=0x154C,
            vf_offset=offsets[func],
            vf_stride=1,
            subsystem=(0x8086, 0x0000),
            mac_oui=oui,
        )
        for func, name in enumerate(names)
    )


DL360G9 = Profile(
    name="dl360g9",
    description="HPE ProLiant DL360 Gen9, Ubuntu 22.04, Intel I350 (igb) + Broadcom BCM5719 (tg3)",
    sys_vendor="HP",
    product_name="ProLiant DL360 Gen9",
    cpu_vendor="GenuineIntel",
    cpu_model="Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz",
    os_release=UBUNTU_2204_OS_RELEASE,
    distributor="Ubuntu",
    kernel="5.15.0-91-generic",
    boot_flavour="debian",
    programs=DEBIAN_PROGRAMS,
    grub_default=UBUNTU_GRUB,
    grub_d={"50-cloudimg-settings.cfg": UBUNTU_CLOUDIMG_CFG},
    nics=_bcm5719_ports(("eno1", "eno2", "eno3", "eno4"), 0x02, "0000:00:1c.0")
    + _i350_ports(("eno49", "eno50", "eno51", "eno52"), 0x04, "0000:00:03.0"),
    node_cpus=("0-11,24-35", "12-23,36-47"),
    bridge_nodes={"0000:00:1c.0": 0, "0000:00:03.0": 1},  # the I350 sits in a riser slot of CPU 2
    all_cpus="0-47",
)

X710 = Profile(
    name="x710",
    description="Dell PowerEdge R740, Debian 12, Intel X710 (i40e) + Broadcom BCM5720 (tg3)",
    sys_vendor="Dell Inc.",
    product_name="PowerEdge R740",
    cpu_vendor="GenuineIntel",
    cpu_model="Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
    os_release=DEBIAN_12_OS_RELEASE,
    distributor="Debian",
    kernel="6.1.0-17-amd64",
    boot_flavour="debian",
    programs=DEBIAN_PROGRAMS,
    grub_default=DEBIAN_GRUB,
    nics=_bcm5719_ports(
        ("eno1", "eno2"),
        0x01,
        "0000:00:1c.5",
        device=0x165F,
        link_up=("eno1",),
        firmware="FFV21.80.8 bc 5720-v1.39",
        description="Broadcom Inc. and subsidiaries NetXtreme BCM5720 Gigabit Ethernet PCIe",
    )
    + _x710_ports(
        ("enp59s0f0", "enp59s0f1"),
        0x3B,
        "0000:3a:00.0",
        kernel_version="6.1.0-17-amd64",
        link_up=("enp59s0f0", "enp59s0f1"),
    ),
    node_cpus=("0-19,40-59", "20-39,60-79"),
    bridge_nodes={"0000:00:1c.5": 0, "0000:3a:00.0": 0},
    all_cpus="0-79",
)

_CX5_KERNEL = "5.14.0-362.8.1.el9_3.x86_64"
CX5 = Profile(
    name="cx5",
    description="Lenovo ThinkSystem SR650, RHEL 9.3 (grubby), Mellanox ConnectX-5 (mlx5_core)",
    sys_vendor="Lenovo",
    product_name="ThinkSystem SR650 -[7X06CTO1WW]-",
    cpu_vendor="GenuineIntel",
    cpu_model="Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz",
    os_release=RHEL_9_OS_RELEASE,
    distributor="Red Hat Enterprise Linux",
    kernel=_CX5_KERNEL,
    boot_flavour="bls",
    programs=RHEL9_BLS_PROGRAMS,
    grub_default=RHEL9_GRUB,
    extra_etc={
        "/etc/redhat-release": "Red Hat Enterprise Linux release 9.3 (Plow)\n",
        "/usr/lib/kernel/install.d/20-grub.install": GRUB_INSTALL_HOOK,
    },
    kernel_install="cmdline",
    node_cpus=("0-11,24-35", "12-23,36-47"),
    bridge_nodes={"0000:00:1c.0": 0, "0000:5d:00.0": 1},
    all_cpus="0-47",
    nics=(
        NicSpec(
            name="eno1",
            pci="0000:01:00.0",
            driver="igb",
            vendor=0x8086,
            device=0x1533,
            description="Intel Corporation I210 Gigabit Network Connection (rev 03)",
            driver_version=_CX5_KERNEL,
            firmware="3.30, 0x800005d0",
            bridge="0000:00:1c.0",
            link_up=True,
            subsystem=(0x17AA, 0x1064),
            mac_oui="08:94:ef",
        ),
    )
    + tuple(
        NicSpec(
            name=f"enp94s0f{func}np{func}",
            pci=f"0000:5e:00.{func}",
            driver="mlx5_core",
            vendor=0x15B3,
            device=0x1017,
            description="Mellanox Technologies MT27800 Family [ConnectX-5]",
            driver_version=_CX5_KERNEL,
            firmware="16.35.2000 (MT_0000000012)",
            bridge="0000:5d:00.0",
            speed=25000,
            link_up=True,
            sriov=True,
            totalvfs=127,
            fw_num_vfs=8,
            vf_driver="mlx5_core",
            vf_device=0x1018,
            vf_offset=2 + func * 9,
            vf_stride=1,
            vf_name_base=f"enp94s0f{func}",
            subsystem=(0x15B3, 0x0007),
            mac_oui="b8:ce:f6",
        )
        for func in (0, 1)
    ),
)

EPYC = Profile(
    name="epyc",
    description="Dell PowerEdge R7525, AMD EPYC, Debian 12, Intel I350 (igb) + X710 (i40e)",
    sys_vendor="Dell Inc.",
    product_name="PowerEdge R7525",
    cpu_vendor="AuthenticAMD",
    cpu_model="AMD EPYC 7543 32-Core Processor",
    os_release=DEBIAN_12_OS_RELEASE,
    distributor="Debian",
    kernel="6.1.0-17-amd64",
    boot_flavour="debian",
    programs=DEBIAN_PROGRAMS,
    grub_default=DEBIAN_GRUB,
    nics=_bcm5719_ports(
        ("eno1", "eno2"),
        0x01,
        "0000:00:01.1",
        device=0x165F,
        link_up=("eno1",),
        firmware="FFV21.80.8 bc 5720-v1.39",
        description="Broadcom Inc. and subsidiaries NetXtreme BCM5720 Gigabit Ethernet PCIe",
    )
    + _i350_ports(
        ("enp65s0f0", "enp65s0f1"),
        0x41,
        "0000:40:01.1",
        oui="b4:96:91",
        version="6.1.0-17-amd64",
        subsystem=(0x8086, 0x0001),
    )
    + _x710_ports(
        ("enp129s0f0", "enp129s0f1"),
        0x81,
        "0000:80:01.1",
        kernel_version="6.1.0-17-amd64",
        link_up=("enp129s0f0",),
    ),
    node_cpus=("0-31,64-95", "32-63,96-127"),
    bridge_nodes={"0000:00:01.1": 0, "0000:40:01.1": 0, "0000:80:01.1": 1},
    all_cpus="0-127",
)

RHEL8 = Profile(
    name="rhel8",
    description="HPE ProLiant DL380 Gen10, RHEL 8.9 (grub2-mkconfig), Intel I350 (igb) + BCM5719 (tg3)",
    sys_vendor="HPE",
    product_name="ProLiant DL380 Gen10",
    cpu_vendor="GenuineIntel",
    cpu_model="Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
    os_release=RHEL_8_OS_RELEASE,
    distributor="Red Hat Enterprise Linux",
    kernel="4.18.0-513.5.1.el8_9.x86_64",
    boot_flavour="rhel-mkconfig",
    programs=RHEL_MKCONFIG_PROGRAMS,
    grub_default=RHEL8_GRUB,
    extra_etc={"/etc/redhat-release": "Red Hat Enterprise Linux release 8.9 (Ootpa)\n"},
    nics=_bcm5719_ports(("eno1", "eno2", "eno3", "eno4"), 0x02, "0000:00:1c.0", link_up=("eno1",))
    + _i350_ports(
        ("ens1f0", "ens1f1", "ens1f2", "ens1f3"),
        0x12,
        "0000:00:02.0",
        oui="98:03:9b",
        version="4.18.0-513.5.1.el8_9.x86_64",
    ),
    node_cpus=("0-19,40-59", "20-39,60-79"),
    bridge_nodes={"0000:00:1c.0": 0, "0000:00:02.0": 0},
    all_cpus="0-79",
)

LEGACY = Profile(
    name="legacy",
    description="HP ProLiant DL360 G7, CentOS 6.10, kernel 2.6.32 (max_vfs only), Intel I350 (igb)",
    sys_vendor="HP",
    product_name="ProLiant DL360 G7",
    cpu_vendor="GenuineIntel",
    cpu_model="Intel(R) Xeon(R) CPU X5650 @ 2.67GHz",
    os_release=CENTOS_6_OS_RELEASE,
    distributor="CentOS",
    kernel="2.6.32-754.35.1.el6.x86_64",
    boot_flavour="grub-legacy",
    programs=CENTOS6_PROGRAMS,
    grub_default=None,
    extra_etc={
        "/etc/redhat-release": "CentOS release 6.10 (Final)\n",
        "/etc/centos-release": "CentOS release 6.10 (Final)\n",
    },
    nics=_i350_ports(
        ("eth0", "eth1", "eth2", "eth3"),
        0x03,
        "0000:00:07.0",
        link_up=("eth0",),
        version="5.3.5.42",
        firmware="1.52, 0x80000783, 1.949.0",
    ),
    root_arg="root=/dev/mapper/vg_root-lv_root",
    management="eth0",
    max_vfs_param={"igb": "array of int"},
    node_cpus=(),  # this kernel and BIOS describe no NUMA nodes: numa_node reads -1
    all_cpus="0-23",
)

RHEL8_BLS_GRUB = RHEL8_GRUB.replace("GRUB_ENABLE_BLSCFG=false", "GRUB_ENABLE_BLSCFG=true")
_RHEL8_BLS_KERNEL = "4.18.0-147.el8.x86_64"

# -- scenario profiles: one hardware profile plus the host state a case needs --------------------

# The reference author's own rule (config_sr-iov_network.rst): every igb PF gets 7 VFs at boot.
REFERENCE_IGB_RULE = 'ACTION=="add", SUBSYSTEM=="net", ENV{ID_NET_DRIVER}=="igb", ATTR{device/sriov_numvfs}="7"\n'
NM_SRIOV_KEYFILE = """\
[connection]
id=enp94s0f0np0
uuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
type=ethernet
interface-name=enp94s0f0np0

[ethernet]

[sriov]
total-vfs=4

[ipv4]
method=disabled

[ipv6]
method=ignore
"""

SCENARIOS = (
    replace(
        DL360G9,
        name="dl360g9-mgmt-on-pf",
        description="DL360 Gen9 whose management address (and SSH) is on the SR-IOV PF eno49",
        management="eno49",
    ),
    replace(
        DL360G9,
        name="dl360g9-bond",
        description="DL360 Gen9: eno49+eno50 bonded (bond0) under the guest bridge br0, which has an address",
        masters={"eno49": "bond0", "eno50": "bond0", "bond0": "br0"},
        master_kinds={"bond0": "bond", "br0": "bridge"},
        addresses={"br0": ("192.168.50.10/24",)},
    ),
    replace(
        DL360G9,
        name="dl360g9-guests",
        description="DL360 Gen9, eno49 with 4 VFs: a running macvtap guest on eno49v3, a stopped guest that "
        "starts at boot with VF 2 as a hostdev, and a guest on a libvirt macvtap network over eno50's VFs",
        managed_vfs={"0000:04:00.0": 4, "0000:04:00.1": 2},
        networks={"sriov-eno50": {"mode": "passthrough", "pf": "eno50"}},
        guests=(
            {"name": "vm-macvtap", "interfaces": [{"type": "direct", "dev": "eno49v3", "mode": "passthrough"}]},
            {"name": "vm-autostart", "hostdevs": ["0000:04:11.0"], "running": False, "autostart": True},
            {"name": "vm-pool", "interfaces": [{"type": "network", "network": "sriov-eno50"}]},
        ),
    ),
    replace(
        DL360G9,
        name="dl360g9-novtd",
        description="DL360 Gen9 with VT-d disabled in the BIOS: no ACPI DMAR table",
        acpi_tables=(),
    ),
    replace(
        DL360G9,
        name="dl360g9-foreign-udev",
        description="DL360 Gen9 with the reference procedure's own /etc/udev/rules.d/igb.rules (7 VFs per igb PF)",
        extra_etc={"/etc/udev/rules.d/igb.rules": REFERENCE_IGB_RULE},
    ),
    replace(
        X710,
        name="x710-vfio-pf",
        description="R740, X710 with enp59s0f1 bound to vfio-pci (no network interface) for a DPDK guest",
        nics=X710.nics[:3] + (replace(X710.nics[3], binding="vfio-pci"),),
    ),
    replace(
        CX5,
        name="cx5-nm",
        description="RHEL 9.3 with a NetworkManager connection that sets sriov.total-vfs=4 on enp94s0f0np0",
        extra_etc=dict(
            CX5.extra_etc, **{"/etc/NetworkManager/system-connections/enp94s0f0np0.nmconnection": NM_SRIOV_KEYFILE}
        ),
    ),
    replace(
        LEGACY,
        name="legacy-intree",
        description="CentOS 6.10, kernel 2.6.32, the in-tree igb 5.3.0-k (max_vfs is one uint for all ports), "
        "igb in the initramfs",
        nics=tuple(replace(n, driver_version="5.3.0-k") for n in LEGACY.nics),
        max_vfs_param={"igb": "uint"},
        initramfs_modules=("igb",),
    ),
    replace(
        RHEL8,
        name="rhel8bls",
        description="RHEL 8.1 with BLS entries that say 'options $kernelopts' (grubenv) and grubby 8.40-34, "
        "which edits the entries only",
        kernel=_RHEL8_BLS_KERNEL,
        os_release=RHEL_8_OS_RELEASE.replace("8.9", "8.1"),
        boot_flavour="bls",
        programs=RHEL_BLS_PROGRAMS,
        grub_default=RHEL8_BLS_GRUB,
        kernel_install="kernelopts",
        grubby_etc_update_flag=False,
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (DL360G9, X710, CX5, EPYC, RHEL8, LEGACY) + SCENARIOS}

# --count N cycles through this list (weighted: the common hardware appears more often).
MIX = ("dl360g9", "x710", "dl360g9", "cx5", "epyc", "dl360g9", "x710", "rhel8", "dl360g9", "legacy")


def mixed_profiles(count: int) -> list[str]:
    return [MIX[i % len(MIX)] for i in range(count)]
