"""Fleet management in a real browser: an operator imports hosts from a file, they are discovered
at once and the hosts table follows live; an administrator accepts a host key and refreshes the
host, and the whole host page (header, Discovery card, NICs) follows the result without a reload.

Debian's chromium, the live server, a real Celery worker, simfleet hosts over real SSH.
"""

import re

import pytest
from playwright.sync_api import expect

from hosts.credentials import create_credential
from hosts.models import Hypervisor
from tests.conftest import ensure_role_groups

from .conftest import start_fleet
from .pages import host_row, mark_document, nav, same_document, section, table_with

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMES = ("imp-a", "imp-b")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = start_fleet(tmp_path_factory, NAMES, vf_delay=0.2)
    yield sim
    sim.stop()


@pytest.fixture
def fleet_key(transactional_db, fleet):
    """The administrator registered the fleet's SSH key as a credential beforehand."""
    ensure_role_groups()
    for sim in fleet.hosts:
        sim.clear_faults()
    return create_credential("fleet-key", fleet.client_private_key_path.read_text())


def inventory_csv(fleet) -> bytes:
    lines = ["name,address,port,username,labels"]
    lines += [f"{s.name},{s.address},{s.port},{s.username},rack-e" for s in fleet.hosts]
    return ("\n".join(lines) + "\n").encode()


def test_operator_imports_hosts_and_they_are_discovered_live(browser, celery_worker, fleet, fleet_key, operator,
                                                            admin_user, screenshots):
    for sim in fleet.hosts:
        sim.inject("latency", seconds=2)  # slow enough to see "Discovering…" turn into the result
    ops = browser()
    page = ops.login(operator)
    nav(page, "Hosts")
    with page.expect_navigation():
        page.get_by_role("link", name="Import hosts").click()
    page.get_by_label("Inventory file").set_input_files(
        {"name": "rack-e.csv", "mimeType": "text/csv", "buffer": inventory_csv(fleet)})
    page.get_by_label("Default credential").select_option(label="fleet-key")
    with page.expect_navigation():
        page.get_by_role("button", name="Preview").click()

    preview = table_with(page, "Problems")
    for name in NAMES:
        row = preview.get_by_role("row").filter(has_text=name)
        expect(row).to_contain_text("fleet-key (default)")
        expect(row).to_contain_text("ok")
    screenshots.shot(page, "import_preview")
    with page.expect_navigation():
        page.get_by_role("button", name="Create 2 hosts").click()

    expect(page.get_by_text("Imported 2 hosts; discovering them over SSH now.")).to_be_visible()
    mark_document(page)
    for name in NAMES:
        expect(host_row(page, name)).to_contain_text("Discovering…")
    # No trust-on-first-use: each host's first key now waits for an administrator.
    for name in NAMES:
        expect(host_row(page, name)).to_contain_text("Host key pending", timeout=30_000)
        expect(host_row(page, name)).not_to_contain_text("Discovering…")
    assert same_document(page), "the hosts table did not follow the discovery in place"

    # --- The administrator checks and accepts one host's key, then refreshes the host. ---
    adm = browser()
    page = adm.login(admin_user)
    host = Hypervisor.objects.get(name="imp-a")
    page.goto(host.get_absolute_url())
    expect(page.get_by_role("heading", level=1)).to_contain_text("Host key pending")
    with page.expect_navigation():
        page.get_by_role("link", name="Review host key").click()
    page.get_by_label("Reason").fill("fingerprint checked on the console of imp-a")
    with page.expect_navigation():
        page.get_by_role("button", name="Accept key").click()
    page.goto(host.get_absolute_url())
    mark_document(page)
    header = page.get_by_role("heading", level=1)
    expect(header).to_contain_text("Not yet discovered")
    expect(page.get_by_text("No network interface discovered yet.")).to_be_visible()

    page.get_by_role("button", name="Refresh").click()
    discovery = section(page, "Discovery")
    expect(discovery).to_contain_text("Discovery running: connecting over SSH")
    expect(discovery.get_by_role("button", name="Refresh")).to_be_disabled()
    # The whole page follows the result: the header badge, the card, the NIC table.
    expect(header).to_contain_text("Reachable", timeout=30_000)
    expect(discovery).not_to_contain_text("Discovery running")
    expect(discovery).not_to_contain_text("Reload the page")
    nics = table_with(page, "Persisted")
    expect(nics.get_by_role("row").filter(has_text="eno49").first).to_contain_text("0/7")
    expect(page.get_by_text(re.compile(r"^Ubuntu 22\.04"))).to_be_visible()
    assert same_document(page), "the host page was reloaded instead of following the discovery"
    screenshots.shot(page, "host_detail")

    ops.assert_clean()
    adm.assert_clean()
    screenshots.publish()
