from django import forms

from .models import Subscription, Topic, Webhook


class SubscriptionForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["approval_needed", "change_decided", "my_rollouts", "all_rollouts", "host_alerts"]
        labels = {
            "approval_needed": "A change waits for my approval (approvers)",
            "change_decided": "My change was approved, rejected or expired",
            "my_rollouts": "The rollout of my change halted, failed, partially failed or succeeded",
            "all_rollouts": "Every change's rollout outcome (not only mine)",
            "host_alerts": "A host's SSH key does not match, or a host drifted (admins)",
        }


class WebhookForm(forms.Form):
    name = forms.CharField(max_length=100)
    url = forms.CharField(
        label="URL", max_length=2000, required=False,
        widget=forms.URLInput(attrs={"autocomplete": "off", "placeholder": "https://hooks.slack.com/services/…"}),
        help_text="Stored encrypted; shown afterwards only as scheme and host. When editing, leave it "
        "empty to keep the current one.",
    )
    payload_format = forms.ChoiceField(label="Body", choices=Webhook.Format.choices)
    topics = forms.MultipleChoiceField(label="Events", choices=Topic.choices, widget=forms.CheckboxSelectMultiple)
    enabled = forms.BooleanField(required=False, initial=True)
    secret = forms.CharField(
        required=False, max_length=200,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="HMAC-SHA256 key for the signature header. Leave empty and the console makes one "
        "(shown once).",
    )
