"""Change requests, their plans and approvals, and the rollouts that execute them.

State lives here and only here; Celery tasks move it (changes/execution/), every transition
goes through a service with `select_for_update` and an explicit table of allowed transitions
(docs/changes.md).
"""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse


def default_required_approvals():
    return getattr(settings, "CHANGE_APPROVALS_REQUIRED", 1)


class ChangeRequest(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        PARTIALLY_FAILED = "partially_failed", "Partially failed"
        CANCELLED = "cancelled", "Cancelled"

    title = models.CharField(max_length=200)
    reason = models.TextField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="changes"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT, db_index=True)
    state_message = models.TextField(blank=True)

    # {"host_ids": [...], "filter": "label=rack-12 and driver=igb"}; either or both.
    targets = models.JSONField(default=dict)
    # [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4, "persist": true}]
    operations = models.JSONField(default=list)

    # Rollout policy.
    parallelism = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    canary_count = models.PositiveIntegerField(default=0)
    max_failures = models.PositiveIntegerField(default=1)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    allow_guest_impact = models.BooleanField(default=False)

    required_approvals = models.PositiveIntegerField(
        default=default_required_approvals, validators=[MinValueValidator(1)]
    )
    plan_hash = models.CharField(max_length=64, blank=True)
    plan_computed_at = models.DateTimeField(null=True, blank=True)
    plan_blocked = models.BooleanField(default=False)
    # Incremented by every submit: votes bind to one submission (docs/changes.md, four-eyes).
    submission = models.PositiveIntegerField(default=0)
    submitted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(parallelism__gte=1), name="change_parallelism_positive"),
            models.CheckConstraint(condition=Q(required_approvals__gte=1), name="change_approvals_positive"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.title}"

    def get_absolute_url(self):
        return reverse("changes:detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.state in (self.State.SCHEDULED, self.State.RUNNING)

    @property
    def failure_threshold(self) -> int:
        """Failed hosts that halt the rollout; 0 and 1 both mean 'halt at the first failure'."""
        return max(1, self.max_failures)


class PlanItem(models.Model):
    change = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="plan_items")
    host = models.ForeignKey("hosts.Hypervisor", on_delete=models.PROTECT, related_name="plan_items")
    order = models.PositiveIntegerField()
    # Observed before / expected after: {pci_address: numvfs}.
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    # [{"text": "eno49: 2 → 4 VFs (...)", "pf": ..., "pci_address": ..., "step": {"op":..., "args":...}|None}]
    actions = models.JSONField(default=list)
    errors = models.JSONField(default=list)
    warnings = models.JSONField(default=list)
    item_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["change", "order"]
        constraints = [models.UniqueConstraint(fields=["change", "host"], name="planitem_unique_host")]

    def __str__(self):
        return f"plan of #{self.change_id} for host {self.host_id}"

    @property
    def steps(self) -> list[dict]:
        return [a["step"] for a in self.actions if a.get("step")]


class Approval(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    change = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="change_votes")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    plan_hash = models.CharField(max_length=64)
    # The change's submission this vote was cast on; only votes of the current submission count.
    submission = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        # One vote per person per submission: any edit means a new submission and new votes;
        # every old vote is kept.
        constraints = [
            models.UniqueConstraint(
                fields=["change", "user", "submission"], name="approval_one_vote_per_submission"
            )
        ]

    def __str__(self):
        return f"{self.user} {self.decision} #{self.change_id}"


class Rollout(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        PARTIALLY_FAILED = "partially_failed", "Partially failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (State.SUCCEEDED, State.FAILED, State.PARTIALLY_FAILED, State.CANCELLED)

    change = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="rollouts")
    attempt = models.PositiveIntegerField(default=1)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="retries"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING, db_index=True)
    message = models.TextField(blank=True)
    plan_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    halted = models.BooleanField(default=False)

    class Meta:
        ordering = ["change", "attempt"]
        constraints = [models.UniqueConstraint(fields=["change", "attempt"], name="rollout_unique_attempt")]

    def __str__(self):
        return f"rollout {self.attempt} of #{self.change_id}"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED


class HostRun(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        WAITING = "waiting", "Waiting for the host"
        RUNNING = "running", "Running"
        REBOOTING = "rebooting", "Waiting for the host to come back"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        DRIFTED = "drifted", "Drifted"
        CANCELLED = "cancelled", "Cancelled"
        SKIPPED = "skipped", "Skipped"

    # States that hold the host: at most one such host run per host, across all changes.
    # A rebooting host is held too: nothing else may start on it until it is back.
    HOLDING = (State.RUNNING, State.REBOOTING)
    # Not yet finished (a worker may still pick it up).
    OPEN = (State.PENDING, State.WAITING, State.RUNNING, State.REBOOTING)
    FINISHED = (State.SUCCEEDED, State.FAILED, State.DRIFTED, State.CANCELLED, State.SKIPPED)
    FAILURES = (State.FAILED, State.DRIFTED)

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="host_runs")
    host = models.ForeignKey("hosts.Hypervisor", on_delete=models.PROTECT, related_name="host_runs")
    plan_item = models.ForeignKey(PlanItem, on_delete=models.PROTECT, related_name="host_runs")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING, db_index=True)
    is_canary = models.BooleanField(default=False)
    order = models.PositiveIntegerField()
    message = models.TextField(blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # The run_host task that owns this host run now (a uuid); a stale owner is replaced on resume.
    owner = models.CharField(max_length=64, blank=True)
    # The one execution (run_host call) driving the host run now: a uuid taken at claim time,
    # cleared when it stops driving; a duplicate delivery of the owner's message finds it set.
    lease = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    resumed_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rollout", "order"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "host"], name="hostrun_unique_host_per_rollout"),
            models.UniqueConstraint(
                fields=["host"],
                condition=Q(state__in=["running", "rebooting"]),
                name="hostrun_one_active_per_host",
            ),
        ]

    def __str__(self):
        return f"host run {self.pk} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED


class Step(models.Model):
    class Kind(models.TextChoices):
        DRIFT_CHECK = "drift_check", "Drift check"
        ACTION = "action", "Action"
        BOOT_WAIT = "boot_wait", "Wait for boot"
        VERIFY = "verify", "Verify"

    host_run = models.ForeignKey(HostRun, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    action_index = models.IntegerField(null=True, blank=True)
    operation = models.CharField(max_length=30)
    description = models.CharField(max_length=300, blank=True)
    request = models.JSONField(default=dict)
    command = models.TextField(blank=True)
    stdout = models.TextField(blank=True)
    stderr = models.TextField(blank=True)
    exit_status = models.IntegerField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True)
    agent_sha256 = models.CharField(max_length=64, blank=True)
    result = models.JSONField(null=True, blank=True)
    ok = models.BooleanField(null=True)
    kind_of_result = models.CharField(max_length=30, blank=True)  # remote.AgentResult.kind
    error_code = models.CharField(max_length=50, blank=True)
    message = models.TextField(blank=True)
    note = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host_run", "seq"]
        constraints = [models.UniqueConstraint(fields=["host_run", "seq"], name="step_unique_seq")]

    def __str__(self):
        return f"step {self.seq} {self.operation} of host run {self.host_run_id}"

    def get_absolute_url(self):
        return reverse("changes:step", args=[self.pk])

    @property
    def interrupted(self) -> bool:
        return self.finished_at is not None and self.error_code == "interrupted"
