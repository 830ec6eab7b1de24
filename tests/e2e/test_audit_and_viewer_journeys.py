"""The auditor and the viewer in a real browser.

Auditor: filters the history (actor by prefix, action by prefix, host by name with suggestions,
a click on a host), opens a step's event and its transcript, exports the selection as CSV.
Viewer: reads every page and finds no control that would change anything; a page that needs
another role says so in the site layout.

The history is made by a real change: created, submitted and approved through the REST API (the
public contract), rolled out by a real Celery worker over real SSH to simfleet.
"""

import csv
import io
import re
import time

import pytest
from playwright.sync_api import expect

from changes.models import ChangeRequest
from tests.api.conftest import bearer_client

from .pages import heading, host_row, nav, table_with

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SET_VFS = [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 2, "persist": True}]
# Controls a viewer may see: reading, filtering, logging out.
READ_ONLY_BUTTONS = {"Log out", "Apply", "Filter"}


@pytest.fixture
def rolled_out_change(celery_worker, discovered_hosts, operator, approver):
    """A VF change on the fleet, approved by someone else and rolled out to the end."""
    ops, apr = bearer_client(operator), bearer_client(approver)
    body = {"title": "VFs for the audit", "reason": "tenant network", "operations": SET_VFS,
            "targets": {"host_ids": [h.pk for h in discovered_hosts]},
            "policy": {"parallelism": 2, "canary_count": 0, "max_failures": 1}}
    change = ops.post("/api/v1/changes/", body, format="json").json()
    change = ops.post(f"/api/v1/changes/{change['id']}/submit/", format="json").json()
    response = apr.post(f"/api/v1/changes/{change['id']}/approve/",
                        {"plan_hash": change["plan_hash"], "approval_hash": change["approval_hash"],
                         "comment": "checked"}, format="json")
    assert response.status_code == 200, response.content
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = ChangeRequest.objects.get(pk=change["id"]).state
        if state not in ("scheduled", "running"):
            break
        time.sleep(0.5)
    assert state == "succeeded", state
    return ChangeRequest.objects.get(pk=change["id"])


def event_rows(page):
    return table_with(page, "Action").get_by_role("row").filter(has=page.get_by_role("cell"))


def actions_shown(page) -> set[str]:
    return {row.get_by_role("cell").nth(3).inner_text() for row in event_rows(page).all()}


