"""A step's transcript: filled from the agent's answer, and audited (one `step.finished` each)."""

from __future__ import annotations

import hashlib

from django.utils import timezone

from audit.services import record

from ..models import ChangeRequest, HostRun, Step

WORKER = "worker"


def fill(step: Step, res) -> None:
    step.request = res.request or step.request
    step.command = res.command or ""
    step.stdout = res.stdout or ""
    step.stderr = res.stderr or ""
    step.exit_status = res.exit_status
    step.duration = res.duration
    step.agent_sha256 = res.agent_sha256 or ""
    step.result = res.result if res.result is not None else (res.response or None)
    step.ok = bool(res.ok)
    step.kind_of_result = res.kind
    step.error_code = res.error_code or ("" if res.ok else res.kind)
    step.message = res.message or ""
    step.finished_at = timezone.now()
    step.save()


def audit_step(step: Step, run: HostRun, change_id: int) -> None:
    data = {
        "step": step.pk, "host_run": run.pk, "seq": step.seq, "kind": step.kind, "operation": step.operation,
        "request": step.request, "ok": step.ok, "result_kind": step.kind_of_result,
        "error_code": step.error_code, "message": step.message, "exit_status": step.exit_status,
        "duration": round(step.duration or 0.0, 3), "agent_sha256": step.agent_sha256, "note": step.note,
    }
    if step.kind == Step.Kind.ACTION:
        data.update(stdout=step.stdout, stderr=step.stderr)
    else:  # inventories are long; the full text is in the step, its digest here
        data.update(
            stdout_sha256=hashlib.sha256(step.stdout.encode()).hexdigest(),
            stdout_bytes=len(step.stdout),
            stderr=step.stderr[:2000],
        )
    record("step.finished", obj=step, host=run.host, change=ChangeRequest(pk=change_id), actor_name=WORKER, data=data)
