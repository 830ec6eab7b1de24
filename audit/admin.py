"""Django admin: audit history is read-only (no add, change or delete, every field read-only)."""

from django.contrib import admin

from .models import AuditEvent, VerifyRun


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def get_actions(self, request):
        return {}


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "actor_name", "action", "host_name", "change_id", "object_repr")
    list_filter = ("action",)
    search_fields = ("object_repr", "actor_name", "host_name")
    show_full_result_count = False  # no COUNT(*) over a million rows
    date_hierarchy = None


@admin.register(VerifyRun)
class VerifyRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "finished_at", "ok", "checked", "last_id", "broken_id")
