"""Read-only admin views of changes (all changes go through changes/services.py, never the admin)."""

from django.contrib import admin

from .models import Approval, ChangeRequest, HostRun, PlanItem, Rollout, Step


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ChangeRequest)
class ChangeRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "title", "state", "requested_by", "created_at")
    list_filter = ("state",)
    search_fields = ("title", "reason")


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ("change", "user", "decision", "created_at")


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin):
    list_display = ("change", "attempt", "state", "started_at", "finished_at")


@admin.register(HostRun)
class HostRunAdmin(ReadOnlyAdmin):
    list_display = ("rollout", "host", "state", "heartbeat_at", "message")
    list_filter = ("state",)


admin.site.register(PlanItem, ReadOnlyAdmin)
admin.site.register(Step, ReadOnlyAdmin)
