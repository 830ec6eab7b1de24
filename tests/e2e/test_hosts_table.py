"""The hosts table in a real browser: live filters, and a selection of hosts (one row, this page,
everything the filter matches) that survives a filter change and paging and is what the
"New change" button hands to the change wizard."""

import re

import pytest
from playwright.sync_api import expect

from hosts.models import Hypervisor

from .pages import host_row, host_rows, mark_document, nav, same_document, wizard_picked_hosts

pytestmark = [pytest.mark.e2e]


def test_login_and_live_host_filters(browser, discovered_hosts, operator):
    Hypervisor.objects.create(name="spare-1", address="192.0.2.10", status=Hypervisor.Status.UNREACHABLE)
    b = browser()
    page = b.login(operator)
    expect(page.get_by_role("banner")).to_contain_text(operator.get_username())

    nav(page, "Hosts")
    expect(page).to_have_url(re.compile(r"/hosts/$"))
    expect(host_rows(page)).to_have_count(3)
    mark_document(page)

    # Typing in the search box filters the table in place, and the URL follows.
    search = page.get_by_role("searchbox", name="Search")
    search.press_sequentially("e2e-b", delay=30)
    expect(host_rows(page)).to_have_count(1)
    expect(host_rows(page).first).to_contain_text("e2e-b")
    expect(page.get_by_text("1 host", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]q=e2e-b(&|$)"))

    search.press("Control+a")
    search.press("Backspace")
    expect(host_rows(page)).to_have_count(3)

    # Picking a status: the change event reloads only the table.
    page.get_by_label("Status").select_option("unreachable")
    expect(host_rows(page)).to_have_count(1)
    expect(host_rows(page).first).to_contain_text("spare-1")
    expect(page).to_have_url(re.compile(r"[?&]status=unreachable(&|$)"))
    page.get_by_label("Status").select_option("reachable")
    expect(host_rows(page)).to_have_count(2)
    expect(host_rows(page)).to_contain_text(["e2e-a", "e2e-b"])

    assert same_document(page), "the filters reloaded the whole page instead of swapping the table"
    b.assert_clean()


def test_the_search_placeholder_is_not_cut_off(browser, operator, db):
    b = browser()
    page = b.login(operator)
    page.goto("/hosts/")
    search = page.get_by_role("searchbox", name="Search")
    placeholder = search.get_attribute("placeholder")
    assert placeholder == "name, address, hostname"
    # The placeholder's rendered width in the input's own font, against the room the input has.
    needed, room = search.evaluate("""input => {
        const style = getComputedStyle(input);
        const canvas = document.createElement("canvas").getContext("2d");
        canvas.font = style.font;
        const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return [canvas.measureText(input.placeholder).width, room];
    }""")
    assert needed <= room, f"the placeholder needs {needed:.0f}px and the box has {room:.0f}px"
    b.assert_clean()


def test_a_selection_survives_filters_and_paging_and_goes_to_the_wizard(browser, operator, db):
    for i in range(30):
        Hypervisor.objects.create(name=f"spare-{i:02d}", address=f"192.0.2.{i + 1}")
    b = browser()
    page = b.login(operator)
    page.goto("/hosts/")
    page.get_by_label("Per page").select_option("25")
    expect(host_rows(page)).to_have_count(25)
    mark_document(page)
    count = page.get_by_text(re.compile(r"^\d+ hosts? selected|^No host selected"))
    expect(count).to_have_text("No host selected")
    expect(page.get_by_role("button", name="New change for selected hosts")).to_be_disabled()

    page.get_by_label("Select spare-00").check()
    expect(count).to_have_text("1 host selected")
    with page.expect_response(re.compile(r"/hosts/\?.*page=2")):
        page.get_by_role("link", name="Next ›").click()
    expect(page.get_by_text("Page 2 of 2", exact=True)).to_be_visible()
    page.get_by_label("Select spare-27").check()
    expect(count).to_have_text("2 hosts selected")
    page.get_by_role("link", name="‹ Previous").click()
    expect(page.get_by_text("Page 1 of 2", exact=True)).to_be_visible()
    expect(page.get_by_label("Select spare-00")).to_be_checked()

    # Another filter: spare-27 is shown (and still ticked), spare-00 is not but stays selected.
    page.get_by_role("searchbox", name="Search").press_sequentially("spare-2", delay=30)
    expect(host_rows(page)).to_have_count(10)
    expect(page.get_by_label("Select spare-27")).to_be_checked()
    expect(count).to_have_text("2 hosts selected")
    expect(page.get_by_text("(1 shown by this filter)")).to_be_visible()

    page.get_by_label("Select all 10 hosts on this page").check()
    expect(count).to_have_text("11 hosts selected")
    for i in range(20, 30):
        expect(page.get_by_label(f"Select spare-{i}")).to_be_checked()

    page.get_by_role("searchbox", name="Search").fill("")
    page.get_by_role("searchbox", name="Search").press("Enter")
    expect(host_rows(page)).to_have_count(25)
    page.get_by_role("button", name="Select all 30 matching hosts").click()
    expect(count).to_have_text("30 hosts selected")
    expect(page.get_by_label("Select all 25 hosts on this page")).to_be_checked()
    assert same_document(page), "selecting reloaded the page"

    with page.expect_navigation():
        page.get_by_role("button", name="New change for 30 selected hosts").click()
    expect(page).to_have_url(re.compile(r"/changes/new/\?"))
    assert sorted(wizard_picked_hosts(page)) == [f"spare-{i:02d}" for i in range(30)]

    page.get_by_label("Title").focus()
    b.assert_clean()
    page.goto("/hosts/")
    expect(host_row(page, "spare-00")).to_be_visible()
    expect(count).to_have_text("30 hosts selected")  # kept until cleared
    page.get_by_role("button", name="Clear selection").click()
    expect(count).to_have_text("No host selected")
    b.assert_clean()
