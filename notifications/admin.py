from django.contrib import admin

from .models import Delivery, Subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "approval_needed", "change_decided", "my_rollouts", "all_rollouts", "host_alerts")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "channel", "target", "topic", "state", "attempts", "created_at")
    list_filter = ("channel", "state", "topic")
    readonly_fields = [f.name for f in Delivery._meta.fields]
