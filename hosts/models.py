"""Inventory: hypervisors, their NICs (physical functions) and virtual functions, SSH credentials.

Observed facts come from discovery (hosts/discovery.py) and are never the console's intent; the
intent the console applied is kept separately (Intent rows, written by the change executor) so drift
is a comparison of the two (hosts/intents.py).
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Count, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.urls import reverse

from console import crypto

host_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
    "Use letters, digits, '.', '_' or '-' (at most 63 characters, starting with a letter or digit).",
)
address_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$",
    "Give a DNS name or an IPv4/IPv6 address.",
)
ssh_user_validator = RegexValidator(
    r"^[a-z_][a-z0-9_-]{0,31}$",
    "A Unix user name: lower-case letters, digits, '_' or '-', at most 32 characters.",
)
label_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$",
    "Labels use letters, digits and '_.:/-' (at most 63 characters).",
)


class Credential(models.Model):
    """An SSH key pair. The private key is stored only encrypted (console/crypto.py)."""

    name = models.CharField(max_length=100, unique=True, validators=[host_name_validator])
    username = models.CharField(max_length=32, default="root", validators=[ssh_user_validator])
    private_key_encrypted = models.TextField(editable=False)
    public_key = models.TextField(editable=False)
    fingerprint = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def set_private_key(self, private_key: str, public_key: str, fingerprint: str) -> None:
        self.private_key_encrypted = crypto.encrypt(private_key)
        self.public_key = public_key
        self.fingerprint = fingerprint

    def get_private_key(self) -> str:
        return crypto.decrypt(self.private_key_encrypted)


class Label(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[label_validator])

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Hypervisor(models.Model):
    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not yet discovered"
        REACHABLE = "reachable", "Reachable"
        UNREACHABLE = "unreachable", "Unreachable"
        AUTH_FAILED = "auth_failed", "Authentication failed"
        HOST_KEY_PENDING = "host_key_pending", "Host key pending"
        HOST_KEY_MISMATCH = "host_key_mismatch", "Host key mismatch"
        ERROR = "error", "Agent error"

    name = models.CharField(max_length=63, unique=True, validators=[host_name_validator])
    address = models.CharField(max_length=253, validators=[address_validator])
    port = models.PositiveIntegerField(default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    username = models.CharField(max_length=32, default="root", validators=[ssh_user_validator])
    credential = models.ForeignKey(Credential, null=True, blank=True, on_delete=models.PROTECT, related_name="hosts")
    labels = models.ManyToManyField(Label, blank=True, related_name="hosts")
    description = models.CharField(max_length=200, blank=True)

    # Host-key trust: the accepted key is pinned; a key seen but not (yet) accepted is "pending".
    host_key = models.TextField(blank=True)
    host_key_fingerprint = models.CharField(max_length=100, blank=True)
    host_key_first_seen = models.DateTimeField(null=True, blank=True)
    host_key_accepted_at = models.DateTimeField(null=True, blank=True)
    host_key_accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pending_host_key = models.TextField(blank=True)
    pending_host_key_fingerprint = models.CharField(max_length=100, blank=True)
    pending_host_key_seen_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UNKNOWN, db_index=True)
    status_reason = models.TextField(blank=True)
    last_contact_at = models.DateTimeField(null=True, blank=True)

    # Observed facts (from the agent's inventory).
    hostname = models.CharField(max_length=253, blank=True)
    machine_id = models.CharField(max_length=64, blank=True)
    boot_id = models.CharField(max_length=64, blank=True)
    kernel = models.CharField(max_length=100, blank=True)
    os_id = models.CharField(max_length=50, blank=True)
    os_version = models.CharField(max_length=50, blank=True)
    os_name = models.CharField(max_length=200, blank=True)
    cpu_vendor = models.CharField(max_length=20, blank=True)
    cmdline = models.TextField(blank=True)
    grub_cmdline_linux = models.TextField(blank=True)
    grub_cmdline_default = models.TextField(blank=True)
    grub_file = models.CharField(max_length=255, blank=True)
    grub_tool = models.CharField(max_length=50, blank=True)
    iommu_active = models.BooleanField(null=True)
    running_guests = models.JSONField(default=list, blank=True)
    # Host truth the planner checks: the ACPI tables that say the firmware enabled the IOMMU
    # ({"table": "DMAR"|"IVRS"|None, "present": bool|None, "acpi_tables_readable": bool}), where
    # kernels installed later take their arguments from, stopped guests that start at boot
    # ([{"name", "vfs": [{"pf", "index", "pci", "via"}]}]) and the boot sources of a VF count
    # that are not the console's.
    iommu_firmware = models.JSONField(default=dict, blank=True)
    boot_config = models.JSONField(default=dict, blank=True)
    defined_guests = models.JSONField(default=list, blank=True)
    other_vf_config = models.JSONField(default=list, blank=True)
    facts_refreshed_at = models.DateTimeField(null=True, blank=True)

    # The last discovery attempt, whatever its outcome.
    last_discovery_at = models.DateTimeField(null=True, blank=True)
    last_discovery_ok = models.BooleanField(null=True)
    last_discovery_message = models.TextField(blank=True)
    discovery_requested_at = models.DateTimeField(null=True, blank=True)

    # Drift from the intent the console applied (Intent rows).
    drifted = models.BooleanField(default=False, db_index=True)
    drift_reasons = models.JSONField(default=list, blank=True)

    # Figures of the present SR-IOV NICs (sriov_totalvfs > 0), kept on the row so the host list
    # filters, sorts and pages on them without aggregating NICs: written by discovery with the
    # NICs, and by refresh_nic_figures() when a NIC is saved or deleted one by one.
    sriov_nics = models.PositiveIntegerField(default=0)
    vfs_configured = models.PositiveIntegerField(default=0)
    vfs_capacity = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["iommu_active"]),
            models.Index(fields=["cpu_vendor"]),
            # The host list's "most VFs first" sort (ties by name), paged without sorting 10k rows.
            models.Index(fields=["-vfs_configured", "name"], name="host_vfs_desc_name"),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("hosts:detail", args=[self.pk])

    @classmethod
    def refresh_nic_figures(cls, host_ids) -> None:
        """Recompute sriov_nics / vfs_configured / vfs_capacity of these hosts from their NICs."""
        sriov = Nic.objects.filter(host=models.OuterRef("pk"), present=True, sriov_totalvfs__gt=0).order_by()

        def figure(aggregate):
            per_host = sriov.values("host").annotate(figure=aggregate).values("figure")
            return Coalesce(Subquery(per_host, output_field=models.IntegerField()), Value(0))

        cls.objects.filter(pk__in=list(host_ids)).update(
            sriov_nics=figure(Count("pk")),
            vfs_configured=figure(Sum(Coalesce("sriov_numvfs", Value(0)))),
            vfs_capacity=figure(Sum("sriov_totalvfs")),
        )

    @property
    def host_key_trusted(self) -> bool:
        return bool(self.host_key) and self.status != self.Status.HOST_KEY_MISMATCH


class Nic(models.Model):
    """A network interface with a PCI device: a physical function, SR-IOV capable or not.

    Keyed by PCI address, not by name: names change (udev renames), the slot does not.
    """

    host = models.ForeignKey(Hypervisor, on_delete=models.CASCADE, related_name="nics")
    name = models.CharField(max_length=15)
    pci_address = models.CharField(max_length=12)
    vendor_id = models.CharField(max_length=4, blank=True)
    device_id = models.CharField(max_length=4, blank=True)
    vendor_name = models.CharField(max_length=100, blank=True)
    device_name = models.CharField(max_length=200, blank=True)
    driver = models.CharField(max_length=50, blank=True, db_index=True)
    driver_version = models.CharField(max_length=100, blank=True)
    firmware = models.CharField(max_length=100, blank=True)
    mac = models.CharField(max_length=17, blank=True)
    operstate = models.CharField(max_length=20, blank=True)
    speed = models.IntegerField(null=True, blank=True)
    mtu = models.IntegerField(null=True, blank=True)
    sriov_totalvfs = models.IntegerField(null=True, blank=True)
    sriov_numvfs = models.IntegerField(null=True, blank=True)
    persisted_numvfs = models.IntegerField(null=True, blank=True)
    persisted = models.BooleanField(default=False)
    # Another boot source (udev, NetworkManager, netplan...) sets a different count than the
    # persisted one: the count after a reboot depends on which runs last.
    persisted_conflict = models.BooleanField(default=False)
    # How the host holds the PF: "netdev" (its network driver), "vfio" / "pci-stub" (handed to a
    # guest or DPDK), "no_driver", "other_driver". A PF without a network interface has no name.
    binding_state = models.CharField(max_length=20, blank=True)
    not_capable_reason = models.TextField(blank=True)
    max_vfs_form = models.CharField(max_length=10, blank=True)  # kernels < 3.8: "single" | "array"
    device_busy = models.BooleanField(default=False)
    # {master, stacked, addresses, addresses_known, default_route, management,
    #  link_drops_on_vf_change, link_drop_seconds}; None without a network interface.
    link = models.JSONField(null=True, blank=True)
    other_config = models.JSONField(default=list, blank=True)
    # -- per-PF facts for configuring its VFs --
    numa_node = models.IntegerField(null=True, blank=True)  # device/numa_node; None when -1 or missing
    local_cpulist = models.CharField(max_length=200, blank=True)  # device/local_cpulist ("0-15,32-47")
    persisted_mtu = models.IntegerField(null=True, blank=True)  # the MTU the console's persistence sets
    sriov_drivers_autoprobe = models.IntegerField(null=True, blank=True)
    vf_settings_known = models.BooleanField(null=True)  # `ip -j -d link show dev <pf>` was read
    present = models.BooleanField(default=True, db_index=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    gone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host__name", "pci_address"]
        constraints = [models.UniqueConstraint(fields=["host", "pci_address"], name="nic_unique_pci_per_host")]
        indexes = [
            # The driver filter's choices (distinct drivers, an index-only scan) and its EXISTS.
            models.Index(fields=["driver", "host"], condition=models.Q(present=True), name="nic_present_driver_host"),
        ]

    def __str__(self):
        return f"{self.host.name}/{self.label}"

    def get_absolute_url(self):
        return reverse("hosts:nic", args=[self.pk])

    @property
    def label(self) -> str:
        """The interface name, or the PCI address of a PF that has no network interface."""
        return self.name or self.pci_address

    @property
    def sriov_capable(self) -> bool:
        return self.sriov_totalvfs is not None

    @property
    def vendor_device(self) -> str:
        return f"{self.vendor_id}:{self.device_id}"

    @property
    def seen_at(self):
        """When discovery last saw it: a present NIC is seen by every successful discovery of its
        host (its row is written only when something about it changes)."""
        return self.host.facts_refreshed_at if self.present else self.last_seen_at


class VirtualFunction(models.Model):
    nic = models.ForeignKey(Nic, on_delete=models.CASCADE, related_name="vfs")
    index = models.PositiveIntegerField()
    pci_address = models.CharField(max_length=12)
    netdev = models.CharField(max_length=15, blank=True)
    mac = models.CharField(max_length=17, blank=True)
    driver = models.CharField(max_length=50, blank=True)
    guest = models.CharField(max_length=200, blank=True)
    # How each guest holds it: "vm1: hostdev", "vm2: macvtap eno49v3 (passthrough)".
    used_via = models.CharField(max_length=300, blank=True)
    # -- what the PF assigns to the VF (`ip -j -d link show dev <pf>`, vfinfo_list); None: not reported --
    admin_mac = models.CharField(max_length=17, blank=True)
    vlan = models.IntegerField(null=True, blank=True)
    qos = models.IntegerField(null=True, blank=True)
    spoofchk = models.BooleanField(null=True)
    trust = models.BooleanField(null=True)
    link_state = models.CharField(max_length=10, blank=True)  # auto, enable, disable
    max_tx_rate = models.IntegerField(null=True, blank=True)  # Mbit/s, 0 = no limit
    min_tx_rate = models.IntegerField(null=True, blank=True)
    driver_override = models.CharField(max_length=50, blank=True)
    persisted_settings = models.JSONField(null=True, blank=True)  # the console's persisted vf_config settings
    persisted_driver = models.CharField(max_length=50, blank=True)  # the console's persisted binding
    present = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    gone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["nic", "index"]
        constraints = [models.UniqueConstraint(fields=["nic", "index"], name="vf_unique_index_per_nic")]

    def __str__(self):
        return self.netdev or f"{self.nic.label} VF {self.index}"

    @property
    def seen_at(self):
        """When discovery last saw it (see Nic.seen_at)."""
        return self.nic.seen_at if self.present else self.last_seen_at


class LibvirtNetwork(models.Model):
    """A libvirt network of a host (`virsh net-list --all`), as the last discovery saw it. A VF pool
    is a hostdev/passthrough/macvtap network over PFs; `managed`: the console defined it. Rows of
    networks the host no longer reports are deleted (the audit trail keeps their history)."""

    host = models.ForeignKey(Hypervisor, on_delete=models.CASCADE, related_name="libvirt_networks")
    name = models.CharField(max_length=100)
    active = models.BooleanField(null=True)
    autostart = models.BooleanField(null=True)
    persistent = models.BooleanField(null=True)
    mode = models.CharField(max_length=20, blank=True)  # forward mode: hostdev, passthrough, nat...
    vf_pool = models.BooleanField(default=False)
    managed = models.BooleanField(default=False)
    pfs = models.JSONField(default=list, blank=True)  # PF interface names
    vf_pci = models.JSONField(default=list, blank=True)  # the VFs its pool hands out
    in_use_pci = models.JSONField(null=True, blank=True)
    connections = models.IntegerField(null=True, blank=True)
    guests = models.JSONField(default=list, blank=True)  # running and autostart guests using it

    class Meta:
        ordering = ["host", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="libvirt_network_unique_name")]

    def __str__(self):
        return f"{self.host_id}/{self.name}"


class Intent(models.Model):
    """What a change applied to a host and the console wants to stay so; drift is what discovery
    observes against it. One row per (host, operation, subject): the operation owns `value`
    (changes/operations/), `summary` is its words for people ("4 VFs", "intel_iommu=on iommu=pt")."""

    host = models.ForeignKey(Hypervisor, on_delete=models.CASCADE, related_name="intents")
    operation = models.CharField(max_length=50)
    # What on the host: "" for the host as a whole, a PF's PCI address, "<pci>#<first>-<last>"...
    subject = models.CharField(max_length=100, blank=True)
    value = models.JSONField()
    summary = models.CharField(max_length=300)
    change_id = models.PositiveBigIntegerField(null=True, blank=True)
    applied_at = models.DateTimeField()

    class Meta:
        ordering = ["host", "operation", "subject"]
        constraints = [
            models.UniqueConstraint(fields=["host", "operation", "subject"], name="intent_unique_subject")
        ]

    def __str__(self):
        return f"{self.operation} {self.subject or self.host_id}: {self.summary}"


# NIC figures on the host row: discovery writes them with its bulk writes; a NIC saved or deleted
# on its own (admin, executor, fixtures) refreshes its host's figures here.
FIGURE_FIELDS = {"present", "sriov_totalvfs", "sriov_numvfs", "host", "host_id"}


@receiver(post_save, sender=Nic, dispatch_uid="hosts.nic_figures.save")
def _nic_saved(sender, instance, update_fields=None, raw=False, **kwargs):
    if not raw and (update_fields is None or FIGURE_FIELDS & set(update_fields)):
        Hypervisor.refresh_nic_figures([instance.host_id])


@receiver(post_delete, sender=Nic, dispatch_uid="hosts.nic_figures.delete")
def _nic_deleted(sender, instance, origin=None, **kwargs):
    if isinstance(origin, Hypervisor) or getattr(origin, "model", None) is Hypervisor:
        return  # the host goes with its NICs
    Hypervisor.refresh_nic_figures([instance.host_id])
