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

from .conftest import start_fleet
from .pages import (
    approve,
    heading,
    host_run,
    host_run_state,
    host_runs,
    mark_document,
    nav,
    rollout,
    save_draft,
    section,
    submit_for_approval,
    wizard_describe,
    wizard_picked_hosts,
    wizard_preview,
    wizard_set_vfs,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMES = ("e2e-a", "e2e-b", "e2e-c")


@pytest.fixture
def fleet(tmp_path_factory):
    """A fresh fleet per journey: each one leaves its hosts changed (VFs, kernel arguments)."""
    sim = start_fleet(tmp_path_factory, NAMES)
    yield sim
    sim.stop()

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
                                                              operator, approver, screenshots):
    host_a, host_b, _host_c = discovered_hosts
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
    expect(rollout(page).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "2")
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

    ops.assert_clean()
    apr.assert_clean()
    screenshots.publish()


def draft_vf_change(page, names, title, *, count=3, parallelism=1, max_failures=1):
    draft_from_hosts_table(page, names, title, "more VFs for the tenant network")
    wizard_set_vfs(page, "eno49", count)
    page.get_by_label("Parallelism").fill(str(parallelism))
    page.get_by_label("Max failures").fill(str(max_failures))
    page.get_by_label("Max failures").press("Tab")
    expect(wizard_preview(page)).to_contain_text(f"{len(names)} hosts")
    expect(wizard_preview(page)).to_contain_text("no blocking error")
    save_draft(page)
    submit_for_approval(page)
    return ChangeRequest.objects.get(title=title)


def test_kernel_argument_change_with_reboots(browser, celery_worker, fleet, discovered_hosts, operator, approver,
                                            screenshots):
    names = [h.name for h in discovered_hosts[:2]]
    ops = browser()
    page = ops.login(operator)
    draft_from_hosts_table(page, names, "IOMMU for the e2e rack", "VF passthrough needs the IOMMU")
    page.get_by_label("Enable IOMMU for SR-IOV").check()
    page.get_by_label("Reboot", exact=True).select_option(label="if needed")
    page.get_by_label("Reboot", exact=True).press("Tab")
    preview = wizard_preview(page)
    expect(preview).to_contain_text("no blocking error")
    for name in names:
        expect(preview.get_by_role("row").filter(has_text=name)).to_contain_text("intel_iommu=on")
        expect(preview.get_by_role("row").filter(has_text=name)).to_contain_text(re.compile(r"[Rr]eboot"))
    save_draft(page)
    submit_for_approval(page)

    apr, page = approve_in_queue(browser, approver, "IOMMU for the e2e rack", "IOMMU on, one host at a time.")
    mark_document(page)
    # One host at a time: while the first reboots, the page says so and the second waits its turn.
    first, second = names
    expect(host_run(page, first)).to_contain_text(re.compile(rf"waiting for {first} to come back"), timeout=LIVE)
    expect(host_run_state(page, second)).not_to_have_text("Rebooting")
    expect(host_run_state(page, first)).to_have_text("Succeeded", timeout=LIVE)
    expect(heading(page)).to_contain_text("Succeeded", timeout=LIVE)
    for name in names:
        expect(host_run_state(page, name)).to_have_text("Succeeded")
        steps = host_run(page, name).get_by_role("group")
        expect(steps.filter(has_text=re.compile(r"[Rr]eboot"))).not_to_have_count(0)
    screenshots.shot(page, "change_reboots")

    for name in names:
        state = fleet.host(name).true_state()
        assert "intel_iommu=on" in state["cmdline"] and state["iommu_active"], state
    # The host page shows the new command line and the IOMMU on.
    page.get_by_role("link", name=first, exact=True).first.click()
    expect(page.get_by_role("table").filter(has_text="/proc/cmdline")).to_contain_text("intel_iommu=on")
    facts = section(page, "Facts")
    expect(facts).to_contain_text("active")

    ops.assert_clean()
    apr.assert_clean()
    screenshots.publish()


