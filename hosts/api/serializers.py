"""Inventory in the API: read shapes, and input shapes that only check types — hosts.services,
hosts.credentials and hosts.hostkeys validate the meaning, exactly as for the web forms."""

from rest_framework import serializers

from hosts.models import Credential, Hypervisor, Intent, LibvirtNetwork, Nic, VirtualFunction

TEXT_MAX = 100_000


# ---------------------------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------------------------


class IntentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Intent
        fields = ["operation", "subject", "value", "summary", "change_id", "applied_at"]
        read_only_fields = fields


class HostSerializer(serializers.ModelSerializer):
    credential = serializers.SlugRelatedField(slug_field="name", read_only=True)
    labels = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    host_key_accepted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    sriov_nics = serializers.IntegerField(read_only=True, required=False)
    vfs_configured = serializers.IntegerField(read_only=True, required=False)
    vfs_capacity = serializers.IntegerField(read_only=True, required=False)
    intents = IntentSerializer(many=True, read_only=True)
    url = serializers.HyperlinkedIdentityField(view_name="api:hypervisor-detail")

    class Meta:
        model = Hypervisor
        fields = [
            "id",
            "url",
            "name",
            "address",
            "port",
            "username",
            "credential",
            "labels",
            "description",
            "status",
            "status_reason",
            "last_contact_at",
            "host_key_fingerprint",
            "host_key_first_seen",
            "host_key_accepted_at",
            "host_key_accepted_by",
            "pending_host_key_fingerprint",
            "pending_host_key_seen_at",
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
            "iommu_firmware",
            "boot_config",
            "running_guests",
            "defined_guests",
            "other_vf_config",
            "facts_refreshed_at",
            "last_discovery_at",
            "last_discovery_ok",
            "last_discovery_message",
            "discovery_requested_at",
            "intents",
            "drifted",
            "drift_reasons",
            "sriov_nics",
            "vfs_configured",
            "vfs_capacity",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class LabelsField(serializers.ListField):
    child = serializers.CharField(max_length=63, allow_blank=False)
    max_length = 100


class HostInputSerializer(serializers.Serializer):
    """Registration fields of a hypervisor; everything else is observed by discovery."""

    name = serializers.CharField(max_length=63)
    address = serializers.CharField(max_length=253)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False)
    username = serializers.CharField(max_length=32, required=False, allow_blank=True)
    credential = serializers.CharField(
        max_length=100,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="A credential's name or id; null for none.",
    )
    labels = LabelsField(required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)


class HostImportSerializer(serializers.Serializer):
    FORMATS = ("csv", "ini", "yaml")

    format = serializers.ChoiceField(
        choices=FORMATS,
        required=False,
        help_text="csv | ini | yaml (Ansible inventories); guessed when left out.",
    )
    text = serializers.CharField(
        max_length=5_000_000, required=False, trim_whitespace=False, help_text="The file's content."
    )
    rows = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        max_length=100_000,
        help_text="Instead of text: host objects with the fields of a create.",
    )
    default_credential = serializers.CharField(
        max_length=100, required=False, allow_blank=True, allow_null=True
    )
    update_existing = serializers.BooleanField(default=False)
    dry_run = serializers.BooleanField(default=False)

    def validate(self, attrs):
        if ("text" in attrs) == ("rows" in attrs):
            raise serializers.ValidationError("Give either text (a file's content) or rows, not both.")
        return attrs


class ImportResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    created = serializers.ListField(child=serializers.CharField())
    updated = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())
    summary = serializers.CharField()


class DiscoveryRequestSerializer(serializers.Serializer):
    host = serializers.IntegerField(required=False)
    discovery_requested_at = serializers.DateTimeField(required=False)
    detail = serializers.CharField()


