"""Kernel arguments and reboots in the pages: the wizard's kernel-argument and reboot fields, its live preview, the edit
form prefilled from a change, and the rollout row of a rebooting host ("waiting for … (2m10s)")
with a query count that does not grow with the number of rebooting hosts."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from changes import approvals, services
from changes.models import HostRun, Step
from hosts.models import Hypervisor

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db

FACTS = {
    "cpu_vendor": "amd",
    "grub_file": "/etc/default/grub",
    "grub_cmdline_default": "quiet",
    "grub_tool": "update-grub",
    "cmdline": "ro quiet",
}


def hosts(credential, n, prefix="hk"):
    out = []
    for i in range(n):
        host = make_host(f"{prefix}{i:03d}", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
        Hypervisor.objects.filter(pk=host.pk).update(**FACTS)
        out.append(host)
    return out


def form_post(host_ids, **extra):
    data = {
        "title": "IOMMU",
        "reason": "SR-IOV passthrough needs the IOMMU",
        "hosts": [str(i) for i in host_ids],
        "filter": "",
        "parallelism": "4",
        "canary_count": "0",
        "max_failures": "1",
        "kernel_args-0-iommu_preset": "on",
        "kernel_args-0-vfio_pci_ids": "8086:1520",
        "reboot-0-when": "if_needed",
    }
    data.update(extra)
    return data


def test_wizard_preview_shows_grub_before_after_tool_and_reboot(client_for, operator, credential):
    host = hosts(credential, 1)[0]
    c = client_for(operator)
    page = c.get(reverse("changes:new")).content.decode()
    assert "Enable IOMMU for SR-IOV" in page and 'name="reboot-0-when"' in page and 'name="kernel_args-0-add"' in page
    response = c.post(reverse("changes:preview"), form_post([host.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub: &quot;quiet&quot; → &quot;quiet iommu=pt " \
           "vfio-pci.ids=8086:1520&quot;" in html
    assert "regenerate the boot configuration with update-grub" in html
    assert "reboot hk000 (/proc/cmdline lacks iommu=pt vfio-pci.ids=8086:1520)" in html
    bad = c.post(reverse("changes:preview"), form_post([host.pk], **{"kernel_args-0-add": "iommu=off"}),
                 HTTP_HX_REQUEST="true")
    assert bad.status_code == 200  # htmx: the preview shows the errors
    assert "conflicting arguments" in bad.content.decode()


def test_saved_change_has_the_operations_and_the_edit_form_shows_them(client_for, operator, credential):
    host = hosts(credential, 1)[0]
    c = client_for(operator)
    extra = {"kernel_args-0-remove": "splash", "reboot-0-parallelism": "2"}
    response = c.post(reverse("changes:new"), form_post([host.pk], **extra))
    assert response.status_code == 302
    change = operator.changes.get()
    assert change.operations == [
        {"op": "kernel_args", "preset": "iommu", "vfio_pci_ids": ["8086:1520"], "add": [], "remove": ["splash"]},
        {"op": "reboot", "when": "if_needed", "parallelism": 2},
    ]
    html = c.get(reverse("changes:edit", args=[change.pk])).content.decode()
    assert re.search(r'<input type="checkbox" name="kernel_args-0-iommu_preset"[^>]* checked', html)
    assert 'value="splash"' in html and 'value="8086:1520"' in html
    assert '<option value="if_needed" selected>' in html


def _rebooting_change(credential, operator, approver, n, prefix):
    hs = hosts(credential, n, prefix)
    change = services.create_change(
        change_data([h.pk for h in hs], ops=[{"op": "kernel_args", "preset": "iommu"}, {"op": "reboot"}]), operator
    )
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    started = timezone.now() - timedelta(minutes=2, seconds=10)
    for run in HostRun.objects.filter(rollout__change=change).select_related("host", "plan_item"):
        index = next(i for i, a in enumerate(run.plan_item.actions) if (a.get("step") or {}).get("op") == "reboot")
        Step.objects.create(host_run=run, seq=1, kind="action", action_index=index, operation="reboot",
                            started_at=started,
                            finished_at=started, ok=True, result={"boot_id": "old"}, stdout="{}")
        HostRun.objects.filter(pk=run.pk).update(state="rebooting", message=f"waiting for {run.host.name} to come back")
    return change


def test_rollout_row_of_a_rebooting_host_shows_the_elapsed_time(
    client_for, viewer, operator, approver, credential, django_assert_max_num_queries,
    django_capture_on_commit_callbacks,
):
    small = _rebooting_change(credential, operator, approver, 1, "r")
    big = _rebooting_change(credential, operator, approver, 12, "q")
    c = client_for(viewer)
    url = reverse("changes:rollout", args=[small.pk])
    html = c.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "waiting for r000 to come back (2m1" in html  # 2m10s, a second more on a slow machine
    assert "Waiting for the host to come back" in html and 'hx-trigger="every 2s"' in html
    with django_assert_max_num_queries(20) as few:
        c.get(url, HTTP_HX_REQUEST="true")
    with django_assert_max_num_queries(len(few.captured_queries)):
        c.get(reverse("changes:rollout", args=[big.pk]), HTTP_HX_REQUEST="true")
