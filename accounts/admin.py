from django.contrib import admin

from .models import ExternalIdentity


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "source", "issuer", "external_name", "subject", "last_login_at")
    list_filter = ("source",)
    search_fields = ("user__username", "external_name", "subject", "directory_id")
    readonly_fields = ("source", "issuer", "subject", "directory_id", "groups", "created_at", "last_login_at")
