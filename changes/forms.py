"""The change wizard's form: targets, up to OP_ROWS set_vfs rows, reason and rollout policy.

The form only shapes input; validation of targets/operations/policy is the service's
(`services.clean_input`), whose errors are mapped back onto the fields here.
"""

from django import forms
from django.core.exceptions import ValidationError

from hosts.models import Hypervisor

from .operations import SELECT_BY

OP_ROWS = 4
MAX_ID_DIGITS = 18  # fits a bigint; longer "ids" are refused before they reach the database


def is_db_id(value) -> bool:
    """An ASCII decimal id of bounded length ("²" and "٣" are digits to str.isdigit, not to us)."""
    text = str(value)
    return 0 < len(text) <= MAX_ID_DIGITS and text.isascii() and text.isdigit()


class HostChoiceField(forms.ModelMultipleChoiceField):
    """Refuses non-ASCII digits and huge integers as a field error (SQLite raises OverflowError on
    an integer beyond 64 bits; PostgreSQL would compare a numeric) instead of a 500."""

    def _check_values(self, value):
        for pk in value:
            if not is_db_id(pk):
                raise ValidationError(
                    self.error_messages["invalid_pk_value"], code="invalid_pk_value", params={"pk": str(pk)[:20]}
                )
        return super()._check_values(value)
SELECT_LABELS = {
    "name": "PF name",
    "pci": "PCI address",
    "driver": "driver",
    "vendor_device": "vendor:device",
}