def test_auditor_filters_opens_a_transcript_and_exports(browser, rolled_out_change, discovered_hosts, auditor,
                                                        screenshots):
    host_a = discovered_hosts[0]
    b = browser()
    page = b.login(auditor)
    nav(page, "Audit")
    expect(heading(page)).to_have_text("Audit history")
    expect(page.get_by_text("Newest first.")).to_be_visible()

    # Actor by prefix: "ann" is anna, the approver.
    page.get_by_label("Actor").fill("ann")
    page.get_by_label("Action").fill("change.")
    page.get_by_role("button", name="Filter").click()
    expect(event_rows(page).first).to_contain_text("anna")
    actors = {row.get_by_role("cell").nth(2).inner_text() for row in event_rows(page).all()}
    assert actors == {"anna"}, actors
    assert "change.approved" in actions_shown(page)
    assert all(action.startswith("change.") for action in actions_shown(page)), actions_shown(page)

    # Host by name: the box suggests names while typing.
    page.get_by_label("Actor").fill("")
    page.get_by_label("Action").fill("")
    host_box = page.get_by_label("Host")
    host_box.press_sequentially("e2e", delay=40)
    expect(host_box).to_have_js_property("value", "e2e")
    suggestions = host_box.evaluate("box => Array.from(box.list.options, o => o.value)")
    deadline = time.monotonic() + 5
    while sorted(suggestions) != sorted(h.name for h in discovered_hosts) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        suggestions = host_box.evaluate("box => Array.from(box.list.options, o => o.value)")
    assert sorted(suggestions) == sorted(h.name for h in discovered_hosts)
    host_box.fill(host_a.name)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"[?&]host={host_a.name}(&|$)"))
    expect(event_rows(page).first).to_be_visible()
    hosts_shown = {row.get_by_role("cell").nth(5).inner_text() for row in event_rows(page).all()}
    assert hosts_shown == {host_a.name}, hosts_shown

    # A click on a host in the table filters by its name, and the Host box shows the name.
    page.goto("/audit/")
    with page.expect_navigation():
        event_rows(page).get_by_role("link", name=host_a.name, exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"\?host={host_a.name}$"))
    expect(page.get_by_label("Host")).to_have_value(host_a.name)
    screenshots.shot(page, "audit")

    # The event of an executed step, and its transcript.
    step_row = event_rows(page).filter(has_text="step.finished").first
    with page.expect_navigation():
        step_row.get_by_role("link").first.click()
    expect(heading(page)).to_have_text("step.finished")
    with page.expect_navigation():
        page.get_by_role("link", name=re.compile(r"^step \d+: command, output and exit status")).click()
    expect(heading(page)).to_contain_text(f"on {host_a.name}")
    expect(page.get_by_role("heading", name="stdout")).to_be_visible()
    expect(page.get_by_text("Agent sha256")).to_be_visible()
    screenshots.shot(page, "step_transcript")

    # Export what the filter shows.
    page.goto(f"/audit/?host={host_a.name}&action=step.")
    shown = event_rows(page).count()
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    assert re.fullmatch(r"audit-.+\.csv", download.value.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert len(rows) == shown and shown > 0
    assert {r["action"] for r in rows} == {"step.finished"} and {r["host_name"] for r in rows} == {host_a.name}
    page.goto("/audit/?action=audit.exported")
    expect(event_rows(page).first).to_contain_text(auditor.get_username())

    b.assert_clean()
    screenshots.publish()


def test_viewer_sees_no_write_control(browser, rolled_out_change, discovered_hosts, viewer, admin_user):
    host = discovered_hosts[0]
    nic = host.nics.get(name="eno49")
    step = rolled_out_change.rollouts.first().host_runs.first().steps.first()
    b = browser()
    page = b.login(viewer)
    banner = page.get_by_role("banner")
    for menu in ("Audit", "Approvals", "Credentials", "Admin"):
        expect(banner.get_by_role("link", name=menu, exact=True)).to_have_count(0)

    pages = ["/", "/hosts/", host.get_absolute_url(), nic.get_absolute_url(), "/changes/",
             f"/changes/{rolled_out_change.pk}/", f"/changes/steps/{step.pk}/", "/api/docs/"]
    for url in pages:
        page.goto(url)
        expect(heading(page)).to_be_visible()
        assert set(buttons_on(page)) <= READ_ONLY_BUTTONS, (url, buttons_on(page))
        assert page.get_by_role("checkbox").count() == 0, url
        for name in ("Add host", "Import hosts", "Edit", "Delete", "New change", "Review host key"):
            expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
    page.goto("/hosts/")
    expect(host_row(page, host.name)).to_be_visible()

    # A page of another role: the site's 403 page with the reason and the way back.
    page.goto("/hosts/add/")
    expect(heading(page)).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_contain_text("this page needs the 'operate' permission")
    expect(page.get_by_text("with the role viewer")).to_be_visible()
    expect(banner.get_by_role("link", name="Hosts", exact=True)).to_be_visible()
    page.goto("/audit/")
    expect(page.get_by_role("alert")).to_contain_text("'audit' permission")
    page.goto("/hosts/987654/")
    expect(heading(page)).to_have_text("Not found")
    expect(page.get_by_role("alert")).to_have_text(
        "There is no hypervisor #987654: it may have been deleted, or the link is wrong.")

    b.assert_clean(expected=["403 GET /hosts/add/", "403 GET /audit/", "404 GET /hosts/987654/"])

    # The refused attempts are in the audit history, for the auditor.
    adm = browser()
    page = adm.login(admin_user)
    page.goto("/audit/?action=access.denied")
    rows = event_rows(page)
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(viewer.get_username())
    adm.assert_clean()


def buttons_on(page) -> list[str]:
    return [text.strip() for text in page.get_by_role("button").all_inner_texts()]
