"""The change wizard's form: what and why, targets, rollout policy, and each operation's own form.

The form only shapes input; validation of targets/operations/policy is the service's
(`services.clean_input`), whose errors are mapped back onto the fields here.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q

from hosts.models import Hypervisor

from . import operations

MAX_PICKED = 1000  # hosts a change's picker holds (a filter covers more)
PICKER_RESULTS = 20
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
class ChangeForm(forms.Form):
    """The change: what and why, targets, policy; plus one section per registered operation, each
    with `form_rows` copies of that operation's own form (prefixed ``<op>-<row>``)."""

    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"placeholder": "VFs for rack 12"}))
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="Required: why this change is needed (shown to approvers and in the audit).",
    )
    hosts = HostChoiceField(queryset=Hypervisor.objects.order_by("name"), required=False)
    # Only finds hosts to pick (templates/changes/_host_picker.html); never part of the change.
    picker_q = forms.CharField(
        max_length=100, required=False, label="Find hosts",
        widget=forms.TextInput(attrs={"placeholder": "name, address or label", "autocomplete": "off"}),
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

    POLICY_FIELDS = ("parallelism", "canary_count", "max_failures", "not_before", "not_after", "allow_guest_impact")

    def __init__(self, data=None, *args, operation_initial=None, **kwargs):
        super().__init__(data, *args, **kwargs)
        initial = operation_initial or {}
        self.sections = []
        for operation in operations.all_operations():
            if operation.form_class is None:
                continue
            rows = [
                operation.form_class(data, prefix=f"{operation.name}-{row}",
                                     initial=initial.get((operation.name, row)))
                for row in range(operation.form_rows)
            ]
            if len(rows) > 1:  # the table shows labels once, in its head: each input still has one
                for number, row in enumerate(rows, start=1):
                    for field in row.fields.values():
                        field.widget.attrs["aria-label"] = f"{field.label} ({number})"
            self.sections.append({"operation": operation, "forms": rows})

    def picked_ids(self) -> list[int]:
        given = self.data.getlist("hosts") if self.is_bound else self.initial.get("hosts") or []
        return sorted({int(i) for i in given if is_db_id(i)})[:MAX_PICKED]

    def picker(self) -> dict:
        """The host picker: the hosts picked, and up to PICKER_RESULTS others matching the search."""
        picked_ids = self.picked_ids()
        picked = list(Hypervisor.objects.filter(pk__in=picked_ids).order_by("name").only("name", "address"))
        query = (self.data.get("picker_q") if self.is_bound else "") or ""
        query = query.strip()[:100]
        results = []
        if query:
            found = Hypervisor.objects.filter(
                Q(name__icontains=query) | Q(address__icontains=query) | Q(labels__name=query)
            ).exclude(pk__in=picked_ids).distinct().order_by("name").only("name", "address")
            results = list(found[:PICKER_RESULTS])
        return {"picked": picked, "results": results, "query": query}

    def policy_fields(self):
        return [self[name] for name in self.POLICY_FIELDS]

    def is_valid(self) -> bool:
        valid = super().is_valid()
        return all([form.is_valid() for section in self.sections for form in section["forms"]]) and valid

    def operations_data(self) -> list[dict]:
        """The operations filled in, in execution (phase) order, so numbers follow what runs first."""
        found = []
        for section in self.sections:
            operation = section["operation"]
            for form in section["forms"]:
                op = operation.from_form(form.cleaned_data)
                if op is not None:
                    found.append((operation.phase, op))
        return [op for _phase, op in sorted(found, key=lambda pair: pair[0])]

    def service_data(self) -> dict:
        data = self.cleaned_data
        targets = {}
        if data.get("hosts"):
            targets["host_ids"] = sorted(h.pk for h in data["hosts"])
        if (data.get("filter") or "").strip():
            targets["filter"] = data["filter"].strip()
        return {
            "title": data.get("title", ""),
            "reason": data.get("reason", ""),
            "targets": targets,
            "operations": self.operations_data(),
            **{name: data.get(name) for name in self.POLICY_FIELDS},
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
        for name, count in sorted(kinds.items(), key=lambda pair: str(pair[0])):
            if not operations.known(name) or operations.get(name).form_class is None:
                problems.append(f"the form does not show {name} operations")
                continue
            rows = operations.get(name).form_rows
            if count > rows:
                problems.append(f"it has {count} {name} operations and the form holds {rows}")
        return "; ".join(problems)

    @classmethod
    def for_change(cls, change) -> ChangeForm:
        initial = {
            "title": change.title,
            "reason": change.reason,
            "hosts": change.targets.get("host_ids", []),
            "filter": change.targets.get("filter", ""),
            **{name: getattr(change, name) for name in cls.POLICY_FIELDS},
        }
        rows: dict[str, int] = {}
        per_operation = {}
        for op in change.operations:
            row = rows.get(op["op"], 0)
            rows[op["op"]] = row + 1
            per_operation[(op["op"], row)] = operations.get(op["op"]).to_form(op)
        return cls(initial=initial, operation_initial=per_operation)


class VoteForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000)
    plan_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)
    # What the voter saw (changes.approvals.approval_hash): plan, policy, title, reason, submission.
    approval_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