class ChangeForm(forms.Form):
    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"placeholder": "VFs for rack 12"}))
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="Required: why this change is needed (shown to approvers and in the audit).",
    )
    hosts = HostChoiceField(
        queryset=Hypervisor.objects.order_by("name"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
    )
    filter = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "label=rack-12 and driver=igb"}),
        help_text="Keys: label, name (* wildcard), driver, vendor_device, os, cpu_vendor; "
        "joined with 'and'. Combined with the picked hosts.",
    )
    parallelism = forms.IntegerField(min_value=1, max_value=10000, initial=1)
    canary_count = forms.IntegerField(
        min_value=0, max_value=10000, initial=0, help_text="The first N hosts run first, one at a time."
    )
    max_failures = forms.IntegerField(
        min_value=0,
        max_value=10000,
        initial=1,
        help_text="The rollout halts once this many hosts failed (0 = at the first).",
    )
    not_before = forms.DateTimeField(
        required=False,
        help_text="UTC, e.g. 2026-11-27 22:00",
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
    )
    not_after = forms.DateTimeField(
        required=False, help_text="UTC", widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"})
    )
    allow_guest_impact = forms.BooleanField(
        required=False,
        label="Allow removing VFs that running guests use",
        help_text="Also allows rebooting hosts with running guests (the plan names them).",
    )
    # Issue 7: kernel arguments and reboot (one kernel_args and one reboot operation at most).
    iommu_preset = forms.BooleanField(
        required=False,
        label="Enable IOMMU for SR-IOV",
        help_text="Per host from its CPU vendor: Intel intel_iommu=on iommu=pt, AMD amd_iommu=on iommu=pt.",
    )
    vfio_pci_ids = forms.CharField(
        max_length=200,
        required=False,
        label="vfio-pci.ids",
        widget=forms.TextInput(attrs={"placeholder": "8086:1521, 15b3:1017"}),
        help_text="Optional, with the IOMMU preset: NIC vendor:device ids bound to vfio-pci at boot.",
    )
    kargs_add = forms.CharField(
        max_length=2000,
        required=False,
        label="Add kernel arguments",
        widget=forms.TextInput(attrs={"placeholder": "hugepages=16"}),
        help_text="Space separated; name or name=value, no quotes.",
    )
    kargs_remove = forms.CharField(
        max_length=2000,
        required=False,
        label="Remove kernel arguments",
        widget=forms.TextInput(attrs={"placeholder": "quiet"}),
        help_text="A name removes every value of it (iommu removes iommu=pt); name=value only that one.",
    )
    reboot = forms.ChoiceField(
        choices=[("", "no reboot"), ("if_needed", "if needed"), ("always", "always")],
        required=False,
        label="Reboot",
        help_text="If needed: only hosts whose running kernel lacks the configured arguments, or whose "
        "kernel (< 3.8) needs a reboot for a new VF count. Then wait for the host and verify.",
    )
    reboot_parallelism = forms.IntegerField(
        min_value=1,
        max_value=10000,
        required=False,
        label="Hosts rebooting at once",
        help_text="Default 1: a change with a reboot runs one host at a time unless you raise it here.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for row in range(1, OP_ROWS + 1):
            self.fields[f"op{row}_by"] = forms.ChoiceField(
                choices=[(by, SELECT_LABELS[by]) for by in SELECT_BY],
                required=False,
                label=f"Select by ({row})",
            )
            self.fields[f"op{row}_value"] = forms.CharField(
                max_length=64,
                required=False,
                label="value",
                widget=forms.TextInput(attrs={"placeholder": "eno49"}),
            )
            self.fields[f"op{row}_count"] = forms.IntegerField(
                min_value=0, max_value=4096, required=False, label="VFs"
            )
            self.fields[f"op{row}_persist"] = forms.BooleanField(
                required=False, label="persist", initial=True
            )
            self.fields[f"op{row}_take_over"] = forms.BooleanField(required=False, label="take over")
        if not self.is_bound:
            self.initial.setdefault("op1_persist", True)

    KERNEL_FIELDS = ("iommu_preset", "vfio_pci_ids", "kargs_add", "kargs_remove", "reboot", "reboot_parallelism")

    def kernel_fields(self):
        return [self[name] for name in self.KERNEL_FIELDS]

    def op_rows(self):
        return [
            {key: self[f"op{row}_{key}"] for key in ("by", "value", "count", "persist", "take_over")}
            | {"n": row}
            for row in range(1, OP_ROWS + 1)
        ]

    def clean(self):
        data = super().clean()
        for row in range(1, OP_ROWS + 1):
            value = (data.get(f"op{row}_value") or "").strip()
            if value and data.get(f"op{row}_count") is None:
                self.add_error(f"op{row}_count", "Give the VF count.")
        return data

    def service_data(self) -> dict:
        data = self.cleaned_data
        operations = []
        for row in range(1, OP_ROWS + 1):
            value = (data.get(f"op{row}_value") or "").strip()
            if not value:
                continue
            operations.append(
                {
                    "op": "set_vfs",
                    "select": {"by": data.get(f"op{row}_by") or "name", "value": value},
                    "count": data.get(f"op{row}_count"),
                    "persist": bool(data.get(f"op{row}_persist")),
                    "take_over": bool(data.get(f"op{row}_take_over")),
                }
            )
        targets = {}
        if data.get("hosts"):
            targets["host_ids"] = sorted(h.pk for h in data["hosts"])
        if (data.get("filter") or "").strip():
            targets["filter"] = data["filter"].strip()
        kernel_args = {
            "op": "kernel_args",
            "preset": "iommu" if data.get("iommu_preset") else None,
            "vfio_pci_ids": (data.get("vfio_pci_ids") or "").strip(),
            "add": (data.get("kargs_add") or "").split(),
            "remove": (data.get("kargs_remove") or "").split(),
        }
        if kernel_args["preset"] or kernel_args["vfio_pci_ids"] or kernel_args["add"] or kernel_args["remove"]:
            operations.insert(0, kernel_args)
        if data.get("reboot"):
            operations.append(
                {"op": "reboot", "when": data["reboot"], "parallelism": data.get("reboot_parallelism")}
            )
        return {
            "title": data.get("title", ""),
            "reason": data.get("reason", ""),
            "targets": targets,
            "operations": operations,
            "parallelism": data.get("parallelism"),
            "canary_count": data.get("canary_count"),
            "max_failures": data.get("max_failures"),
            "not_before": data.get("not_before"),
            "not_after": data.get("not_after"),
            "allow_guest_impact": bool(data.get("allow_guest_impact")),
        }

    def add_service_errors(self, exc: ValidationError) -> None:
        mapping = {"targets": "filter", "operations": None}
        for field, messages in exc.message_dict.items():
            name = mapping.get(field, field)
            if name is not None and name not in self.fields:
                name = None
            for message in messages:
                self.add_error(name, message)

    @classmethod
    def cannot_hold(cls, change) -> str:
        """Why the wizard cannot show all of the change's operations ("" when it can): saving it
        would drop the rest."""
        kinds: dict[str, int] = {}
        for op in change.operations:
            kinds[op.get("op")] = kinds.get(op.get("op"), 0) + 1
        problems = []
        if kinds.get("set_vfs", 0) > OP_ROWS:
            problems.append(f"it has {kinds['set_vfs']} VF operations and the form holds {OP_ROWS}")
        for kind in ("kernel_args", "reboot"):
            if kinds.get(kind, 0) > 1:
                problems.append(f"it has {kinds[kind]} {kind} operations and the form holds one")
        other = sorted(str(k) for k in kinds if k not in ("set_vfs", "kernel_args", "reboot"))
        if other:
            problems.append(f"the form does not show {', '.join(other)} operations")
        return "; ".join(problems)

    @classmethod
    def initial_for(cls, change) -> dict:
        initial = {
            "title": change.title,
            "reason": change.reason,
            "hosts": change.targets.get("host_ids", []),
            "filter": change.targets.get("filter", ""),
            "parallelism": change.parallelism,
            "canary_count": change.canary_count,
            "max_failures": change.max_failures,
            "not_before": change.not_before,
            "not_after": change.not_after,
            "allow_guest_impact": change.allow_guest_impact,
        }
        for op in change.operations:
            if op["op"] == "kernel_args":
                initial.update(
                    {
                        "iommu_preset": op.get("preset") == "iommu",
                        "vfio_pci_ids": ", ".join(op.get("vfio_pci_ids") or []),
                        "kargs_add": " ".join(op.get("add") or []),
                        "kargs_remove": " ".join(op.get("remove") or []),
                    }
                )
            elif op["op"] == "reboot":
                initial.update({"reboot": op["when"], "reboot_parallelism": op.get("parallelism")})
        vf_ops = [op for op in change.operations if op["op"] == "set_vfs"]
        for row, op in enumerate(vf_ops[:OP_ROWS], start=1):
            initial.update(
                {
                    f"op{row}_by": op["select"]["by"],
                    f"op{row}_value": op["select"]["value"],
                    f"op{row}_count": op["count"],
                    f"op{row}_persist": op["persist"],
                    f"op{row}_take_over": op.get("take_over", False),
                }
            )
        return initial


class VoteForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000)
    plan_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)
    # What the voter saw (changes.approvals.approval_hash): plan, policy, title, reason, submission.
    approval_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
