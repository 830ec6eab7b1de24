"""The console in a real browser: login, the live host filters, and a change from the wizard's
live plan preview through four-eyes approval to a rollout watched live until polling stops.

Debian's chromium, the live server, the test database, a real Celery worker and two simfleet
hosts over real SSH. With SCREENSHOTS=1 a passing run also refreshes docs/screenshots/
(change_wizard, approval_queue, change_detail, audit, api_docs; 1400×900):

    SCREENSHOTS=1 CONSOLE_VAR_DIR=$PWD/var/test-e2e .venv/bin/python -m pytest tests/e2e -k wizard
"""

import re

import pytest
from playwright.sync_api import expect

from changes.models import ChangeRequest
from hosts.models import Hypervisor

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENO49 = "0000:04:00.0"
NO_FULL_LOAD = "window.__e2e_same_document"


def mark_document(page):
    """A marker that only survives while no full page load happens (htmx swaps keep it)."""
    page.evaluate(f"{NO_FULL_LOAD} = true")


def same_document(page) -> bool:
    return page.evaluate(f"{NO_FULL_LOAD} === true")


def host_rows(page):
    return page.locator("#host-table tbody tr")


def test_login_and_live_host_filters(browser, discovered_hosts, operator):
    Hypervisor.objects.create(name="spare-1", address="192.0.2.10", status=Hypervisor.Status.UNREACHABLE)
    b = browser()
    page = b.login(operator)
    expect(page.locator(".topbar .user")).to_contain_text(operator.get_username())

    page.click(".topbar nav >> text=Hosts")
    expect(page).to_have_url(re.compile(r"/hosts/$"))
    expect(host_rows(page)).to_have_count(3)
    mark_document(page)

    # Typing in the search box filters the table in place, and the URL follows.
    page.locator("input[name=q]").press_sequentially("e2e-b", delay=30)
    expect(host_rows(page)).to_have_count(1)
    expect(host_rows(page).first).to_contain_text("e2e-b")
    expect(page.locator("#host-table .table-head")).to_contain_text("1 host")
    expect(page).to_have_url(re.compile(r"[?&]q=e2e-b(&|$)"))

    page.locator("input[name=q]").press("Control+a")
    page.locator("input[name=q]").press("Backspace")
    expect(host_rows(page)).to_have_count(3)

    # Picking a status: the change event reloads only the table.
    page.select_option("select[name=status]", "unreachable")
    expect(host_rows(page)).to_have_count(1)
    expect(host_rows(page).first).to_contain_text("spare-1")
    expect(page).to_have_url(re.compile(r"[?&]status=unreachable(&|$)"))
    page.select_option("select[name=status]", "reachable")
    expect(host_rows(page)).to_have_count(2)
    expect(host_rows(page)).to_contain_text(["e2e-a", "e2e-b"])
    expect(page).to_have_url(re.compile(r"[?&]status=reachable(&|$)"))

    assert same_document(page), "the filters reloaded the whole page instead of swapping the table"
    problems = b.problems()
    assert not problems, "\n".join(problems)


