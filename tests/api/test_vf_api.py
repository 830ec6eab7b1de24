"""The VF operations and VF facts through the REST API: the same services, validation and
permissions as the wizard; VF settings, libvirt networks and VF usage filters in the hosts API."""

import pytest

from changes.models import ChangeRequest
from hosts.models import LibvirtNetwork, VirtualFunction
from tests.changes.conftest import make_credential, make_host

from .conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(db):
    nics = [("eno49", "0000:04:00.0", 4, {"guests": {1: "web-1"}})]
    host = make_host("hv-a", credential=make_credential(), nics=nics, labels=["rack-1"])
    VirtualFunction.objects.filter(nic__host=host).update(vlan=0, trust=False, driver="igbvf")
    return host


def body(host, operations, **extra):
    return {"title": "VF pools for rack 1", "reason": "guests need tagged VFs", "targets": {"host_ids": [host.pk]},
            "operations": operations, **extra}


OPS = [
    {"op": "vf_driver", "pf": "eno49", "vfs": "2-3", "driver": "vfio-pci"},
    {"op": "vf_config", "pf": "eno49", "vfs": "2-3", "vlan": 100, "trust": True},
    {"op": "libvirt_network", "name": "sriov-eno49", "pf": "eno49"},
]


def test_an_operator_creates_a_vf_change_and_reads_its_plan_in_words(host, operator, api_for):
    api = api_for(operator)
    response = api.post("/api/v1/changes/", body(host, OPS), format="json")
    assert response.status_code == 201, response.content
    change = response.json()
    assert not change["plan_blocked"]
    stored = ChangeRequest.objects.get(pk=change["id"]).operations
    assert stored[1] == {"op": "vf_config", "pf": "eno49", "vfs": "2-3", "vlan": 100, "trust": True, "persist": True}
    plan = api.get(f"/api/v1/changes/{change['id']}/plan/").json()
    texts = [a["text"] for a in plan["items"][0]["actions"]]
    assert texts == [
        "eno49#2-3: igbvf → vfio-pci; persisted",
        "eno49#2-3: VLAN none → 100, trust off → on; persisted",
        "libvirt network sriov-eno49 over eno49: define it (forward mode hostdev over eno49, managed), start it, "
        "autostart it",
    ]


def test_bad_vf_input_is_a_400_naming_the_field_and_nothing_is_written(host, operator, api_for):
    api = api_for(operator)
    before = ChangeRequest.objects.count()
    for op, words in (({"op": "vf_config", "pf": "eno49", "vfs": "0", "vlan": 4096}, "vlan must be a whole number"),
                      ({"op": "vf_config", "pf": "eno49", "vfs": "x", "trust": True}, "is not a VF index"),
                      ({"op": "vf_driver", "pf": "eno49", "vfs": "0", "driver": "$(reboot)"}, "driver must be"),
                      ({"op": "libvirt_network", "name": "x" * 51, "pf": "eno49"}, "name must be 1-50")):
        response = api.post("/api/v1/changes/", body(host, [op]), format="json")
        assert response.status_code == 400, response.content
        assert words in str(error_of(response)["fields"]), error_of(response)
    assert ChangeRequest.objects.count() == before


def test_a_guest_held_vf_blocks_the_plan_unless_the_policy_allows_guest_impact(host, operator, api_for):
    api = api_for(operator)
    op = [{"op": "vf_driver", "pf": "eno49", "vfs": "1", "driver": "vfio-pci"}]
    blocked = api.post("/api/v1/changes/", body(host, op), format="json").json()
    assert blocked["plan_blocked"]
    allowed = api.post("/api/v1/changes/", body(host, op, policy={"allow_guest_impact": True}), format="json").json()
    assert not allowed["plan_blocked"]


def test_a_viewer_reads_vf_facts_but_cannot_create_a_change(host, viewer, api_for):
    api = api_for(viewer)
    assert api.post("/api/v1/changes/", body(host, OPS), format="json").status_code == 403
    VirtualFunction.objects.filter(nic__host=host, index=2).update(vlan=100, trust=True, driver="vfio-pci",
                                                                   driver_override="vfio-pci",
                                                                   persisted_settings={"vlan": 100})
    LibvirtNetwork.objects.create(host=host, name="sriov-eno49", mode="hostdev", pfs=["eno49"], active=True,
                                  autostart=True, vf_pool=True, managed=True, guests=["web-1"])
    vfs = api.get("/api/v1/vfs/", {"host": host.pk, "driver": "vfio-pci"}).json()["results"]
    assert [(v["index"], v["vlan"], v["trust"], v["driver_override"], v["persisted_settings"]) for v in vfs] == [
        (2, 100, True, "vfio-pci", {"vlan": 100})]
    used = api.get("/api/v1/vfs/", {"label": "rack-1", "in_use": "true"}).json()["results"]
    assert [(v["index"], v["guest"]) for v in used] == [(1, "web-1")]
    assert api.get("/api/v1/vfs/", {"label": "rack-2"}).json()["results"] == []
    assert len(api.get("/api/v1/vfs/", {"pf": "eno49", "in_use": "false"}).json()["results"]) == 3
    networks = api.get("/api/v1/libvirt-networks/", {"host": host.pk, "vf_pool": "true"}).json()["results"]
    assert [(n["name"], n["pfs"], n["guests"], n["managed"]) for n in networks] == [
        ("sriov-eno49", ["eno49"], ["web-1"], True)]
    nic = api.get("/api/v1/nics/", {"host": host.pk}).json()["results"][0]
    assert {"numa_node", "local_cpulist", "persisted_mtu", "sriov_drivers_autoprobe"} <= set(nic)
    assert (nic["vfs_free"], nic["vfs_in_use"]) == (3, 1)  # the free VFs per PF
