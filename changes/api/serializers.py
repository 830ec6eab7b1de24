"""Changes in the API: read shapes, and input shapes that only check types — changes.services and
changes.approvals validate the meaning (operations: each operation's own `validate`)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from changes.models import Approval, ChangeRequest, HostRun, PlanItem, Rollout, Step

TEXT_MAX = 100_000


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


