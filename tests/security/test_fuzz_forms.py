"""Hypothesis fuzzing of the host form (hosts:add) and the change-request form (changes:new):
whatever is posted, the answer is a success or a 4xx with a message — never a 500 (the test client
re-raises exceptions) and never a partial write (a refused post leaves no row and no audit event)."""

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from hosts.models import Hypervisor, Label, Nic

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text that is nasty for forms and databases: control characters (NUL included), surrogates are
# excluded by HTTP encoding anyway, long strings, shell/SQL/HTML metacharacters.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=300),
    st.sampled_from(["", " ", "\x00", "a\x00b", "'; DROP TABLE hosts_hypervisor; --", "$(reboot)", "`id`",
                     "<script>alert(1)</script>", "../../etc/passwd", "0", "-1", "65536",
                     "99999999999999999999", "1e9", "NaN", "hv-01", "127.0.0.1", "::1", "host.example.com",
                     "root", "rack-12 prod",
                     "x" * 70, "x" * 300, "é" * 64]),
)
int_text = st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), nasty_text)


def counts():
    return (Hypervisor.objects.count(), Label.objects.count(), AuditEvent.objects.count())


@pytest.fixture
def operator_client(client_for, operator):
    return client_for(operator)


@given(data=st.fixed_dictionaries({}, optional={
    "name": nasty_text, "address": nasty_text, "port": int_text, "username": nasty_text,
    "credential": int_text, "labels_text": nasty_text, "description": nasty_text,
}))
@FUZZ
def test_host_form_fuzz(operator_client, sample_objects, data):
    before = counts()
    response = operator_client.post(reverse("hosts:add"), data)
    status = response.status_code
    assert status in (302, 303) or 400 <= status < 500, status
    if status >= 400:
        assert counts() == before, "a refused host form wrote something"
        assert b"errorlist" in response.content or status != 400, "a 400 without a message"
    else:
        host = Hypervisor.objects.order_by("-pk").first()
        assert Hypervisor.objects.count() == before[0] + 1
        host.full_clean()  # what was saved is valid by the model's own rules


def test_an_empty_host_post_says_why(operator_client):
    response = operator_client.post(reverse("hosts:add"), {})
    assert response.status_code == 400
    assert b"errorlist" in response.content


op_row = st.fixed_dictionaries({}, optional={
    "by": st.one_of(st.sampled_from(["name", "pci", "driver", "vendor_device"]), nasty_text),
    "value": st.one_of(st.sampled_from(["eno49", "0000:04:00.0", "igb", "8086:1521"]), nasty_text),
    "count": int_text,
    "persist": st.sampled_from(["on", "", "x"]),
    "take_over": st.sampled_from(["on", ""]),
})


@given(
    fields=st.fixed_dictionaries({}, optional={
        "title": nasty_text, "reason": nasty_text, "filter": nasty_text,
        "parallelism": int_text, "canary_count": int_text, "max_failures": int_text,
        "not_before": st.one_of(nasty_text, st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M"))),
        "not_after": st.one_of(nasty_text, st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M"))),
        "allow_guest_impact": st.sampled_from(["on", ""]),
        "kernel_args-0-iommu_preset": st.sampled_from(["on", ""]),
        "kernel_args-0-vfio_pci_ids": st.one_of(st.sampled_from(["8086:1520", "8086:1521, 15b3:1018"]), nasty_text),
        "kernel_args-0-add": st.one_of(st.sampled_from(["hugepages=16", "iommu=pt quiet", "root=/dev/sda"]),
                                       nasty_text),
        "kernel_args-0-remove": nasty_text,
        "reboot-0-when": st.one_of(st.sampled_from(["", "if_needed", "always"]), nasty_text),
        "reboot-0-parallelism": int_text,
    }),
    hosts=st.lists(st.one_of(st.just("SAMPLE"), int_text), max_size=3),
    rows=st.lists(op_row, max_size=4),
)
@FUZZ
def test_change_form_fuzz(operator_client, sample_objects, fields, hosts, rows):
    url = reverse("changes:new")
    from changes.models import ChangeRequest, PlanItem

    data = dict(fields)
    data["hosts"] = [str(sample_objects["host"].pk) if h == "SAMPLE" else h for h in hosts]
    for n, row in enumerate(rows):
        for key, value in row.items():
            data[f"set_vfs-{n}-{key}"] = value
    before = (ChangeRequest.objects.count(), PlanItem.objects.count(), AuditEvent.objects.count())
    response = operator_client.post(url, data)
    status = response.status_code
    assert status in (302, 303) or 400 <= status < 500, status
    if status >= 400:
        after = (ChangeRequest.objects.count(), PlanItem.objects.count(), AuditEvent.objects.count())
        assert after == before, "a refused change form wrote something"
    else:
        assert ChangeRequest.objects.count() == before[0] + 1


def test_a_valid_change_is_accepted(operator_client, sample_objects):
    """The fuzz above must be able to succeed too: a plain valid post creates a draft."""
    url = reverse("changes:new")
    from changes.models import ChangeRequest

    host = sample_objects["host"]
    Nic.objects.filter(host=host).update(driver="igb")
    response = operator_client.post(url, {
        "title": "VFs", "reason": "tenant needs VFs", "hosts": [str(host.pk)], "parallelism": "1",
        "canary_count": "0", "max_failures": "1", "set_vfs-0-by": "name", "set_vfs-0-value": "eno49",
        "set_vfs-0-count": "4",
        "set_vfs-0-persist": "on",
    })
    assert response.status_code in (302, 303), response.content.decode()[:2000]
    assert ChangeRequest.objects.filter(title="VFs").exists()
