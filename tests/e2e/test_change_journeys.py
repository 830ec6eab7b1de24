"""Changes in a real browser, as the operator and the approver do them: a VF change drafted from a
selection in the hosts table, approved by someone else and watched live until done; a kernel
argument change with reboots; a fault in the middle of a rollout, then retry; a cancel.

Debian's chromium, the live server, a real Celery worker and simfleet hosts over real SSH. The
change pages are reached through what a person sees (tests/e2e/pages.py). With SCREENSHOTS=1 a
passing run refreshes docs/screenshots/ (1400×900):

    SCREENSHOTS=1 make test PYTEST_ARGS="tests/e2e"
"""

import re

import pytest
from playwright.sync_api import expect

from changes.models import ChangeRequest

from .conftest import WIZARD_NOISE, start_fleet
from .pages import (
    approve,
    heading,
    host_run,
    host_run_state,
    host_runs,
    mark_document,
    nav,
    rollout,
    same_document,
    save_draft,
    submit_for_approval,
    wizard_describe,
    wizard_picked_hosts,
    wizard_preview,
    wizard_set_vfs,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENO49 = "0000:04:00.0"
LIVE = 90_000  # ms: a rollout on two hosts over SSH on a busy 2-core machine


def draft_from_hosts_table(page, names, title, reason):
    """Hosts → search → tick the hosts → "New change for N selected hosts" → the wizard."""
    nav(page, "Hosts")
    for name in names:
        page.get_by_label(f"Select {name}").check()
    expect(page.get_by_text(f"{len(names)} host{'s' if len(names) > 1 else ''} selected")).to_be_visible()
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile(r"^New change for \d+ selected host")).click()
    expect(page).to_have_url(re.compile(r"/changes/new/\?"))
    assert wizard_picked_hosts(page) == list(names)
    wizard_describe(page, title, reason)


def approve_in_queue(browser, approver, title, comment):
    """The approver, in another browser, finds the change in the queue and approves it."""
    apr = browser()
    page = apr.login(approver)
    nav(page, "Approvals")
    row = page.get_by_role("row").filter(has_text=title)
    expect(row).to_be_visible()
    with page.expect_navigation():
        row.get_by_role("link", name="Review").click()
    approve(page, comment)
    expect(page.get_by_text("Your approval is recorded.")).to_be_visible()
    return apr, page


def test_vf_change_from_a_selection_approved_and_watched_live(browser, celery_worker, fleet, discovered_hosts,
                                                              operator, approver, admin_user, screenshots):
    host_a, host_b = discovered_hosts
    ops = browser()
    page = ops.login(operator)
    screenshots.shot(page, "dashboard")
    nav(page, "Hosts")
    screenshots.shot(page, "hosts")
    draft_from_hosts_table(page, [host_a.name, host_b.name], "VFs for the e2e rack", "guests need SR-IOV")

    preview = wizard_preview(page)
    wizard_set_vfs(page, "eno49", 4)
    expect(preview).to_contain_text("2 hosts")
    expect(preview).to_contain_text("no blocking error")
    plan = preview.get_by_role("row").filter(has_text="eno49: 0 → 4 VFs")
    expect(plan).to_have_count(2)

    wizard_set_vfs(page, "eno49", 99)
    expect(preview).to_contain_text("2 blocking errors")
    expect(preview).to_contain_text("eno49: 99 VFs requested, the NIC supports at most 7")

    wizard_set_vfs(page, "eno49", 4)
    expect(preview).to_contain_text("no blocking error")
    expect(preview).not_to_contain_text("supports at most")
    page.get_by_label("Title").focus()  # no focus ring in the middle of the screenshot
    screenshots.shot(page, "change_wizard")

    save_draft(page)
    expect(page).to_have_url(re.compile(r"/changes/\d+/$"))
    change = ChangeRequest.objects.get(title="VFs for the e2e rack")
    assert change.state == "draft" and change.targets["host_ids"] == [host_a.pk, host_b.pk]
    submit_for_approval(page)
    expect(page.get_by_text("Submitted for approval.")).to_be_visible()
    expect(page.get_by_text("someone else must approve it")).to_be_visible()

    apr = browser()
    page = apr.login(approver)
    nav(page, "Approvals")
    row = page.get_by_role("row").filter(has_text="VFs for the e2e rack")
    expect(row).to_contain_text(operator.get_username())
    expect(row.get_by_role("cell").nth(3)).to_have_text("2")
    screenshots.shot(page, "approval_queue")
    with page.expect_navigation():
        row.get_by_role("link", name="Review").click()
    polls = []
    page.on("request", lambda r: polls.append(r.url) if f"/changes/{change.pk}/rollout/" in r.url else None)
    approve(page, "Checked the plan: 4 VFs on eno49, go.")
    expect(page.get_by_text("Your approval is recorded.")).to_be_visible()
    expect(page.get_by_text("Checked the plan")).to_be_visible()

    # The rollout section updates in place while the rollout runs...
    mark_document(page)
    expect(host_runs(page)).to_have_count(2)
    expect(rollout(page)).to_contain_text(re.compile(r"[01] of 2 hosts done"), timeout=LIVE)
    # ...and once it is done the page shows the outcome.
    expect(heading(page)).to_contain_text("Succeeded", timeout=LIVE)
    for host in (host_a, host_b):
        expect(host_run_state(page, host.name)).to_have_text("Succeeded")
    expect(rollout(page)).to_contain_text("2 of 2 hosts done")
    expect(rollout(page).get_by_role("progressbar")).to_have_attribute("value", "2")
    assert polls, "the rollout section never updated itself"

    # Polling stopped: no request goes out for more than two polling periods.
    seen = len(polls)
    page.wait_for_timeout(5_000)
    assert polls[seen:] == [], "the finished rollout is still polled"
    for host in (host_a, host_b):
        assert fleet.host(host.name).true_state()["numvfs"][ENO49] == 4
    host_run(page, host_a.name).get_by_role("group").first.evaluate("d => d.open = true")
    page.evaluate("window.scrollTo(0, 0)")
    screenshots.shot(page, "change_detail")

    # The new VFs are on the host page too.
    page.get_by_role("link", name=host_a.name, exact=True).first.click()
    vfs = page.get_by_role("table", name="Virtual functions of eno49")
    expect(vfs.get_by_role("row").filter(has_text=re.compile(r"eno49v[0-3]"))).to_have_count(4)

    ops.assert_clean(**WIZARD_NOISE)
    apr.assert_clean()
    screenshots.publish()
