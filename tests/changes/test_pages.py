"""Change pages: permissions, the wizard and its live preview, detail, queue, POST actions, and
query counts that do not grow with the number of hosts and steps."""

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from changes import approvals, services
from changes.models import ChangeRequest, HostRun, Step

from .conftest import change_data, make_host

pytestmark = pytest.mark.django_db


def hosts_for(credential, n, prefix="hv"):
    return [
        make_host(f"{prefix}{i:03d}", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
        for i in range(n)
    ]


def form_post(host_ids, **extra):
    data = {
        "title": "VFs",
        "reason": "needed",
        "hosts": [str(i) for i in host_ids],
        "filter": "",
        "set_vfs-0-by": "name",
        "set_vfs-0-value": "eno49",
        "set_vfs-0-count": "4",
        "set_vfs-0-persist": "on",
        "parallelism": "2",
        "canary_count": "1",
        "max_failures": "1",
    }
    data.update(extra)
    return data


def test_roles_and_methods(client_for, viewer, credential, operator):
    host = hosts_for(credential, 1)[0]
    change = services.create_change(change_data([host.pk]), operator)
    c = client_for(viewer)
    assert c.get(reverse("changes:list")).status_code == 200
    assert c.get(reverse("changes:detail", args=[change.pk])).status_code == 200
    assert c.get(reverse("changes:new")).status_code == 403
    assert c.get(reverse("changes:queue")).status_code == 403
    assert c.post(reverse("changes:submit", args=[change.pk])).status_code == 403
    assert c.post(reverse("changes:approve", args=[change.pk])).status_code == 403
    assert c.post(reverse("changes:preview")).status_code == 403
    c = client_for(operator)
    assert c.get(reverse("changes:submit", args=[change.pk])).status_code == 405


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("changes:list"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_wizard_prefills_hosts_from_the_host_table(client_for, operator, credential):
    hosts = hosts_for(credential, 3)
    page = client_for(operator).get(reverse("changes:new") + f"?host={hosts[0].pk}&host={hosts[2].pk}")
    html = page.content.decode()
    assert f'<input type="checkbox" name="hosts" value="{hosts[0].pk}" checked>' in html
    assert f'value="{hosts[2].pk}" checked>' in html and f'value="{hosts[1].pk}"' not in html
    assert 'hx-post="/changes/preview/"' in html


def test_live_preview_renders_the_plan_and_writes_nothing(client_for, operator, credential):
    hosts = hosts_for(credential, 2)
    c = client_for(operator)
    response = c.post(reverse("changes:preview"), form_post([h.pk for h in hosts]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "eno49: 0 → 4 VFs" in html and "hv000" in html and "no blocking error" in html
    assert "<html" not in html  # a partial
    response = c.post(
        reverse("changes:preview"), form_post([hosts[0].pk], **{"set_vfs-0-count": "9"}), HTTP_HX_REQUEST="true"
    )
    assert "eno49: 9 VFs requested, the NIC supports at most 7" in response.content.decode()
    response = c.post(reverse("changes:preview"), form_post([], filter="rack=1"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200  # htmx: the preview shows the errors
    assert "unknown key" in response.content.decode()
    assert ChangeRequest.objects.count() == 0


def test_create_submit_approve_through_pages(
    client_for, operator, approver, credential, django_capture_on_commit_callbacks
):
    hosts = hosts_for(credential, 2)
    c = client_for(operator)
    response = c.post(reverse("changes:new"), form_post([h.pk for h in hosts], reason=""))
    assert response.status_code == 400 and "A reason is required" in response.content.decode()
    response = c.post(reverse("changes:new"), form_post([h.pk for h in hosts]))
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == change.get_absolute_url()
    detail = c.get(change.get_absolute_url()).content.decode()
    assert "Submit for approval" in detail and "Approve plan" not in detail
    c.post(reverse("changes:submit", args=[change.pk]))
    change.refresh_from_db()
    assert change.state == "submitted"
    # The requester sees no vote form, and a forged POST is refused.
    detail = c.get(change.get_absolute_url()).content.decode()
    assert "Approve plan" not in detail and "someone else must approve it" in detail
    c = client_for(approver)
    queue = c.get(reverse("changes:queue")).content.decode()
    assert f"#{change.pk}" in queue and "0 / 1" in queue
    detail = c.get(change.get_absolute_url()).content.decode()
    assert "Approve plan" in detail
    c.post(
        reverse("changes:approve", args=[change.pk]),
        {
            "plan_hash": change.plan_hash,
            "approval_hash": approvals.current_approval_hash(change.pk),
            "comment": "ok",
        },
    )
    change.refresh_from_db()
    assert change.state == "scheduled"
    detail = c.get(change.get_absolute_url()).content.decode()
    assert 'hx-trigger="every 2s"' in detail and 'class="progress-bar"' in detail
    assert "style=" not in detail


def test_requester_post_approve_is_refused(
    client_for, admin_user, credential, django_capture_on_commit_callbacks
):
    host = hosts_for(credential, 1)[0]
    change = services.create_change(change_data([host.pk]), admin_user)
    services.submit_change(change.pk, admin_user)
    change.refresh_from_db()
    with pytest.raises(PermissionDenied):
        approvals.approve(change.pk, admin_user, approval_hash=approvals.current_approval_hash(change.pk))
    response = client_for(admin_user).post(
        reverse("changes:approve", args=[change.pk]),
        {"plan_hash": change.plan_hash, "approval_hash": approvals.current_approval_hash(change.pk)},
    )
    assert response.status_code == 403
    change.refresh_from_db()
    assert change.state == "submitted"


def test_list_filters_by_state_and_requester(client_for, operator, viewer, credential):
    host = hosts_for(credential, 1)[0]
    a = services.create_change(change_data([host.pk]), operator)
    services.submit_change(a.pk, operator)
    b = services.create_change(change_data([host.pk], title="other"), operator)
    c = client_for(viewer)
    html = c.get(reverse("changes:list") + "?state=submitted").content.decode()
    assert f"#{a.pk}<" in html and f"#{b.pk}<" not in html
    html = c.get(reverse("changes:list") + f"?requested_by={operator.pk}").content.decode()
    assert f"#{a.pk}<" in html and f"#{b.pk}<" in html


def _ran_change(credential, operator, approver, n, prefix):
    hosts = hosts_for(credential, n, prefix)
    change = services.create_change(change_data([h.pk for h in hosts]), operator)
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, approval_hash=approvals.current_approval_hash(change.pk))
    for run in HostRun.objects.filter(rollout__change=change):
        for seq in (1, 2, 3):
            Step.objects.create(
                host_run=run,
                seq=seq,
                kind="action",
                operation="set_vfs",
                started_at=timezone.now(),
                finished_at=timezone.now(),
                ok=True,
                stdout="{}",
            )
    return change


@pytest.mark.parametrize("url_name", ["changes:detail", "changes:rollout"])
def test_detail_query_count_does_not_grow(
    client_for,
    operator,
    approver,
    credential,
    url_name,
    django_assert_max_num_queries,
    django_capture_on_commit_callbacks,
):
    small = _ran_change(credential, operator, approver, 3, "s")
    big = _ran_change(credential, operator, approver, 30, "b")
    c = client_for(operator)
    c.get(reverse(url_name, args=[small.pk]))
    with django_assert_max_num_queries(20) as small_q:
        assert c.get(reverse(url_name, args=[small.pk])).status_code == 200
    with django_assert_max_num_queries(len(small_q.captured_queries)):
        assert c.get(reverse(url_name, args=[big.pk])).status_code == 200


def test_list_and_queue_query_counts_do_not_grow(
    client_for, operator, approver, credential, django_assert_max_num_queries
):
    host = hosts_for(credential, 1)[0]
    for i in range(3):
        services.submit_change(
            services.create_change(change_data([host.pk], title=f"c{i}"), operator).pk, operator
        )
    c = client_for(approver)
    with django_assert_max_num_queries(15) as few:
        c.get(reverse("changes:list"))
        c.get(reverse("changes:queue"))
    for i in range(30):
        services.submit_change(
            services.create_change(change_data([host.pk], title=f"d{i}"), operator).pk, operator
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        c.get(reverse("changes:list"))
        c.get(reverse("changes:queue"))


def test_step_transcript_page(
    client_for, viewer, operator, approver, credential, django_capture_on_commit_callbacks
):
    change = _ran_change(credential, operator, approver, 1, "t")
    step = Step.objects.filter(host_run__rollout__change=change).first()
    Step.objects.filter(pk=step.pk).update(
        stdout='{"ok": true}', stderr="warning: x", exit_status=0, agent_sha256="ab" * 32
    )
    html = client_for(viewer).get(reverse("changes:step", args=[step.pk])).content.decode()
    assert "warning: x" in html and "ab" * 32 in html and "&quot;ok&quot;: true" in html


def test_rollout_poll_stops_and_refreshes_once_finished(client_for, viewer, operator, approver, credential,
                                                        django_capture_on_commit_callbacks):
    change = _ran_change(credential, operator, approver, 2, "p")
    c = client_for(viewer)
    url = reverse("changes:rollout", args=[change.pk])
    response = c.get(url, HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 2s"' in response.content.decode() and "HX-Refresh" not in response
    change.rollouts.update(state="succeeded")
    response = c.get(url, HTTP_HX_REQUEST="true")
    assert "every 2s" not in response.content.decode() and response["HX-Refresh"] == "true"


def test_the_host_picker_searches_and_counts_the_picked_hosts(client, operator, credential):
    from .conftest import make_host

    hosts = [make_host(f"rack{i:02d}-kvm", credential=credential, nics=[("eno49", "0000:04:00.0", 0)])
             for i in range(3)]
    make_host("other-box", credential=credential)
    client.force_login(operator)
    page = client.get(reverse("changes:new") + f"?hosts={hosts[0].pk}").content.decode()
    assert "<strong>1</strong> host picked" in page and "rack00-kvm" in page.split('id="picked-hosts"')[1]
    assert "rack01-kvm" not in page  # the form no longer lists every host of the fleet
    # Searching lists matching hosts that are not picked yet, out of band, without touching the search box.
    data = form_post([hosts[0].pk], picker_q="rack")
    html = client.post(reverse("changes:preview"), data, HTTP_HX_REQUEST="true").content.decode()
    results = html.split('id="picker-results" hx-swap-oob="true"')[1]
    assert "rack01-kvm" in results and "rack02-kvm" in results and "rack00-kvm" not in results
    assert "other-box" not in results and 'name="picker_q"' not in html
    # Ticking a result picks it: the count follows and the plan covers both hosts.
    data = form_post([hosts[0].pk, hosts[2].pk], picker_q="rack")
    html = client.post(reverse("changes:preview"), data, HTTP_HX_REQUEST="true").content.decode()
    assert "<strong>2</strong> hosts picked" in html and "2 hosts, 2 writes" in html
    # Before anything is picked, the search works too.
    html = client.post(reverse("changes:preview"), {"picker_q": "other"}, HTTP_HX_REQUEST="true").content.decode()
    assert "other-box" in html.split('id="picker-results"')[1]
