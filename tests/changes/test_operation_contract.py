"""The operation contract: an operation defined only here — it uses the agent's existing
`inventory` call — goes through the wizard's form, plan, four-eyes approval, a rollout on a real
Celery worker, verification and drift against simfleet, with no edit anywhere else. It is
registered the way any operation is: by dotted path (CHANGE_OPERATIONS_EXTRA for the worker)."""

import pytest
from django import forms
from django.conf import settings
from django.urls import reverse

from changes import approvals, services
from changes.models import ChangeRequest, HostRun
from changes.operations import HostPlan, IntentValue, Operation, OperationError, PlanContext
from hosts.discovery import discover_hosts
from hosts.intents import record_intent
from hosts.models import Hypervisor

from .conftest import change_data
from .kargs_helpers import finished, make_fleet, register, runs

pytestmark = pytest.mark.slow

PATH = "tests.changes.test_operation_contract.CheckHostname"


class CheckHostnameForm(forms.Form):
    expect = forms.CharField(max_length=63, required=False, label="Expected hostname")


class CheckHostname(Operation):
    """Confirms that each host answers with the hostname it was registered with."""

    name = "check_hostname"
    title = "Check the hostname"
    phase = 50
    form_class = CheckHostnameForm

    def validate(self, op, where):
        self.check_fields(op, {"expect"}, where)
        expect = op.get("expect", "")
        if not isinstance(expect, str) or len(expect) > 63:
            raise OperationError(f"{where}: expect must be a host name")
        return {"op": self.name, "expect": expect}

    def summary(self, op):
        return f"check that every host answers as {op['expect'] or 'its registered name'}"

    def plan(self, op, ctx: PlanContext, out: HostPlan):
        want = op["expect"] or ctx.host.name
        out.before.setdefault(self.namespace, {})["hostname"] = ctx.host.hostname
        out.after.setdefault(self.namespace, {})["hostname"] = want
        if ctx.host.hostname != want:
            out.warnings.append(f"{ctx.host.name} answered as {ctx.host.hostname} at the last discovery")
        out.add_action(self, f"ask {ctx.host.name} who it is; expect {want}", label="hostname",
                       step={"op": "inventory", "args": {}}, want=want)

    def intents(self, action, current):
        return [IntentValue("", action["want"], f"answers as {action['want']}")]

    def observe(self, inventory, keys):
        return {key: inventory.get("hostname") for key in keys}

    def difference(self, key, want, got, word, names):
        return f"hostname: {word} {want}, the host answers as {got}"

    def drift(self, host, nics, intents):
        return [f"{host.name} answers as {host.hostname}, the console expects {i.value}"
                for i in intents if i.operation == self.name and host.hostname != i.value]

    def from_form(self, cleaned):
        return {"op": self.name, "expect": cleaned["expect"]} if cleaned.get("expect") else None

    def to_form(self, op):
        return {"expect": op["expect"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, [{"profile": "dl360g9", "name": n} for n in ("op-a", "op-b")], "simfleet-op")
    yield sim
    sim.stop()


@pytest.fixture
def with_operation(settings):
    settings.CHANGE_OPERATIONS = [*settings.CHANGE_OPERATIONS, PATH]


def test_a_new_operation_runs_end_to_end_with_no_edit_elsewhere(
    with_operation, celery_worker_with, fleet, operator, approver, client_for
):
    celery_worker_with(CHANGE_OPERATIONS_EXTRA=PATH)
    hosts = register(fleet, [fleet.host("op-a"), fleet.host("op-b")])

    # The wizard offers it (its own form), and the live preview plans it.
    page = client_for(operator).get(reverse("changes:new")).content.decode()
    assert "Check the hostname" in page and 'name="check_hostname-0-expect"' in page

    ops = [{"op": "check_hostname", "expect": ""}]
    change = services.create_change(change_data([h.pk for h in hosts], ops=ops), operator)
    item = change.plan_items.order_by("order").first()
    assert item.actions[0]["text"] == "ask op-a who it is; expect op-a"
    services.submit_change(change.pk, operator)
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))

    rollout = finished(change)
    assert rollout.state == "succeeded", [r.message for r in runs(rollout)]
    change.refresh_from_db()
    assert change.state == "succeeded"
    for run in runs(rollout):
        kinds = list(run.steps.order_by("seq").values_list("kind", "operation"))
        assert kinds == [("drift_check", "inventory"), ("action", "inventory"), ("verify", "inventory")]
        assert run.message == "1 step applied and verified"
        assert run.host.intents.get(operation="check_hostname").value == run.host.name

    detail = client_for(operator).get(change.get_absolute_url()).content.decode()
    assert "check that every host answers as its registered name" in detail

    # Drift in the operation's own words once the host and the intent disagree.
    discover_hosts(Hypervisor.objects.filter(pk=hosts[0].pk))
    assert not Hypervisor.objects.get(pk=hosts[0].pk).drifted
    record_intent(hosts[0].pk, "check_hostname", "", "op-z", "answers as op-z")
    discover_hosts(Hypervisor.objects.filter(pk=hosts[0].pk))
    host = Hypervisor.objects.get(pk=hosts[0].pk)
    assert host.drift_reasons == ["op-a answers as op-a, the console expects op-z"]


def test_its_verification_fails_in_its_own_words(with_operation, celery_worker_with, fleet, operator, approver):
    celery_worker_with(CHANGE_OPERATIONS_EXTRA=PATH)
    hosts = register(fleet, [fleet.host("op-b")])
    ops = [{"op": "check_hostname", "expect": "someone-else"}]
    change = services.create_change(change_data([h.pk for h in hosts], ops=ops), operator)
    services.submit_change(change.pk, operator)
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    rollout = finished(change)
    run = HostRun.objects.get(rollout=rollout)
    assert run.state == "failed"
    assert run.message == "verification failed: hostname: expected someone-else, the host answers as op-b"
    assert ChangeRequest.objects.get(pk=change.pk).state == "failed"


def test_unknown_operations_are_refused_with_the_known_ones(db, operator):
    from django.core.exceptions import ValidationError

    assert PATH not in settings.CHANGE_OPERATIONS
    known = "set_vfs, vf_driver, vf_config, libvirt_network, kernel_args, reboot"
    with pytest.raises(ValidationError, match=f"unknown op 'check_hostname'; known: {known}"):
        services.create_change(change_data([], ops=[{"op": "check_hostname"}]), operator)
