"""Forms of the credential and host-key pages (administrators only).

A private key typed or uploaded here is validated (hosts.credentials.parse_private_key) and is
never rendered back: the key widget forgets its value, so a form with an error does not echo the
key into the page.
"""

from django import forms
from django.core.exceptions import ValidationError

from .credentials import MAX_KEY_BYTES, parse_private_key
from .hostkeys import REASON_MAX
from .models import Credential


class SecretTextarea(forms.Textarea):
    """A textarea that never renders its value (like PasswordInput(render_value=False))."""

    def format_value(self, value):
        return None


class PrivateKeyMixin(forms.Form):
    private_key = forms.CharField(
        label="Private key (paste)", required=False, strip=False,
        widget=SecretTextarea(attrs={"rows": 8, "autocomplete": "off", "spellcheck": "false"}),
        help_text="OpenSSH or PEM format, without a passphrase. "
                  "It is encrypted at rest and never shown again.",
    )
    key_file = forms.FileField(label="… or upload the key file", required=False)

    def clean_key_file(self):
        upload = self.cleaned_data.get("key_file")
        if not upload:
            return ""
        if upload.size is not None and upload.size > MAX_KEY_BYTES:
            raise ValidationError("That file is too large to be an SSH private key.")
        data = upload.read(MAX_KEY_BYTES + 1)
        if len(data) > MAX_KEY_BYTES:
            raise ValidationError("That file is too large to be an SSH private key.")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("This is not an SSH private key in OpenSSH or PEM format.") from None

    def clean(self):
        cleaned = super().clean()
        pasted = cleaned.get("private_key") or ""
        uploaded = cleaned.get("key_file") or ""
        if self.errors:
            return cleaned
        if pasted.strip() and uploaded.strip():
            raise ValidationError("Paste the key or upload a file, not both.")
        text = pasted if pasted.strip() else uploaded
        try:
            self.public_key, self.fingerprint = parse_private_key(text)
        except ValidationError as exc:
            self.add_error("private_key" if pasted.strip() or not uploaded else "key_file", exc)
            return cleaned
        cleaned["key_text"] = text
        return cleaned


class CredentialForm(PrivateKeyMixin, forms.ModelForm):
    """Add a credential: name, SSH user name, and the private key."""

    field_order = ["name", "username", "private_key", "key_file"]

    class Meta:
        model = Credential
        fields = ["name", "username"]
        help_texts = {
            "username": "The SSH login user on the hypervisors (root, or a dedicated user with sudo).",
        }


class CredentialEditForm(forms.ModelForm):
    """Rename a credential or change its user name; the key pair stays."""

    class Meta:
        model = Credential
        fields = ["name", "username"]


class KeyPairForm(PrivateKeyMixin):
    """Replace a credential's key pair."""

    confirm = forms.BooleanField(
        label="I have installed the new public key on every host that uses this credential",
        required=True,
    )


class AcceptHostKeyForm(forms.Form):
    fingerprint = forms.CharField(widget=forms.HiddenInput, max_length=100)
    reason = forms.CharField(
        max_length=REASON_MAX, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why this key is genuine (e.g. 'host reinstalled, ticket OPS-123; fingerprint checked "
                  "on the console').",
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Give a reason for accepting this host key.")
        return reason
