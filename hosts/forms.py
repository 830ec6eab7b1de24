"""Forms of the host pages: add/edit a hypervisor, upload a bulk-import file."""

from django import forms
from django.core.exceptions import ValidationError

from .models import Credential, Hypervisor, label_validator
from .services import label_names

LABEL_RE = label_validator.regex

MAX_IMPORT_BYTES = 1024 * 1024
IMPORT_FORMATS = (
    ("auto", "Detect from the file name"),
    ("csv", "CSV (name,address,port,username,credential,labels)"),
    ("ini", "Ansible inventory (INI)"),
    ("yaml", "Ansible inventory (YAML)"),
)


class HostForm(forms.ModelForm):
    labels_text = forms.CharField(
        label="Labels", required=False, help_text="Separated by spaces or commas, e.g. rack-a12 prod.",
    )

    class Meta:
        model = Hypervisor
        fields = ["name", "address", "port", "username", "credential", "description"]
        help_texts = {
            "address": "DNS name or IP address the workers connect to over SSH.",
            "username": "SSH user; a non-root user needs password-less sudo.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].required = False
        self.fields["username"].help_text += " Empty: the credential's user (else root)."
        self.fields["credential"].queryset = Credential.objects.order_by("name")
        self.fields["credential"].empty_label = "(none yet)"
        if self.instance.pk:
            self.fields["labels_text"].initial = " ".join(label.name for label in self.instance.labels.all())

    def clean_labels_text(self):
        names = label_names(self.cleaned_data.get("labels_text", ""))
        bad = [name for name in names if not LABEL_RE.match(name)]
        if bad:
            raise ValidationError(f"Not a valid label: {', '.join(bad)}. {label_validator.message}")
        return names

    def host_fields(self) -> dict:
        """The cleaned values as plain keyword arguments (for hosts.services)."""
        data = {name: self.cleaned_data[name] for name in self._meta.fields}
        if not data["username"]:
            del data["username"]
        data["labels"] = self.cleaned_data["labels_text"]
        return data


def _credential_field(**kwargs):
    return forms.ModelChoiceField(
        queryset=Credential.objects.order_by("name"), required=False, empty_label="(none)", **kwargs
    )


class ImportUploadForm(forms.Form):
    file = forms.FileField(label="Inventory file", help_text="CSV, Ansible INI or YAML; at most 1 MiB.")
    format = forms.ChoiceField(choices=IMPORT_FORMATS, initial="auto")
    default_credential = _credential_field(
        label="Default credential", help_text="For rows that do not name a credential.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise ValidationError("The file is larger than 1 MiB.")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("The file is not UTF-8 text.") from None
        if not text.strip():
            raise ValidationError("The file is empty.")
        self.cleaned_data["text"] = text
        return upload


class ImportConfirmForm(forms.Form):
    """The confirm step re-sends the file's text; the server parses and validates it again."""

    text = forms.CharField(widget=forms.HiddenInput, strip=False, max_length=MAX_IMPORT_BYTES)
    format = forms.ChoiceField(choices=IMPORT_FORMATS[1:], widget=forms.HiddenInput)
    filename = forms.CharField(widget=forms.HiddenInput, required=False, max_length=255)
    default_credential = _credential_field(widget=forms.HiddenInput)