class HostKeySerializer(serializers.ModelSerializer):
    host_key_accepted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    trusted = serializers.SerializerMethodField()

    class Meta:
        model = Hypervisor
        fields = [
            "id",
            "name",
            "status",
            "trusted",
            "host_key",
            "host_key_fingerprint",
            "host_key_first_seen",
            "host_key_accepted_at",
            "host_key_accepted_by",
            "pending_host_key",
            "pending_host_key_fingerprint",
            "pending_host_key_seen_at",
        ]
        read_only_fields = fields

    def get_trusted(self, host) -> bool:
        from hosts.hostkeys import is_trusted

        return is_trusted(host)


class AcceptHostKeySerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why this key is the host's (required).")
    fingerprint = serializers.CharField(
        max_length=100,
        required=False,
        help_text="The pending fingerprint you compared; refused if the pending key changed since.",
    )


class VfSerializer(serializers.ModelSerializer):
    nic_name = serializers.CharField(source="nic.name", read_only=True)
    host = serializers.IntegerField(source="nic.host_id", read_only=True)
    last_seen_at = serializers.DateTimeField(source="seen_at", read_only=True, allow_null=True)

    class Meta:
        model = VirtualFunction
        fields = [
            "id",
            "nic",
            "nic_name",
            "host",
            "index",
            "pci_address",
            "netdev",
            "mac",
            "driver",
            "guest",
            "used_via",
            "admin_mac",
            "vlan",
            "qos",
            "spoofchk",
            "trust",
            "link_state",
            "max_tx_rate",
            "min_tx_rate",
            "driver_override",
            "persisted_settings",
            "persisted_driver",
            "present",
            "last_seen_at",
            "gone_at",
        ]
        read_only_fields = fields


class LibvirtNetworkSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = LibvirtNetwork
        fields = ["id", "host", "host_name", "name", "active", "autostart", "persistent", "mode", "vf_pool", "managed",
                  "pfs", "vf_pci", "in_use_pci", "connections", "guests"]
        read_only_fields = fields


class NicSerializer(serializers.ModelSerializer):
    """A PF without a network interface (driver unbound, vfio-pci) has an empty name; its
    binding_state says how the host holds it."""

    host_name = serializers.CharField(source="host.name", read_only=True)
    vfs_free = serializers.IntegerField(read_only=True, help_text="Present VFs no guest uses")
    vfs_in_use = serializers.IntegerField(read_only=True, help_text="Present VFs a guest uses")
    sriov_capable = serializers.BooleanField(read_only=True)
    last_seen_at = serializers.DateTimeField(source="seen_at", read_only=True, allow_null=True)

    class Meta:
        model = Nic
        fields = [
            "id",
            "host",
            "host_name",
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
            "sriov_capable",
            "sriov_totalvfs",
            "sriov_numvfs",
            "persisted_numvfs",
            "persisted",
            "persisted_conflict",
            "binding_state",
            "not_capable_reason",
            "max_vfs_form",
            "device_busy",
            "link",
            "other_config",
            "vfs_free",
            "vfs_in_use",
            "numa_node",
            "local_cpulist",
            "persisted_mtu",
            "sriov_drivers_autoprobe",
            "vf_settings_known",
            "present",
            "first_seen_at",
            "last_seen_at",
            "gone_at",
        ]
        read_only_fields = fields


class NicDetailSerializer(NicSerializer):
    vfs = VfSerializer(many=True, read_only=True)

    class Meta(NicSerializer.Meta):
        fields = [*NicSerializer.Meta.fields, "vfs"]
        read_only_fields = fields


class CredentialSerializer(serializers.ModelSerializer):
    """Never carries the private key: only the public key and its fingerprint."""

    host_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Credential
        fields = [
            "id",
            "name",
            "username",
            "public_key",
            "fingerprint",
            "host_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CredentialCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    username = serializers.CharField(max_length=32, default="root")
    private_key = serializers.CharField(
        max_length=16 * 1024,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="OpenSSH or PEM private key, unencrypted. Never returned.",
    )


class CredentialUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    username = serializers.CharField(max_length=32, required=False)


class CredentialRotateSerializer(serializers.Serializer):
    private_key = serializers.CharField(
        max_length=16 * 1024,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="The new private key. Never returned.",
    )


