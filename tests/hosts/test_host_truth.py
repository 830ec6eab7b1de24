"""Discovery stores the host as it is (the real agent's inventory of simfleet scenario profiles),
and the host page, the NIC page and the API show it: bonds, addresses, the management connection,
other boot configuration, PFs without a network interface, the firmware's IOMMU, guests that start
at boot, the boot configuration."""

import pytest
from django.urls import reverse

from hosts import discovery
from hosts.models import Hypervisor
from simfleet.host import SimHost

from .pages_fleet import inventory_result

pytestmark = pytest.mark.django_db


def discovered(profile, name=None):
    sim = SimHost(name or profile, profile, vf_delay=0)
    sim.boot()
    host = Hypervisor.objects.create(name=name or profile, address="127.0.0.1")
    assert discovery.apply_result(host.pk, inventory_result(sim, 0)).kind == "ok"
    return Hypervisor.objects.get(pk=host.pk), sim


def page(client, host):
    response = client.get(reverse("hosts:detail", args=[host.pk]))
    assert response.status_code == 200
    return response.content.decode()


def nic_page(client, nic):
    response = client.get(reverse("hosts:nic", args=[nic.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_discovery_stores_links_and_the_pages_show_the_management_pf(client_for, viewer):
    host, _sim = discovered("dl360g9-mgmt-on-pf")
    eno49 = host.nics.get(name="eno49")
    assert eno49.link["management"] is True and eno49.link["default_route"] is True
    assert eno49.link["addresses"] == [{"dev": "eno49", "address": "10.10.0.5/16"}]
    assert host.nics.get(name="eno50").link["management"] is False
    client = client_for(viewer)
    text = page(client, host)
    assert "carries the management SSH connection" in text and "10.10.0.5/16 (eno49)" in text
    text = nic_page(client, eno49)
    assert "Carries the management SSH connection</dt><dd><span class=\"badge bad\">yes</span>" in text
    assert "Link drops on a VF change</dt><dd>yes, for about 3 s" in text


def test_a_bonded_pf_shows_its_bond_bridge_and_addresses(client_for, viewer):
    host, _sim = discovered("dl360g9-bond")
    eno49 = host.nics.get(name="eno49")
    assert eno49.link["master"] == {"name": "bond0", "kind": "bond"}
    text = nic_page(client_for(viewer), eno49)
    assert 'bond <span class="mono">bond0</span>, under bridge <span class="mono">br0</span>' in text
    assert '<span class="mono">192.168.50.10/24</span> on <span class="mono">br0</span>' in text
    assert "in bond bond0" in page(client_for(viewer), host)


def test_other_boot_configuration_is_stored_and_shown_with_what_take_over_does(client_for, viewer):
    host, _sim = discovered("dl360g9-foreign-udev")
    assert host.other_vf_config[0]["path"] == "/etc/udev/rules.d/igb.rules"
    eno49 = host.nics.get(name="eno49")
    assert eno49.other_config[0]["counts"]["0000:04:00.0"] == 7
    text = page(client_for(viewer), host)
    assert "/etc/udev/rules.d/igb.rules:1" in text
    assert "eno49: 7, eno50: 7, eno51: 7, eno52: 7" in text
    assert "comments its line out in /etc/udev/rules.d/igb.rules (backed up)" in text
    assert "other configuration" in text
    assert "Other configuration" in nic_page(client_for(viewer), eno49)


def test_a_pf_without_a_network_interface_is_a_nic_row_and_has_its_page(client_for, viewer):
    host, _sim = discovered("x710-vfio-pf")
    pf = host.nics.get(pci_address="0000:3b:00.1")
    assert (pf.name, pf.binding_state, pf.sriov_totalvfs, pf.present) == ("", "vfio", 64, True)
    assert host.sriov_nics == 2  # counted with the other X710 port
    client = client_for(viewer)
    assert "bound to vfio-pci (handed to a guest or to DPDK): no network interface" in page(client, host)
    text = nic_page(client, pf)
    assert "<h1>x710-vfio-pf / 0000:3b:00.1" in text and "bound to vfio-pci" in text
    # a repeat discovery finds the same row, nothing new
    before = list(host.nics.values_list("pk", "pci_address"))
    assert discovery.apply_result(host.pk, inventory_result(_sim, 0)).kind == "ok"
    assert list(host.nics.values_list("pk", "pci_address")) == before


def test_sriov_off_in_the_firmware_is_not_capable_now_with_the_reason(client_for, viewer):
    sim = SimHost("offfw", "dl360g9", vf_delay=0)
    sim.faults["sriov_off_in_firmware"] = {}  # what FleetHost.inject sets
    sim.boot()
    host = Hypervisor.objects.create(name="offfw", address="127.0.0.1")
    assert discovery.apply_result(host.pk, inventory_result(sim, 0)).kind == "ok"
    eno49 = host.nics.get(name="eno49")
    assert eno49.sriov_totalvfs == 0 and "SR-IOV is off in the BIOS/UEFI" in eno49.not_capable_reason
    assert "not capable now" in page(client_for(viewer), host)
    assert "Not capable now: sriov_totalvfs is 0" in nic_page(client_for(viewer), eno49)


def test_firmware_iommu_guests_at_boot_and_boot_configuration_on_the_host_page(client_for, viewer):
    client = client_for(viewer)
    novtd, _sim = discovered("dl360g9-novtd")
    text = page(client, novtd)
    assert ('VT-d (DMAR) in firmware</dt><dd><span class="badge bad">no</span> — enable VT-d / AMD-Vi in the BIOS'
            in text)
    intel, _sim = discovered("dl360g9")
    assert 'VT-d (DMAR) in firmware</dt><dd><span class="badge ok">yes</span>' in page(client, intel)
    guests, _sim = discovered("dl360g9-guests")
    text = page(client, guests)
    assert "vm-autostart <span class=\"muted\">(stopped, autostart: eno49 VF 2, hostdev)</span>" in text
    assert "vm-macvtap <span class=\"muted\">(0000:04:11.4 (macvtap eno49v3 (passthrough)))</span>" in text
    vf = guests.nics.get(name="eno49").vfs.get(index=3)
    assert (vf.guest, vf.used_via) == ("vm-macvtap", "vm-macvtap: macvtap eno49v3 (passthrough)")
    cx5, _sim = discovered("cx5")
    assert cx5.boot_config["bls"] is True
    text = page(client, cx5)
    assert "Boot Loader Specification entries" in text and "take their arguments from" in text


def test_the_api_shows_the_host_truth_read_only(client_for, viewer):
    host, _sim = discovered("x710-vfio-pf")
    client = client_for(viewer)
    body = client.get(reverse("api:hypervisor-detail", args=[host.pk])).json()
    assert body["iommu_firmware"] == {"table": "DMAR", "present": True, "acpi_tables_readable": True}
    assert body["boot_config"]["bls"] is False and body["defined_guests"] == [] and body["other_vf_config"] == []
    nics = client.get(reverse("api:nic-list") + f"?host={host.pk}").json()["results"]
    pf = next(n for n in nics if n["pci_address"] == "0000:3b:00.1")
    assert (pf["name"], pf["binding_state"], pf["link"], pf["other_config"]) == ("", "vfio", None, [])
    port = next(n for n in nics if n["name"] == "enp59s0f0")
    assert port["link"]["management"] is False and port["persisted_conflict"] is False


def test_the_api_takes_the_new_set_vfs_flags_and_refuses_bad_ones(operator, db):
    from tests.api.conftest import bearer_client

    host, _sim = discovered("dl360g9-guests")
    api = bearer_client(operator)
    body = {"title": "fewer VFs", "reason": "guest moved", "targets": {"host_ids": [host.pk]},
            "operations": [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 3,
                            "allow_autostart_impact": True}], "policy": {"allow_guest_impact": True}}
    response = api.post("/api/v1/changes/", body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["operations"][0]["allow_autostart_impact"] is True
    body["operations"][0]["allow_autostart_impact"] = "sure"
    response = api.post("/api/v1/changes/", body, format="json")
    assert response.status_code == 400
    assert "allow_autostart_impact must be true or false" in str(response.json()["error"]["fields"])