def test_change_wizard_approval_and_live_rollout(browser, celery_worker, fleet, discovered_hosts, operator, approver,
                                                 admin_user, screenshots):
    host_a, host_b = discovered_hosts

    # --- The operator picks the hosts in the table and opens the wizard with them. ---
    ops = browser()
    page = ops.login(operator)
    page.goto("/hosts/")
    page.get_by_label(f"Select {host_a.name}").check()
    page.get_by_label(f"Select {host_b.name}").check()
    with page.expect_navigation():
        page.get_by_role("button", name="New change for selected hosts").click()
    expect(page).to_have_url(re.compile(r"/changes/new/\?"))
    picked = page.eval_on_selector("#id_hosts", "s => Array.from(s.selectedOptions, o => o.text)")
    bugs = []
    if picked != [host_a.name, host_b.name]:
        # Checked at the end, so one broken hand-over does not hide the rest of the flow.
        bugs.append(f"the hosts checked in the hosts table are not pre-selected in the wizard: {page.url} "
                    f"pre-selects {picked}")
        page.select_option("#id_hosts", [str(host_a.pk), str(host_b.pk)])

    preview = page.locator("#plan-preview")
    page.fill("#id_title", "VFs for the e2e rack")
    page.fill("#id_reason", "guests need SR-IOV")
    page.fill("#id_set_vfs-0-value", "eno49")
    page.fill("#id_set_vfs-0-count", "4")
    page.press("#id_set_vfs-0-count", "Tab")  # change event → the preview is re-planned
    expect(preview).to_contain_text("2 hosts")
    expect(preview).to_contain_text("no blocking error")
    expect(preview.locator("table.plan tbody tr")).to_have_count(2)
    expect(preview.locator("table.plan tbody tr").nth(0)).to_contain_text("eno49: 0 → 4 VFs")
    expect(preview.locator("table.plan tbody tr").nth(1)).to_contain_text("eno49: 0 → 4 VFs")

    page.fill("#id_set_vfs-0-count", "99")
    page.press("#id_set_vfs-0-count", "Tab")
    expect(preview).to_contain_text("2 blocking errors")
    expect(preview.locator("tr.row-bad")).to_have_count(2)
    expect(preview).to_contain_text("eno49: 99 VFs requested, the NIC supports at most 7")

    # A form error (a value without a count) replaces the plan with the error (a 422 partial).
    page.fill("#id_set_vfs-0-count", "")
    page.press("#id_set_vfs-0-count", "Tab")
    try:
        expect(preview).to_contain_text("Give the VF count", timeout=5_000)
    except AssertionError:
        bugs.append("a form error never reaches the plan preview: htmx does not swap the 422 partial of "
                    "changes:preview, and the stale plan stays on screen: "
                    + preview.inner_text().replace("\n", " ")[:200])

    page.fill("#id_set_vfs-0-count", "4")
    page.press("#id_set_vfs-0-count", "Tab")
    expect(preview).to_contain_text("no blocking error")
    expect(preview).not_to_contain_text("supports at most")
    page.locator("#id_title").focus()  # no focus ring in the middle of the screenshot
    screenshots.shot(page, "change_wizard")

    with page.expect_navigation():
        page.get_by_role("button", name="Save as draft").click()
    expect(page).to_have_url(re.compile(r"/changes/\d+/$"))
    change = ChangeRequest.objects.get(title="VFs for the e2e rack")
    assert change.state == "draft" and change.targets["host_ids"] == [host_a.pk, host_b.pk]
    with page.expect_navigation():
        page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator(".messages")).to_contain_text("Submitted for approval.")
    expect(page.locator("#approvals")).to_contain_text("someone else must approve it")

    # --- The approver, in another browser, finds it in the queue and approves it. ---
    apr = browser()
    page = apr.login(approver)
    page.click(".topbar nav >> text=Approvals")
    row = page.locator("table tbody tr", has_text="VFs for the e2e rack")
    expect(row).to_contain_text(operator.get_username())
    expect(row.locator("td.num").first).to_have_text("2")
    screenshots.shot(page, "approval_queue")
    with page.expect_navigation():
        row.get_by_role("link", name="Review").click()
    page.fill("#vote-form textarea, #vote-form input[name=comment]", "Checked the plan: 4 VFs on eno49, go.")

    rollout_requests = []
    page.on("request", lambda r: rollout_requests.append(r.url) if f"/changes/{change.pk}/rollout/" in r.url else None)
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile(r"^Approve plan ")).click()
    expect(page.locator(".messages")).to_contain_text("Your approval is recorded.")
    expect(page.locator("#approvals")).to_contain_text("Checked the plan")

    # The rollout section polls while the rollout runs, swapping only itself...
    expect(page.locator('#rollout[hx-trigger="every 2s"]')).to_have_count(1)
    mark_document(page)
    with page.expect_response(lambda r: f"/changes/{change.pk}/rollout/" in r.url, timeout=20_000) as polled:
        pass
    assert polled.value.status == 200
    # ...and once it is done the page reloads once so the header shows the outcome.
    expect(page.locator("h1 .badge")).to_have_text("Succeeded", timeout=90_000)
    runs = page.locator("#rollout table.hostruns tbody tr")
    expect(runs).to_have_count(2)
    expect(runs.nth(0)).to_contain_text(host_a.name)
    expect(runs.nth(1)).to_contain_text(host_b.name)
    for i in range(2):
        expect(runs.nth(i).locator("td").nth(2)).to_have_text("Succeeded")
    expect(page.locator("#rollout progress")).to_have_attribute("value", "2")
    expect(page.locator("#rollout")).to_contain_text("2 of 2 hosts done")

    # Polling stopped: no element polls any more, and no request goes out for a while.
    assert page.locator('[hx-trigger^="every"]').count() == 0
    seen = len(rollout_requests)
    assert seen >= 1
    page.wait_for_timeout(5_000)  # more than two polling periods
    assert rollout_requests[seen:] == [], "the finished rollout is still polled"
    for name in (host_a.name, host_b.name):
        assert fleet.host(name).true_state()["numvfs"][ENO49] == 4
    page.locator("#rollout details").first.evaluate("d => d.open = true")
    page.locator("#plan").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    screenshots.shot(page, "change_detail")

    # --- The admin reads the audit log and the API docs. ---
    adm = browser()
    page = adm.login(admin_user)
    page.goto("/audit/")
    expect(page.locator("main")).to_contain_text("change.approved")
    screenshots.shot(page, "audit")
    page.goto("/api/docs/")
    expect(page.locator("h1")).to_have_text("REST API")
    screenshots.shot(page, "api_docs")

    # By design: the preview answers 422 while the form is incomplete (on load, too), and a newer
    # preview aborts the one in flight (hx-sync="this:replace"), which htmx logs as errors (any
    # other failed request or error response is still reported by its URL).
    problems = ops.problems(
        expected=["422 POST /changes/preview/", "net::ERR_ABORTED POST /changes/preview/"],
        expected_console=["Response Status Error Code 422 from /changes/preview/", "htmx:sendAbort",
                          "htmx:afterRequest"],
    )
    problems += apr.problems() + adm.problems()
    assert not problems, "\n".join(problems)
    screenshots.publish()  # every page shown passed its checks (a bug below is in the hand-over)
    assert not bugs, "\n".join(bugs)
