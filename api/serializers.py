"""Serializers: read shapes of the resources, and input shapes that only check types — the
services (hosts.services, hosts.credentials, changes.services, changes.approvals) validate the
meaning and raise per-field errors, exactly as for the web forms."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.models import AuditEvent
from changes.models import Approval, ChangeRequest, HostRun, PlanItem, Rollout, Step
from hosts.models import Credential, Hypervisor, Nic, VirtualFunction

from .models import ApiToken

TEXT_MAX = 100_000


# ---------------------------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------------------------


class HostSerializer(serializers.ModelSerializer):
    credential = serializers.SlugRelatedField(slug_field="name", read_only=True)
    labels = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    host_key_accepted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    sriov_nics = serializers.IntegerField(read_only=True, required=False)
    vfs_configured = serializers.IntegerField(read_only=True, required=False)
    vfs_capacity = serializers.IntegerField(read_only=True, required=False)
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
            "running_guests",
            "facts_refreshed_at",
            "last_discovery_at",
            "last_discovery_ok",
            "last_discovery_message",
            "discovery_requested_at",
            "managed_kernel_args",
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
            "present",
            "last_seen_at",
            "gone_at",
        ]
        read_only_fields = fields


class NicSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)
    sriov_capable = serializers.BooleanField(read_only=True)
    drifted = serializers.BooleanField(read_only=True)
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
            "managed_numvfs",
            "persisted_numvfs",
            "persisted",
            "drifted",
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


# ---------------------------------------------------------------------------------------------
# Changes
# ---------------------------------------------------------------------------------------------


class PolicySerializer(serializers.Serializer):
    parallelism = serializers.IntegerField(min_value=1, max_value=10000, default=1)
    canary_count = serializers.IntegerField(min_value=0, max_value=10000, default=0)
    max_failures = serializers.IntegerField(min_value=0, max_value=10000, default=1)
    not_before = serializers.DateTimeField(required=False, allow_null=True, default=None)
    not_after = serializers.DateTimeField(required=False, allow_null=True, default=None)
    allow_guest_impact = serializers.BooleanField(default=False)


class TargetsSerializer(serializers.Serializer):
    host_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**62), required=False, max_length=5000
    )
    filter = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, help_text="e.g. 'label=rack-12 and driver=igb'"
    )


class ChangeInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    reason = serializers.CharField(max_length=TEXT_MAX)
    targets = TargetsSerializer()
    operations = serializers.ListField(
        child=serializers.DictField(),
        max_length=50,
        help_text='e.g. [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4, '
        '"persist": true}]',
    )
    policy = PolicySerializer(required=False)

    def service_data(self) -> dict:
        data = dict(self.validated_data)
        policy = data.pop("policy", None) or PolicySerializer().to_internal_value({})
        targets = data["targets"]
        data["targets"] = {k: v for k, v in targets.items() if v not in (None, "", [])}
        data.update(policy)
        return data


class PlanItemSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = PlanItem
        fields = [
            "id",
            "order",
            "host",
            "host_name",
            "before",
            "after",
            "actions",
            "errors",
            "warnings",
            "item_hash",
        ]
        read_only_fields = fields


class ApprovalSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Approval
        fields = ["id", "user", "decision", "comment", "plan_hash", "submission", "created_at"]
        read_only_fields = fields


class RolloutSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Rollout
        fields = ["id", "attempt", "state", "message", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class ChangeSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    policy = serializers.SerializerMethodField()
    url = serializers.HyperlinkedIdentityField(view_name="api:change-detail")
    host_count = serializers.IntegerField(read_only=True, required=False, help_text="Hosts in the plan.")
    approvals_in = serializers.IntegerField(
        read_only=True, required=False, help_text="Distinct approvals on the current submission."
    )
    approval_hash = serializers.SerializerMethodField(
        help_text="What a vote binds to: the plan hash, policy, required approvals, title, reason, targets, "
        "operations and submission. Send it back with approve/reject."
    )

    class Meta:
        model = ChangeRequest
        fields = [
            "id",
            "url",
            "title",
            "reason",
            "requested_by",
            "state",
            "state_message",
            "targets",
            "operations",
            "policy",
            "required_approvals",
            "approvals_in",
            "host_count",
            "plan_hash",
            "submission",
            "approval_hash",
            "plan_computed_at",
            "plan_blocked",
            "created_at",
            "updated_at",
            "submitted_at",
            "decided_at",
        ]
        read_only_fields = fields

    def get_approval_hash(self, change) -> str:
        from changes.approvals import approval_hash

        return approval_hash(change)

    @extend_schema_field(PolicySerializer)
    def get_policy(self, change) -> dict:
        return PolicySerializer(
            {
                "parallelism": change.parallelism,
                "canary_count": change.canary_count,
                "max_failures": change.max_failures,
                "not_before": change.not_before,
                "not_after": change.not_after,
                "allow_guest_impact": change.allow_guest_impact,
            }
        ).data


class ChangeDetailSerializer(ChangeSerializer):
    plan = PlanItemSerializer(source="plan_items", many=True, read_only=True)
    approvals = ApprovalSerializer(many=True, read_only=True)
    rollouts = RolloutSummarySerializer(many=True, read_only=True)

    class Meta(ChangeSerializer.Meta):
        fields = [*ChangeSerializer.Meta.fields, "plan", "approvals", "rollouts"]
        read_only_fields = fields


class PlanSerializer(serializers.Serializer):
    change = serializers.IntegerField()
    plan_hash = serializers.CharField()
    plan_computed_at = serializers.DateTimeField(allow_null=True)
    blocked = serializers.BooleanField()
    message = serializers.CharField(allow_blank=True)
    items = PlanItemSerializer(many=True)


class VoteSerializer(serializers.Serializer):
    approval_hash = serializers.CharField(
        max_length=64,
        help_text="The change's approval_hash as you reviewed it (GET the change); a vote binds to it and "
        "is refused (409) when the change was edited or re-submitted since.",
    )
    plan_hash = serializers.CharField(
        max_length=64, required=False, help_text="Optional: the plan hash you reviewed; must match too."
    )
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class RejectSerializer(VoteSerializer):
    comment = serializers.CharField(max_length=2000, help_text="Why (required).")


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = [
            "id",
            "host_run",
            "seq",
            "kind",
            "action_index",
            "operation",
            "description",
            "request",
            "command",
            "stdout",
            "stderr",
            "exit_status",
            "duration",
            "agent_sha256",
            "result",
            "ok",
            "kind_of_result",
            "error_code",
            "message",
            "note",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class HostRunSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)
    change = serializers.IntegerField(source="rollout.change_id", read_only=True)

    class Meta:
        model = HostRun
        fields = [
            "id",
            "rollout",
            "change",
            "host",
            "host_name",
            "plan_item",
            "state",
            "is_canary",
            "order",
            "message",
            "dispatched_at",
            "heartbeat_at",
            "worker",
            "resumed_count",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class HostRunDetailSerializer(HostRunSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta(HostRunSerializer.Meta):
        fields = [*HostRunSerializer.Meta.fields, "steps"]
        read_only_fields = fields


class RolloutSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = Rollout
        fields = [
            "id",
            "change",
            "attempt",
            "parent",
            "state",
            "message",
            "plan_hash",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "cancel_requested_at",
            "halted",
            "counts",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_counts(self, rollout) -> dict:
        counts = {}
        for run in rollout.host_runs.all():  # prefetched by the view
            counts[run.state] = counts.get(run.state, 0) + 1
        return counts


class RolloutDetailSerializer(RolloutSerializer):
    host_runs = HostRunSerializer(many=True, read_only=True)

    class Meta(RolloutSerializer.Meta):
        fields = [*RolloutSerializer.Meta.fields, "host_runs"]
        read_only_fields = fields


# ---------------------------------------------------------------------------------------------
# Audit and tokens
# ---------------------------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.IntegerField(source="actor_id", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
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
        ]
        read_only_fields = fields


class ApiTokenSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "status", "created_at", "last_used_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.SerializerMethodField(help_text="The token. Shown once: store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_token(self, obj) -> str:
        return self.context["token_text"]


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    permissions = serializers.ListField(child=serializers.CharField())
    authenticated_by = serializers.CharField()
