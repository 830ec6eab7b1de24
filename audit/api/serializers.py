"""The audit trail in the API (read only)."""

from rest_framework import serializers

from audit.models import AuditEvent

TEXT_MAX = 100_000


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


