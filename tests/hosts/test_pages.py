"""Host pages: list (filters, search, sort, pagination, htmx partial), detail, NIC, add/edit,
import, refresh. The data is the real agent inventory of simulated hosts (tests/hosts/pages_fleet.py).
"""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.models import AuditEvent
from hosts.models import Hypervisor, Label, Nic
from tests.support.callbacks import service_callbacks

from .pages_fleet import DRIFTED, KEY_MISMATCH, KEY_PENDING, UNREACHABLE, build_fleet

HTMX = {"HTTP_HX_REQUEST": "true"}

# Queries per page, whatever the fleet size (session + user + permissions are part of each).
LIST_QUERIES = 9
DETAIL_QUERIES = 11  # with the intents the console applied and the libvirt networks
NIC_QUERIES = 8  # with the intents the console applied and the libvirt networks (its VF pools)


@pytest.fixture
def fleet(db):
    return build_fleet(10)


def names(response) -> list[str]:
    return re.findall(r'<a href="/hosts/\d+/">([^<]+)</a>', response.content.decode())


def list_names(client, **params) -> list[str]:
    response = client.get(reverse("hosts:list"), params)
    assert response.status_code == 200, response.content[:500]
    return names(response)


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url_name,args", [
    ("hosts:list", []), ("hosts:detail", [1]), ("hosts:nic", [1]), ("hosts:add", []), ("hosts:import", []),
])
def test_anonymous_is_sent_to_login(client, db, url_name, args):
    response = client.get(reverse(url_name, args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_viewer_cannot_add_import_edit_or_refresh(client_for, viewer, fleet):
    client = client_for(viewer)
    host = fleet[0]
    assert client.get(reverse("hosts:add")).status_code == 403
    assert client.post(reverse("hosts:add"), {"name": "x", "address": "x"}).status_code == 403
    assert client.get(reverse("hosts:import")).status_code == 403
    assert client.get(reverse("hosts:edit", args=[host.pk])).status_code == 403
    assert client.post(reverse("hosts:refresh", args=[host.pk]), **HTMX).status_code == 403
    assert not Hypervisor.objects.filter(name="x").exists()
    host.refresh_from_db()
    assert host.discovery_requested_at is None


def test_viewer_sees_pages_without_operator_controls(client_for, viewer, fleet):
    client = client_for(viewer)
    body = client.get(reverse("hosts:list")).content.decode()
    assert "Add host" not in body and 'name="hosts"' not in body
    detail = client.get(reverse("hosts:detail", args=[fleet[0].pk])).content.decode()
    assert "Refresh</button>" not in detail


# ---------------------------------------------------------------------------------------------
# List: filters, search, sort, pagination, htmx
# ---------------------------------------------------------------------------------------------


def test_list_shows_every_host_with_its_figures(client_for, viewer, fleet):
    response = client_for(viewer).get(reverse("hosts:list"))
    body = response.content.decode()
    assert response.status_code == 200 and "<html" in body
    assert names(response) == [h.name for h in fleet]
    # hv000 is a DL360 Gen9: four I350 ports with 7 VFs each, none configured.
    row = body[body.index(">hv000<"):body.index(">hv001<")]
    assert "Ubuntu 22.04" in row and "5.15.0-91-generic" in row
    assert '<td class="num">4</td>' in row and "0/28" in row
    # The unreachable host's reason is in the badge's tooltip.
    unreachable = fleet[UNREACHABLE]
    assert re.search(r'title="Cannot reach 127\.0\.10\.4:22 over SSH[^"]*">Unreachable<', body), unreachable


def test_htmx_request_gets_the_table_partial_only(client_for, viewer, fleet):
    response = client_for(viewer).get(reverse("hosts:list"), {"status": "reachable"}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body and "<form id=\"host-filters\"" not in body
    assert 'id="host-table"' in body
    shown = names(response)
    assert shown and all(Hypervisor.objects.get(name=n).status == "reachable" for n in shown)


def test_filter_form_is_wired_for_htmx_and_plain_get(client_for, viewer, fleet):
    body = client_for(viewer).get(reverse("hosts:list")).content.decode()
    start = body.index('<form id="host-filters"')
    form = body[start:body.index("</form>", start)]
    assert 'method="get"' in form and 'action="/hosts/"' in form
    assert 'hx-get="/hosts/"' in form and 'hx-target="#host-table"' in form and 'hx-push-url="true"' in form
    # Selects on change, the search box while typing (not on blur: a click elsewhere must not reload it).
    assert ('hx-trigger="submit, change from:(#host-filters select), input changed delay:300ms '
            'from:(#host-filters input[name=q])"') in form
    for field in ("q", "label", "status", "driver", "sriov", "iommu", "drifted", "key", "per_page"):
        assert f'name="{field}"' in form, field


def test_each_filter_narrows_to_the_right_hosts(client_for, viewer, fleet):
    client = client_for(viewer)
    by_name = {h.name: h for h in Hypervisor.objects.all()}
    everyone = sorted(by_name)

    def expect(params, predicate):
        wanted = sorted(n for n in everyone if predicate(by_name[n]))
        got = list_names(client, **params)
        assert got == wanted, (params, got, wanted)
        assert 0 < len(wanted) < len(everyone), params  # the filter really narrows

    drivers = {h.name: set(h.nics.filter(present=True).values_list("driver", flat=True))
               for h in by_name.values()}
    labels = {h.name: set(h.labels.values_list("name", flat=True)) for h in by_name.values()}
    sriov = {h.name: h.nics.filter(present=True, sriov_totalvfs__gt=0).exists() for h in by_name.values()}

    expect({"status": "reachable"}, lambda h: h.status == "reachable")
    expect({"status": "unreachable"}, lambda h: h.status == "unreachable")
    expect({"label": "prod"}, lambda h: "prod" in labels[h.name])
    expect({"driver": "mlx5_core"}, lambda h: "mlx5_core" in drivers[h.name])
    expect({"driver": "tg3"}, lambda h: "tg3" in drivers[h.name])
    expect({"sriov": "yes"}, lambda h: sriov[h.name])
    expect({"sriov": "no"}, lambda h: not sriov[h.name])
    expect({"iommu": "yes"}, lambda h: h.iommu_active is True)
    expect({"iommu": "no"}, lambda h: h.iommu_active is False)
    expect({"drifted": "yes"}, lambda h: h.drifted)
    expect({"drifted": "no"}, lambda h: not h.drifted)
    expect({"key": "pending"}, lambda h: h.name == fleet[KEY_PENDING].name)
    expect({"key": "mismatch"}, lambda h: h.name == fleet[KEY_MISMATCH].name)
    # Combined: filters on two related tables must not multiply rows or figures.
    got = list_names(client, label="rack-a", driver="igb")
    assert got == sorted(n for n in everyone if "rack-a" in labels[n] and "igb" in drivers[n])


def test_figures_stay_right_when_filtering_by_driver_and_label(client_for, viewer, fleet):
    response = client_for(viewer).get(reverse("hosts:list"), {"driver": "igb", "label": "rack-a"})
    body = response.content.decode()
    assert "0/28" in body  # hv000 (DL360, rack-a): 4×7 VFs, not 4×7 per label or per matching NIC


def test_search_matches_name_address_and_hostname(client_for, viewer, fleet):
    client = client_for(viewer)
    assert list_names(client, q="hv00") == [h.name for h in fleet]
    assert list_names(client, q="hv005") == ["hv005"]
    assert list_names(client, q="127.0.10.8") == ["hv007"]
    host = Hypervisor.objects.get(name="hv002")
    assert host.hostname
    assert "hv002" in list_names(client, q=host.hostname.upper())
    assert list_names(client, q="no-such-host") == []


def test_sort_by_each_column(client_for, viewer, fleet):
    client = client_for(viewer)
    hosts = list(Hypervisor.objects.all())
    assert list_names(client, sort="-name") == sorted((h.name for h in hosts), reverse=True)
    by_kernel = list_names(client, sort="kernel")
    assert [Hypervisor.objects.get(name=n).kernel for n in by_kernel] == sorted(h.kernel for h in hosts)
    by_status = list_names(client, sort="status")
    assert [Hypervisor.objects.get(name=n).status for n in by_status] == sorted(h.status for h in hosts)
    by_vfs = list_names(client, sort="-vfs")
    configured = {h.pk: sum(n.sriov_numvfs or 0 for n in h.nics.filter(present=True, sriov_totalvfs__gt=0))
                  for h in hosts}
    values = [configured[Hypervisor.objects.get(name=n).pk] for n in by_vfs]
    assert values == sorted(values, reverse=True) and values[0] > 0
    assert list_names(client, sort="discovered")  # sorts without error
    assert client.get(reverse("hosts:list"), {"sort": "password"}).status_code == 400


def test_pagination_and_page_size(client_for, viewer, db):
    build_fleet(60)
    client = client_for(viewer)
    first = client.get(reverse("hosts:list"))
    assert len(names(first)) == 50 and "page 1 of 2" in first.content.decode()
    second = list_names(client, page=2)
    assert second == [f"hv{i:03d}" for i in range(50, 60)]
    assert len(list_names(client, per_page=25)) == 25
    assert len(list_names(client, per_page=100)) == 60
    assert len(list_names(client, per_page=7)) == 50  # not a choice: the default
    assert list_names(client, page="999") == second  # out of range: the last page, not an error
    body = client.get(reverse("hosts:list"), {"status": "reachable", "per_page": 25}).content.decode()
    assert "page=2" in body and "status=reachable" in body  # the page links keep the filters


def test_bad_filter_value_is_a_400_not_a_500(client_for, viewer, fleet):
    response = client_for(viewer).get(reverse("hosts:list"), {"status": "bogus", "label": "nope"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_bulk_select_posts_host_ids_to_the_change_wizard_when_it_exists(client_for, operator, fleet):
    from django.urls import NoReverseMatch

    body = client_for(operator).get(reverse("hosts:list")).content.decode()
    try:
        wizard = reverse("changes:new")
    except NoReverseMatch:
        assert 'form="bulk-change"' not in body  # no wizard yet: no dangling form
        return
    assert f'<form id="bulk-change" method="get" action="{wizard}"' in body
    assert f'name="hosts" value="{fleet[0].pk}" form="bulk-change"' in body


# ---------------------------------------------------------------------------------------------
# Detail and NIC pages
# ---------------------------------------------------------------------------------------------


def test_host_detail_shows_facts_nics_vfs_and_cmdline(client_for, viewer, fleet):
    host = Hypervisor.objects.get(name="hv002")  # DL360 Gen9, IOMMU on, 2 hand-made VFs, one used
    response = client_for(viewer).get(reverse("hosts:detail", args=[host.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    for fact in (host.hostname, host.machine_id, host.kernel, host.boot_id, host.os_name, "update-grub",
                 "vm-hv002-db01"):
        assert fact and fact in body, fact
    # VF 0 is passed through to a guest (vfio-pci, no netdev); VF 1 is a host netdev (igbvf).
    assert "eno49v1" in body and "igbvf" in body and "vfio-pci" in body
    assert "0000:04:10.0" in body and "0000:04:10.4" in body
    # Present NICs before gone ones; IOMMU arguments are both running and configured.
    assert '<span class="token both">intel_iommu=on</span>' in body
    assert '<span class="token bootloader">BOOT_IMAGE=' in body
    assert host.grub_file in body


def test_cmdline_tokens_in_one_and_not_the_other_are_highlighted(client_for, viewer, fleet):
    host = Hypervisor.objects.get(name="hv000")
    Hypervisor.objects.filter(pk=host.pk).update(
        grub_cmdline_default=host.grub_cmdline_default + " intel_iommu=on iommu=pt",
        cmdline=host.cmdline + " hugepages=64",
    )
    body = client_for(viewer).get(reverse("hosts:detail", args=[host.pk])).content.decode()
    assert '<span class="token configured-only">intel_iommu=on</span>' in body
    assert '<span class="token running-only">hugepages=64</span>' in body
    assert "differs from the configuration" in body


def test_gone_nics_are_shown_as_gone_after_present_ones(client_for, viewer, fleet):
    host = fleet[0]
    nic = host.nics.get(name="eno1")
    from django.utils import timezone

    Nic.objects.filter(pk=nic.pk).update(present=False, gone_at=timezone.now())
    body = client_for(viewer).get(reverse("hosts:detail", args=[host.pk])).content.decode()
    assert body.index(">eno52<") < body.index(">eno1<")
    assert re.search(r">eno1</a> <span class=\"badge\">gone since \d{4}-", body)


def test_host_key_states_on_the_detail_page(client_for, admin_user, fleet):
    client = client_for(admin_user)
    mismatch = Hypervisor.objects.get(pk=fleet[KEY_MISMATCH].pk)
    body = client.get(reverse("hosts:detail", args=[mismatch.pk])).content.decode()
    assert "presented a different key" in body
    assert mismatch.host_key_fingerprint in body and mismatch.pending_host_key_fingerprint in body
    assert reverse("hosts:key", args=[mismatch.pk]) in body
    pending = Hypervisor.objects.get(pk=fleet[KEY_PENDING].pk)
    body = client.get(reverse("hosts:detail", args=[pending.pk])).content.decode()
    assert "not accepted yet" in body and pending.pending_host_key_fingerprint in body


def test_drift_reasons_on_the_detail_page(client_for, viewer, fleet):
    host = Hypervisor.objects.get(pk=fleet[DRIFTED].pk)
    assert host.drifted
    body = client_for(viewer).get(reverse("hosts:detail", args=[host.pk])).content.decode()
    assert "the console applied 2" in body


def test_nic_detail(client_for, viewer, fleet):
    nic = Nic.objects.get(host__name="hv002", name="eno49")
    response = client_for(viewer).get(reverse("hosts:nic", args=[nic.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    for text in ("0000:04:00.0", "I350", "igb", "7 VFs", "vfio-pci", "eno49v1", "vm-hv002-db01",
                 "not managed"):
        assert text in body, text
    assert client_for(viewer).get(reverse("hosts:nic", args=[999999])).status_code == 404


# ---------------------------------------------------------------------------------------------
# Query counts: the same for 3 hosts and for 30
# ---------------------------------------------------------------------------------------------


def _count(client, url, **extra):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **extra)
    assert response.status_code == 200
    return len(queries)


def _page_counts(client):
    first = Hypervisor.objects.order_by("pk").exclude(status="host_key_pending").first()
    nic = first.nics.filter(sriov_totalvfs__gt=0).first()
    return {
        "list": _count(client, reverse("hosts:list")),
        "list_filtered": _count(client, reverse("hosts:list") + "?label=rack-a&driver=igb&sort=-vfs&q=hv"),
        "list_htmx": _count(client, reverse("hosts:list"), **HTMX),
        "detail": _count(client, reverse("hosts:detail", args=[first.pk])),
        "nic": _count(client, reverse("hosts:nic", args=[nic.pk])),
    }


def test_query_counts_do_not_grow_with_the_fleet(client_for, viewer, db, django_assert_max_num_queries):
    client = client_for(viewer)
    build_fleet(3, prefix="small")
    small = _page_counts(client)
    build_fleet(30, prefix="large")
    Hypervisor.objects.filter(name__startswith="small").delete()
    large = _page_counts(client)
    print("query counts", small, large)
    assert small == large, (small, large)
    first = Hypervisor.objects.order_by("pk").exclude(status="host_key_pending").first()
    nic_url = reverse("hosts:nic", args=[first.nics.first().pk])
    with django_assert_max_num_queries(LIST_QUERIES):
        client.get(reverse("hosts:list"))
    with django_assert_max_num_queries(DETAIL_QUERIES):
        client.get(reverse("hosts:detail", args=[first.pk]))
    with django_assert_max_num_queries(NIC_QUERIES):
        client.get(nic_url)


# ---------------------------------------------------------------------------------------------
# Refresh (discovery request) and its polling status
# ---------------------------------------------------------------------------------------------


def test_refresh_makes_the_whole_host_page_follow_the_discovery_live(client_for, operator, fleet):
    client = client_for(operator)
    host = Hypervisor.objects.get(name="hv003")
    Hypervisor.objects.filter(pk=host.pk).update(status=Hypervisor.Status.UNREACHABLE, status_reason="was down")
    detail = client.get(reverse("hosts:detail", args=[host.pk])).content.decode()
    assert 'hx-trigger="every 2s"' not in detail  # nothing pending: no poller
    assert f'hx-post="{reverse("hosts:refresh", args=[host.pk])}"' in detail and 'hx-target="#host-page"' in detail

    response = client.post(reverse("hosts:refresh", args=[host.pk]), **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    host.refresh_from_db()
    assert host.discovery_requested_at is not None and host.discovery_requested_at > host.last_discovery_at
    # The whole page polls itself (not only the Discovery card), and says the discovery is running.
    page = body[body.index('<div id="host-page"'):]
    assert page.startswith(f'<div id="host-page" hx-get="{reverse("hosts:detail", args=[host.pk])}" '
                           'hx-trigger="every 2s"')
    assert "Discovery running: connecting over SSH" in body and "waiting for a worker" not in body
    assert re.search(r"<button type=\"submit\" disabled[^>]*>Refresh</button>", body)

    polled = client.get(reverse("hosts:detail", args=[host.pk]), **HTMX).content.decode()
    assert "<html" not in polled and 'hx-trigger="every 2s"' in polled

    # A worker records the result (the real discovery code path with the real agent inventory).
    from hosts import discovery
    from simfleet.host import SimHost

    from .pages_fleet import inventory_result

    sim = SimHost(host.name, "dl360g9", vf_delay=0)
    sim.system().write_text("/sys/class/net/eno49/device/sriov_numvfs", "2")
    discovery.apply_result(host.pk, inventory_result(sim, 0))
    done = client.get(reverse("hosts:detail", args=[host.pk]), **HTMX).content.decode()
    assert 'hx-trigger="every 2s"' not in done  # polling stops by itself
    assert "Reload the page" not in done
    # The header badge, the Discovery card and the NIC table all show the new result.
    header = done[done.index("<h1>"):done.index("</h1>")]
    assert ">Reachable<" in header and "Unreachable" not in header
    assert '<span class="badge ok">ok</span>' in done
    nics = done[done.index('id="nics-title"'):]
    assert ">eno49<" in nics and "2/7" in nics and "eno49v1" in nics


def test_refresh_without_htmx_redirects_to_the_detail_page(client_for, operator, fleet):
    host = fleet[1]
    response = client_for(operator).post(reverse("hosts:refresh", args=[host.pk]))
    assert response.status_code == 303 and response["Location"] == host.get_absolute_url()
    host.refresh_from_db()
    assert host.discovery_requested_at is not None


def test_refresh_is_post_only(client_for, operator, fleet):
    assert client_for(operator).get(reverse("hosts:refresh", args=[fleet[0].pk])).status_code == 405


# ---------------------------------------------------------------------------------------------
# Add / edit
# ---------------------------------------------------------------------------------------------


def test_add_host_creates_it_audited(client_for, operator, db):
    response = client_for(operator).post(reverse("hosts:add"), {
        "name": "hv-new01", "address": "10.0.0.5", "port": "22", "username": "",
        "labels_text": "rack-c, prod", "description": "new rack",
    })
    assert response.status_code == 303
    host = Hypervisor.objects.get(name="hv-new01")
    assert response["Location"] == host.get_absolute_url()
    assert host.username == "root"
    assert sorted(host.labels.values_list("name", flat=True)) == ["prod", "rack-c"]
    event = AuditEvent.objects.get(action="host.created", host_id=host.pk)
    assert event.actor_name == operator.username


@pytest.mark.parametrize("data,field,message", [
    ({"name": "", "address": "10.0.0.5"}, "name", "This field is required."),
    ({"name": "bad name!", "address": "10.0.0.5"}, "name", "Use letters, digits"),
    ({"name": "hv-x", "address": "10.0.0.5; rm -rf /"}, "address", "Give a DNS name"),
    ({"name": "hv-x", "address": "10.0.0.5", "port": "70000"}, "port", "less than or equal to 65535"),
    ({"name": "hv-x", "address": "10.0.0.5", "labels_text": "ok bad|x"}, "labels_text", "Not a valid label"),
    ({"name": "hv000", "address": "10.0.0.5"}, "name", "already exists"),
])
def test_add_host_bad_input_is_400_with_the_error_and_no_row(client_for, operator, fleet, data, field,
                                                             message):
    client = client_for(operator)  # (logging in is audited: count after it)
    before = Hypervisor.objects.count(), Label.objects.count(), AuditEvent.objects.count()
    response = client.post(reverse("hosts:add"), {"port": "22", **data})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert response.context["form"].errors.get(field), response.context["form"].errors
    assert (Hypervisor.objects.count(), Label.objects.count(), AuditEvent.objects.count()) == before


def test_edit_host_updates_and_audits(client_for, operator, fleet):
    host = fleet[0]
    client = client_for(operator)
    form = client.get(reverse("hosts:edit", args=[host.pk])).content.decode()
    assert 'value="hv000"' in form and "prod rack-a" in form
    response = client.post(reverse("hosts:edit", args=[host.pk]), {
        "name": "hv000", "address": "hv000.example.net", "port": "2222", "username": "ops",
        "labels_text": "rack-a", "description": "",
    })
    assert response.status_code == 303
    host.refresh_from_db()
    assert (host.address, host.port, host.username) == ("hv000.example.net", 2222, "ops")
    assert list(host.labels.values_list("name", flat=True)) == ["rack-a"]
    event = AuditEvent.objects.filter(action="host.updated", host_id=host.pk).latest("id")
    assert event.data["changes"]["port"] == {"before": 22, "after": 2222}


def test_edit_with_bad_input_changes_nothing(client_for, operator, fleet):
    host = fleet[0]
    response = client_for(operator).post(reverse("hosts:edit", args=[host.pk]), {
        "name": "hv001", "address": "", "port": "22",
    })
    assert response.status_code == 400
    host.refresh_from_db()
    assert host.name == "hv000" and host.address == "127.0.10.1"


def test_delete_host_removes_it_and_its_nics_and_keeps_its_history(client_for, operator, viewer, fleet):
    host = fleet[0]
    nic_ids = list(host.nics.values_list("pk", flat=True))
    assert nic_ids
    assert client_for(viewer).post(reverse("hosts:delete", args=[host.pk])).status_code == 403
    client = client_for(operator)
    page = client.get(reverse("hosts:delete", args=[host.pk])).content.decode()
    assert "Nothing is done on the hypervisor itself" in page
    response = client.post(reverse("hosts:delete", args=[host.pk]))
    assert response.status_code == 302
    assert not Hypervisor.objects.filter(pk=host.pk).exists()
    assert not Nic.objects.filter(pk__in=nic_ids).exists()
    event = AuditEvent.objects.get(action="host.deleted", host_id=host.pk)
    assert event.actor == operator and event.data["before"]["name"] == host.name
    assert event.data["before"]["nics"] == len(nic_ids)


def test_a_host_named_by_a_change_cannot_be_deleted(client_for, operator, fleet):
    from changes import services as change_services
    from tests.changes.conftest import change_data

    host = next(h for h in fleet if h.nics.filter(name="eno49").exists())
    change = change_services.create_change(change_data([host.pk]), operator)
    response = client_for(operator).post(reverse("hosts:delete", args=[host.pk]))
    assert response.status_code == 409
    assert f"part of change #{change.pk}" in response.content.decode()
    assert Hypervisor.objects.filter(pk=host.pk).exists()
    assert not AuditEvent.objects.filter(action="host.deleted").exists()


# ---------------------------------------------------------------------------------------------
# Import: upload → preview → confirm
# ---------------------------------------------------------------------------------------------


def _upload(client, name, text, **extra):
    return client.post(reverse("hosts:import"), {
        "file": SimpleUploadedFile(name, text.encode()), "format": "auto", **extra,
    })


def test_import_preview_then_confirm(client_for, operator, db):
    from hosts.models import Credential

    cred = Credential.objects.create(name="fleet-key", username="root", private_key_encrypted="x",
                                     public_key="ssh-ed25519 AAAA", fingerprint="SHA256:x")
    client = client_for(operator)
    text = ("name,address,port,username,credential,labels\n"
            "hv-a,10.1.0.1,22,root,fleet-key,rack-a\n"
            "hv-b,10.1.0.2,,,,\n")
    preview = _upload(client, "fleet.csv", text, default_credential=cred.pk)
    body = preview.content.decode()
    assert preview.status_code == 200, body
    assert "hv-a" in body and "hv-b" in body and "Create 2 hosts" in body
    assert not Hypervisor.objects.exists()  # the preview writes nothing
    confirm = preview.context["confirm_form"]
    data = {name: field.value() if field.value() is not None else "" for name, field in
            ((n, confirm[n]) for n in confirm.fields)}
    response = client.post(reverse("hosts:import"), {**data, "confirm": "1"})
    assert response.status_code == 303 and response["Location"] == reverse("hosts:list")
    assert sorted(Hypervisor.objects.values_list("name", flat=True)) == ["hv-a", "hv-b"]
    assert Hypervisor.objects.get(name="hv-b").credential == cred
    assert AuditEvent.objects.filter(action="host.imported").count() == 2


def test_import_with_a_bad_row_shows_every_error_and_writes_nothing(client_for, operator, fleet):
    client = client_for(operator)
    text = "[rack_c]\nhv-c1 ansible_host=10.2.0.1\nhv-c2 ansible_host=10.2.0.2 ansible_port=99999\nhv000\n"
    response = _upload(client, "hosts.ini", text)
    body = response.content.decode()
    assert response.status_code == 400
    assert "65535" in body and "already exists" in body and "Nothing was written" in body
    assert "Create " not in body
    assert not Hypervisor.objects.filter(name__startswith="hv-c").exists()


def test_import_unparseable_file_is_400(client_for, operator, db):
    response = _upload(client_for(operator), "x.yaml", "all: [unclosed")
    assert response.status_code == 400
    assert "YAML" in response.content.decode()
    assert not Hypervisor.objects.exists()


def test_import_confirm_tampered_is_revalidated(client_for, operator, fleet):
    response = client_for(operator).post(reverse("hosts:import"), {
        "text": "name,address\nhv000,10.9.9.9\n", "format": "csv", "filename": "x.csv", "confirm": "1",
    })
    assert response.status_code == 400
    assert Hypervisor.objects.get(name="hv000").address == "127.0.10.1"


def _rows(body) -> dict[str, str]:
    """Import preview rows by host name: {name: the row's HTML}."""
    table = body[body.index('<table class="preview">'):body.index("</table>")]
    rows = re.findall(r"<tr class=\"row-[a-z]+\">(.*?)</tr>", table, re.S)
    return {re.search(r"<td>([^<]+)</td>", row).group(1): row for row in rows}


def test_import_preview_puts_each_problem_on_the_host_of_a_range(client_for, operator, db):
    client = client_for(operator)
    text = "[west]\nwest-kvm[01:03] ansible_port=99999\n"
    response = _upload(client, "inventory.ini", text)
    assert response.status_code == 400
    rows = _rows(response.content.decode())
    assert list(rows) == ["west-kvm01", "west-kvm02", "west-kvm03"]
    for name, row in rows.items():
        assert row.count("65535") == 1, (name, row)  # each host its own problem, once
        assert f"({name})" in row and '<span class="badge ok">ok</span>' not in row


def test_import_preview_shows_the_default_credential_and_warns_about_a_taken_endpoint(
    client_for, operator, db
):
    from hosts.models import Credential

    cred = Credential.objects.create(name="fleet-key", username="root", private_key_encrypted="x",
                                     public_key="ssh-ed25519 AAAA", fingerprint="SHA256:x")
    Hypervisor.objects.create(name="old-kvm", address="10.9.0.1", port=2222)
    client = client_for(operator)
    text = ("name,address,port,credential\n"
            "new-a,10.9.0.1,2222,\n"      # the endpoint of old-kvm
            "new-b,10.9.0.2,,fleet-key\n"
            "new-c,10.9.0.2,22,\n")       # the same endpoint as line 3
    response = _upload(client, "fleet.csv", text, default_credential=cred.pk)
    body = response.content.decode()
    assert response.status_code == 200, body
    rows = _rows(body)
    assert "fleet-key <span class=\"muted\">(default)</span>" in rows["new-a"]
    assert "fleet-key" in rows["new-b"] and "(default)" not in rows["new-b"]
    assert "10.9.0.1:2222 is already registered as old-kvm" in rows["new-a"]
    assert "warning" not in rows["new-b"]
    assert "10.9.0.2:22 is also used by line 3 (new-b)" in rows["new-c"]
    assert "2 warnings above" in body and "Create 3 hosts" in body  # a warning does not block


def test_imported_hosts_are_discovered_after_commit(client_for, operator, db, django_capture_on_commit_callbacks):
    from hosts.models import Credential

    cred = Credential.objects.create(name="fleet-key", username="root", private_key_encrypted="x",
                                     public_key="ssh-ed25519 AAAA", fingerprint="SHA256:x")
    client = client_for(operator)
    preview = _upload(client, "fleet.csv", "name,address\nhv-d1,10.3.0.1\nhv-d2,10.3.0.2\n",
                      default_credential=cred.pk)
    confirm = preview.context["confirm_form"]
    data = {n: confirm[n].value() if confirm[n].value() is not None else "" for n in confirm.fields}
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("hosts:import"), {**data, "confirm": "1"}, follow=True)
    assert "Imported 2 hosts; discovering them over SSH now." in response.content.decode()
    hosts = Hypervisor.objects.filter(name__startswith="hv-d")
    assert all(h.discovery_requested_at is not None for h in hosts)
    assert len(service_callbacks(callbacks)) == 1  # one discover_chunk task for both, sent after the commit


def test_the_nic_table_explains_its_managed_and_persisted_columns(client_for, viewer, fleet):
    body = client_for(viewer).get(reverse("hosts:detail", args=[fleet[0].pk])).content.decode()
    table = body[body.index('<table class="nics">'):]
    head = table[:table.index("</thead>")]
    managed = re.search(r'<th scope="col" title="([^"]+)" aria-describedby="nic-legend-managed">Managed</th>', head)
    persisted = re.search(r'<th scope="col" title="([^"]+)" aria-describedby="nic-legend-persisted">Persisted</th>',
                          head)
    assert managed and "the console last applied" in managed.group(1)
    assert persisted and "survives a reboot" in persisted.group(1)
    # The same words in a legend under the table, for keyboard and screen-reader users.
    legend = table[table.index('<dl class="legend'):]
    assert f'<dd id="nic-legend-managed">{managed.group(1)}</dd>' in legend
    assert f'<dd id="nic-legend-persisted">{persisted.group(1)}</dd>' in legend


def test_driver_choices_are_the_drivers_of_present_nics(db, fleet):
    from hosts.filters import driver_choices

    Nic.objects.filter(driver="tg3").update(present=False)
    expected = sorted(set(Nic.objects.filter(present=True).exclude(driver="").values_list("driver", flat=True)))
    assert [value for value, _label in driver_choices()] == expected
    assert "tg3" not in expected and "igb" in expected
