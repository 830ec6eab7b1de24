"""Dashboard: fleet readiness figures, each linking to the host list filtered to exactly those hosts,
in a constant number of queries. Data: the real agent inventory of simulated hosts."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hosts.models import Hypervisor, Nic
from tests.hosts.pages_fleet import build_fleet

DASHBOARD_QUERIES = 6  # session, user, 2× permissions, hosts aggregate (with their NIC figures), drivers


def figures(body: str) -> dict[str, str]:
    """{link: value} for every figure card."""
    pattern = r'<a class="stat[^"]*" href="([^"]+)">\s*<span class="value">([^<]+?)(?:<|</span>)'
    return dict(re.findall(pattern, body))


def test_anonymous_is_sent_to_login(client, db):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_figures_match_the_fleet_and_link_to_the_filtered_list(client_for, viewer, db):
    build_fleet(20)
    client = client_for(viewer)
    body = client.get(reverse("dashboard")).content.decode()
    shown = figures(body.replace("&amp;", "&"))
    hosts = list(Hypervisor.objects.all())
    sriov_nics = Nic.objects.filter(present=True, sriov_totalvfs__gt=0)
    expected = {
        "/hosts/": len(hosts),
        "/hosts/?status=reachable": sum(h.status == "reachable" for h in hosts),
        "/hosts/?status=unreachable": sum(h.status == "unreachable" for h in hosts),
        "/hosts/?sriov=yes": sriov_nics.count(),
        "/hosts/?iommu=yes": sum(h.iommu_active is True for h in hosts),
        "/hosts/?iommu=no": sum(h.iommu_active is False for h in hosts),
        "/hosts/?drifted=yes": sum(h.drifted for h in hosts),
        "/hosts/?key=pending": sum(h.status == "host_key_pending" for h in hosts),
        "/hosts/?key=mismatch": sum(h.status == "host_key_mismatch" for h in hosts),
    }
    for link, value in expected.items():
        assert int(shown[link]) == value, (link, shown[link], value)
        assert value > 0, link  # the fleet has some of each
    configured = sum(n.sriov_numvfs or 0 for n in sriov_nics)
    capacity = sum(n.sriov_totalvfs for n in sriov_nics)
    assert configured > 0 and int(shown["/hosts/?sriov=yes&sort=-vfs"]) == configured
    assert f"/ {capacity}</span>" in body
    listed = client.get("/hosts/?sriov=yes").content.decode()
    assert int(re.search(r"(\d+) hosts?\b", listed).group(1)) == sriov_nics.values("host").distinct().count()
    assert f"on {sriov_nics.values('host').distinct().count()} host" in body

    # Following a figure's link lists exactly that many hosts (host counts, not NIC counts).
    for link in ("/hosts/", "/hosts/?status=reachable", "/hosts/?status=unreachable", "/hosts/?iommu=yes",
                 "/hosts/?iommu=no", "/hosts/?drifted=yes", "/hosts/?key=pending", "/hosts/?key=mismatch"):
        listed = client.get(link).content.decode()
        count = int(re.search(r"(\d+) hosts?\b", listed).group(1))
        assert count == expected[link], link


def test_status_and_driver_tables(client_for, viewer, db):
    build_fleet(10)
    body = client_for(viewer).get(reverse("dashboard")).content.decode()
    assert '<a href="/hosts/?driver=mlx5_core">mlx5_core</a>' in body
    igb_hosts = Hypervisor.objects.filter(nics__driver="igb", nics__present=True).distinct().count()
    row = body[body.index(">igb</a>"):]
    assert re.match(r'>igb</a></td>\s*(<td class="num">\d+</td>){3}', row)
    assert int(re.match(r".*?(\d+)</td>\s*</tr>", row, re.S).group(1)) == igb_hosts
    assert 'href="/hosts/?status=auth_failed"' in body


def test_empty_fleet(client_for, viewer, db):
    response = client_for(viewer).get(reverse("dashboard"))
    assert response.status_code == 200
    assert "No NIC discovered yet." in response.content.decode()


def _count(client):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("dashboard")).status_code == 200
    return len(queries)


def test_query_count_is_constant(client_for, viewer, db, django_assert_max_num_queries):
    client = client_for(viewer)
    build_fleet(3, prefix="small")
    small = _count(client)
    build_fleet(30, prefix="large")
    large = _count(client)
    assert small == large == DASHBOARD_QUERIES, (small, large)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        client.get(reverse("dashboard"))


@pytest.mark.parametrize("role", ["viewer", "operator", "approver", "auditor"])
def test_every_role_with_view_fleet_sees_it(client_for, request, role):
    user = request.getfixturevalue(role)
    assert client_for(user).get(reverse("dashboard")).status_code == 200