def test_a_fault_in_the_middle_of_a_rollout_is_shown_live(browser, celery_worker, fleet, discovered_hosts,
                                                          operator, approver):
    names = [h.name for h in discovered_hosts]
    first, broken, last = names
    fleet.host(first).inject("latency", seconds=3)  # time to break the next host while this one runs
    ops = browser()
    page = ops.login(operator)
    draft_vf_change(page, names, "VFs across the rack", max_failures=2)
    apr, page = approve_in_queue(browser, approver, "VFs across the rack", "go")
    expect(host_run_state(page, first)).to_have_text("Running", timeout=LIVE)
    fleet.host(broken).inject("unreachable")  # the host drops off the network mid-rollout

    expect(host_run_state(page, broken)).to_have_text("Failed", timeout=LIVE)
    expect(host_run(page, broken)).to_contain_text(re.compile(r"[Uu]nreachable|[Cc]annot reach|[Cc]onnect"))
    expect(heading(page)).to_contain_text("Partially failed", timeout=LIVE)
    expect(host_run_state(page, first)).to_have_text("Succeeded")
    expect(host_run_state(page, last)).to_have_text("Succeeded")
    # The failed step's transcript says what happened.
    failed_step = host_run(page, broken).get_by_role("group").last
    failed_step.evaluate("d => d.open = true")
    with page.expect_navigation():
        failed_step.get_by_role("link", name="full transcript").click()
    expect(heading(page)).to_contain_text(f"on {broken}")
    expect(page.get_by_role("heading", name="stdout")).to_be_visible()
    assert fleet.host(broken).true_state()["numvfs"][ENO49] == 0  # nothing was written there

    ops.assert_clean()
    apr.assert_clean()


def test_retry_after_the_fault_is_fixed(browser, celery_worker, fleet, discovered_hosts, operator, approver):
    names = [h.name for h in discovered_hosts]
    broken = names[1]
    fleet.host(broken).inject("unreachable")
    ops = browser()
    page = ops.login(operator)
    change = draft_vf_change(page, names, "VFs, then a retry", parallelism=3, max_failures=3)
    apr, _approver_page = approve_in_queue(browser, approver, "VFs, then a retry", "go")
    page.goto(f"/changes/{change.pk}/")
    expect(heading(page)).to_contain_text("Partially failed", timeout=LIVE)

    fleet.host(broken).clear_faults()  # the network team fixed the switch port
    with page.expect_navigation():
        page.get_by_role("button", name="Retry 1 host: 1 failed").click()
    expect(page.get_by_text("Retrying the hosts that did not succeed")).to_be_visible()
    expect(heading(page)).to_contain_text("Succeeded", timeout=LIVE)
    expect(host_run_state(page, broken)).to_have_text("Succeeded")
    assert fleet.host(broken).true_state()["numvfs"][ENO49] == 3
    ops.assert_clean()


def test_cancel_in_the_middle_of_a_rollout(browser, celery_worker, fleet, discovered_hosts, operator, approver):
    names = [h.name for h in discovered_hosts]
    for name in names:
        fleet.host(name).inject("latency", seconds=2)
    ops = browser()
    page = ops.login(operator)
    change = draft_vf_change(page, names, "VFs, cancelled", parallelism=1, max_failures=3)
    apr, _approver_page = approve_in_queue(browser, approver, "VFs, cancelled", "go")

    page.goto(f"/changes/{change.pk}/")
    expect(host_run_state(page, names[0])).to_have_text("Running", timeout=LIVE)
    page.get_by_label("Reason").fill("maintenance window moved")
    with page.expect_navigation():
        page.get_by_role("button", name="Cancel change").click()
    expect(page.get_by_text("Cancelled. Hosts not started will not run")).to_be_visible()
    expect(heading(page)).to_contain_text("Cancelled", timeout=LIVE)
    for name in names[1:]:
        expect(host_run_state(page, name)).to_have_text("Cancelled")
        expect(host_run(page, name)).not_to_contain_text("Running")
    # The host that was running finished its step; nothing ran on the others.
    expect(host_run_state(page, names[0])).to_have_text(re.compile(r"Succeeded|Cancelled"))
    for name in names[1:]:
        assert fleet.host(name).true_state()["numvfs"][ENO49] == 0
    expect(page.get_by_role("button", name="Cancel change")).to_have_count(0)

    ops.assert_clean()
    apr.assert_clean()
