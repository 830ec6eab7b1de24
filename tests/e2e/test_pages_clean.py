"""Every page as a browser shows it: no console error, no failed request, no Content Security Policy
violation (htmx injects no inline style: its indicator CSS ships in the stylesheet), a favicon;
a disabled button looks disabled."""

import re

import pytest
from playwright.sync_api import expect

from audit.models import AuditEvent
from tests.api.conftest import bearer_client

from .pages import heading, wizard_describe, wizard_set_vfs

pytestmark = [pytest.mark.e2e]


def draft_change(user, hosts, count):
    """A draft VF change through the REST API (the public contract)."""
    body = {"title": f"{count} VFs", "reason": "tenant network", "targets": {"host_ids": [h.pk for h in hosts]},
            "operations": [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": count}],
            "policy": {"parallelism": 1, "canary_count": 0, "max_failures": 1}}
    response = bearer_client(user).post("/api/v1/changes/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def no_inline_style(page):
    """htmx is configured not to inject its indicator <style> (the CSP forbids inline style)."""
    assert page.evaluate("() => document.querySelectorAll('style, [style]').length") == 0, page.url
    assert page.evaluate("() => htmx.config.includeIndicatorStyles") is False


def test_every_main_page_is_clean(browser, discovered_hosts, admin_user, operator, screenshots):
    host = discovered_hosts[0]
    change = draft_change(operator, discovered_hosts, 2)
    bearer_client(operator).post(f"/api/v1/changes/{change['id']}/submit/", format="json")
    event = AuditEvent.objects.order_by("-id").first()
    b = browser()
    page = b.login(admin_user)
    urls = [
        "/", "/hosts/", host.get_absolute_url(), host.nics.get(name="eno49").get_absolute_url(), "/hosts/vfs/",
        f"/hosts/{host.pk}/key/", "/hosts/add/", "/hosts/import/", "/hosts/credentials/",
        "/changes/", f"/changes/{change['id']}/", "/changes/new/", "/changes/queue/",
        "/audit/", event.get_absolute_url(), "/api/docs/", "/api/tokens/", "/admin/",
    ]
    for url in urls:
        page.goto(url)
        page.wait_for_load_state("networkidle")  # htmx's on-load requests too (the wizard's preview)
        if not url.startswith("/admin/"):
            expect(heading(page)).to_be_visible()
            no_inline_style(page)
        assert not b.problems(), (url, b.problems())
        if url == "/api/docs/":
            screenshots.shot(page, "api_docs")
        if url == "/hosts/vfs/":
            screenshots.shot(page, "vf_usage")

    # The list's "Loading…" indicator is hidden by the stylesheet until a request runs.
    page.goto("/hosts/")
    assert page.get_by_text("Loading…").evaluate("e => getComputedStyle(e).display") == "none"
    # htmx swaps inject no style either (the filters swap the table).
    page.get_by_label("Status").select_option("reachable")
    expect(page.get_by_text("2 hosts", exact=True)).to_be_visible()
    no_inline_style(page)
    page.goto(host.get_absolute_url())
    page.get_by_role("button", name="Refresh").click()
    expect(page.get_by_text("Discovery running")).to_be_visible()
    no_inline_style(page)
    b.assert_clean()
    screenshots.publish()


def test_the_change_wizard_logs_no_console_error(browser, discovered_hosts, operator):
    b = browser()
    page = b.login(operator)
    page.goto(f"/changes/new/?hosts={discovered_hosts[0].pk}")
    wizard_describe(page, "VFs", "")
    wizard_set_vfs(page, "eno49", 2)
    page.wait_for_load_state("networkidle")
    b.assert_clean()


def test_a_disabled_button_looks_disabled(browser, discovered_hosts, operator):
    blocked = draft_change(operator, discovered_hosts[:1], 99)  # more VFs than the NIC has
    b = browser()
    page = b.login(operator)
    page.goto(f"/changes/{blocked['id']}/")
    expect(page.get_by_text(re.compile(r"blocking error"))).not_to_have_count(0)
    submit = page.get_by_role("button", name="Submit for approval")
    expect(submit).to_be_disabled()
    enabled = page.get_by_role("link", name="Edit")
    look = submit.evaluate("b => { const s = getComputedStyle(b); return [parseFloat(s.opacity), s.cursor]; }")
    assert look[0] <= 0.6 and look[1] == "not-allowed", f"a disabled Submit looks enabled: opacity, cursor = {look}"
    assert float(enabled.evaluate("a => getComputedStyle(a).opacity")) == 1.0

    page.goto("/hosts/")
    new_change = page.get_by_role("button", name="New change for selected hosts")
    expect(new_change).to_be_disabled()
    assert new_change.evaluate("b => getComputedStyle(b).cursor") == "not-allowed"
    b.assert_clean()
