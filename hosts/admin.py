"""Django admin for superusers: a read-only view of the inventory.

Every change to hosts, credentials and host keys must be audited, so edits happen on the console's
own pages (hosts.services, hosts.credentials, hosts.hostkeys), never here. Credentials show only
their public half (the private key is never displayed).
"""

from django.contrib import admin

from .models import Credential, Hypervisor, Intent, Label, LibvirtNetwork, Nic, VirtualFunction

FACT_FIELDS = (
    "status",
    "status_reason",
    "last_contact_at",
    "hostname",
    "machine_id",
    "boot_id",
    "kernel",
    "os_id",
    "os_version",
    "os_name",
    "cpu_vendor",
    "cmdline",
    "grub_cmdline_linux",
    "grub_cmdline_default",
    "grub_file",
    "grub_tool",
    "iommu_active",
    "running_guests",
    "facts_refreshed_at",
    "last_discovery_at",
    "last_discovery_ok",
    "last_discovery_message",
    "discovery_requested_at",
    "drifted",
    "drift_reasons",
)
KEY_FIELDS = (
    "host_key",
    "host_key_fingerprint",
    "host_key_first_seen",
    "host_key_accepted_at",
    "host_key_accepted_by",
    "pending_host_key",
    "pending_host_key_fingerprint",
    "pending_host_key_seen_at",
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class NicInline(ReadOnlyInline):
    model = Nic
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "pci_address", "driver", "sriov_totalvfs", "sriov_numvfs", "present")
    readonly_fields = ("name", "pci_address", "driver", "sriov_totalvfs", "sriov_numvfs", "present")


class IntentInline(ReadOnlyInline):
    model = Intent
    extra = 0
    can_delete = False
    fields = ("operation", "subject", "summary", "change_id", "applied_at")
    readonly_fields = fields


class LibvirtNetworkInline(ReadOnlyInline):
    model = LibvirtNetwork
    extra = 0
    can_delete = False
    fields = ("name", "mode", "active", "autostart", "vf_pool", "managed", "pfs", "guests")
    readonly_fields = fields


@admin.register(Hypervisor)
class HypervisorAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "address",
        "port",
        "status",
        "kernel",
        "iommu_active",
        "drifted",
        "facts_refreshed_at",
    )
    list_filter = ("status", "drifted", "iommu_active", "cpu_vendor", "labels")
    search_fields = ("name", "address", "hostname")
    list_select_related = ("credential",)
    filter_horizontal = ("labels",)
    readonly_fields = FACT_FIELDS + KEY_FIELDS
    fieldsets = (
        (None, {"fields": ("name", "address", "port", "username", "credential", "labels", "description")}),
        ("Host key", {"fields": KEY_FIELDS, "classes": ("collapse",)}),
        ("Observed", {"fields": FACT_FIELDS, "classes": ("collapse",)}),
    )
    inlines = [NicInline, LibvirtNetworkInline, IntentInline]


class VirtualFunctionInline(ReadOnlyInline):
    model = VirtualFunction
    extra = 0
    can_delete = False
    fields = ("index", "pci_address", "netdev", "mac", "driver", "guest", "admin_mac", "vlan", "trust", "spoofchk",
              "present")
    readonly_fields = fields



@admin.register(Nic)
class NicAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "pci_address",
        "driver",
        "sriov_totalvfs",
        "sriov_numvfs",
        "present",
    )
    list_filter = ("driver", "present", "persisted")
    search_fields = ("host__name", "name", "pci_address", "mac")
    list_select_related = ("host",)
    readonly_fields = (
        "host",
        "name",
        "pci_address",
        "vendor_id",
        "device_id",
        "vendor_name",
        "device_name",
        "driver",
        "driver_version",
        "firmware",
        "mac",
        "operstate",
        "speed",
        "mtu",
        "sriov_totalvfs",
        "sriov_numvfs",
        "persisted_numvfs",
        "persisted",
        "present",
        "first_seen_at",
        "last_seen_at",
        "gone_at",
    )
    inlines = [VirtualFunctionInline]


@admin.register(Credential)
class CredentialAdmin(ReadOnlyAdmin):
    list_display = ("name", "username", "fingerprint", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("public_key", "fingerprint", "created_at", "updated_at")
    fields = ("name", "username", "public_key", "fingerprint", "created_at", "updated_at")


@admin.register(Label)
class LabelAdmin(ReadOnlyAdmin):
    search_fields = ("name",)
