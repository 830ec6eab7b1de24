"""The VF pages: every VF's settings, driver, guest and drift on the host and NIC pages, the NIC's
libvirt pools, and the fleet-wide VF usage page (filters, free VFs per PF, htmx, roles, queries)."""

import pytest
from django.urls import reverse
from django.utils import timezone

from hosts.intents import record_intent
from hosts.models import Hypervisor, Label, LibvirtNetwork, Nic, VirtualFunction

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
USAGE_QUERIES = 11  # session, user, 2 permissions, the label filter, labels and drivers of the form, 2 counts, 2 pages


def make_host(name, *, label="", numvfs=4, guests=None, pf="eno49", numa=0):
    host = Hypervisor.objects.create(name=name, address="127.0.0.1", status="reachable",
                                     facts_refreshed_at=timezone.now())
    if label:
        host.labels.add(Label.objects.get_or_create(name=label)[0])
    nic = Nic.objects.create(host=host, name=pf, pci_address="0000:04:00.0", driver="igb", sriov_totalvfs=7,
                             sriov_numvfs=numvfs, numa_node=numa, local_cpulist="0-15,32-47")
    for index in range(numvfs):
        VirtualFunction.objects.create(
            nic=nic, index=index, pci_address=f"0000:05:10.{index}", netdev=f"{pf}v{index}", driver="igbvf",
            guest=(guests or {}).get(index, ""), admin_mac="00:00:00:00:00:00", vlan=0, qos=0, spoofchk=True,
            trust=False, link_state="auto", max_tx_rate=0, min_tx_rate=0)
    return host, nic


def test_the_host_and_nic_pages_show_every_vf_setting_its_guest_and_drift(client_for, viewer):
    host, nic = make_host("hv1", guests={2: "web-1"})
    VirtualFunction.objects.filter(nic=nic, index=1).update(
        vlan=100, qos=3, trust=True, spoofchk=False, admin_mac="02:11:22:33:44:55", link_state="enable",
        max_tx_rate=1000, min_tx_rate=100, driver="vfio-pci", driver_override="vfio-pci", netdev="",
        persisted_settings={"vlan": 100}, persisted_driver="vfio-pci")
    record_intent(host.pk, "vf_config", "0000:04:00.0#1", {"vlan": 200, "persisted": True}, "VF 1: VLAN 200")
    Hypervisor.objects.filter(pk=host.pk).update(drifted=True, drift_reasons=[
        "eno49 VF 1 (0000:04:00.0#1) has VLAN 100; the console applied VLAN 200."])
    client = client_for(viewer)
    page = client.get(reverse("hosts:detail", args=[host.pk])).content.decode()
    row = page[page.index('<td class="mono">0000:05:10.1</td>'):].split("</tr>")[0]
    for text in ("vfio-pci", "(override vfio-pci)", "02:11:22:33:44:55", ">100<", ">3<", ">off<", ">on<",
                 "enable", "max 1000, min 100", "VF 1: VLAN 200", "drifted", "settings"):
        assert text in row, text
    other = page[page.index('<td class="mono">0000:05:10.2</td>'):].split("</tr>")[0]
    assert "web-1" in other and "drifted" not in other

    LibvirtNetwork.objects.create(host=host, name="sriov-eno49", mode="hostdev", pfs=["eno49"], active=True,
                                  autostart=True, vf_pool=True, managed=True, guests=["web-1", "db-2"],
                                  vf_pci=["0000:05:10.0", "0000:05:10.2"])
    LibvirtNetwork.objects.create(host=host, name="default", mode="nat", active=True, autostart=True)
    nic_page = client.get(reverse("hosts:nic", args=[nic.pk])).content.decode()
    pools = nic_page[nic_page.index('id="nic-pools"'):]
    assert "sriov-eno49" in pools and "web-1, db-2" in pools and "SR-IOV Console" in pools
    assert "default" not in pools  # a NAT network hands out no VF of this NIC
    assert "CPUs 0-15,32-47" in nic_page and "drifted" in nic_page
    host_page = client.get(reverse("hosts:detail", args=[host.pk])).content.decode()
    networks = host_page[host_page.index('id="networks-title"'):]
    assert "sriov-eno49" in networks and "yes (2 VFs)" in networks and "default" in networks


def usage(client, status=200, **params):
    response = client.get(reverse("hosts:vf_usage"), params)
    assert response.status_code == status, response.content[:300]
    return response.content.decode()


def vf_rows(page) -> list[str]:
    table = page[page.index('class="vf-usage"'):page.index('id="vf-free-title"')]
    return [row.split("</td>")[0].split(">")[-2].split("<")[0] + "/" + row.split('class="num">')[1].split("<")[0]
            for row in table.split("<tr>")[2:]]


def test_vf_usage_lists_every_vf_filters_and_counts_the_free_ones(client_for, viewer):
    make_host("hv1", label="rack-1", guests={0: "web-1", 1: "db-1"})
    make_host("hv2", label="rack-2", numvfs=2, pf="eno50", guests={1: "web-2"})
    client = client_for(viewer)
    page = usage(client)
    assert vf_rows(page) == ["hv1/0", "hv1/1", "hv1/2", "hv1/3", "hv2/0", "hv2/1"]
    assert "6 VFs" in page
    free = page[page.index('id="vf-free-title"'):]
    assert '<td class="num">4</td><td class="num">2</td><td class="num">2</td>' in free  # hv1: 4 VFs, 2 used, 2 free
    assert '<td class="num">2</td><td class="num">1</td><td class="num">1</td>' in free

    assert vf_rows(usage(client, in_use="yes")) == ["hv1/0", "hv1/1", "hv2/1"]
    assert vf_rows(usage(client, in_use="no")) == ["hv1/2", "hv1/3", "hv2/0"]
    assert vf_rows(usage(client, guest="web")) == ["hv1/0", "hv2/1"]
    assert vf_rows(usage(client, label="rack-2")) == ["hv2/0", "hv2/1"]
    assert vf_rows(usage(client, pf="eno49", host="hv")) == ["hv1/0", "hv1/1", "hv1/2", "hv1/3"]
    VirtualFunction.objects.filter(nic__host__name="hv2", index=0).update(driver="vfio-pci")
    assert vf_rows(usage(client, driver="vfio-pci")) == ["hv2/0"]
    filtered = usage(client, label="rack-2")
    assert "hv1" not in filtered[filtered.index('id="vf-free-title"'):]


def test_vf_usage_answers_htmx_with_the_partial_and_bad_filters_with_400(client_for, viewer):
    make_host("hv1")
    client = client_for(viewer)
    partial = client.get(reverse("hosts:vf_usage"), {"in_use": "no"}, **HTMX).content.decode()
    assert partial.startswith("{% comment %}") is False and "<html" not in partial and 'id="vf-usage"' in partial
    assert "VF usage" in usage(client)  # the full page has the heading and the menu entry
    assert "Select a valid choice" in usage(client, status=400, label="no-such-label")


def test_vf_usage_needs_a_login_and_its_query_count_does_not_grow(client, client_for, viewer,
                                                                   django_assert_max_num_queries):
    assert client.get(reverse("hosts:vf_usage")).status_code == 302
    make_host("hv1", label="r", guests={0: "g"})
    signed_in = client_for(viewer)
    with django_assert_max_num_queries(USAGE_QUERIES):
        usage(signed_in, label="r")
    for n in range(2, 12):
        make_host(f"hv{n}", label="r", guests={0: "g"})
    with django_assert_max_num_queries(USAGE_QUERIES):
        usage(signed_in, label="r")
