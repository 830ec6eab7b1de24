"""Selecting hosts in the hosts table: one row, this page, or everything the filter matches; the
selection survives a filter change and paging, says how many are picked, and is what the
"New change" button hands to the change wizard."""

import re

import pytest
from django.urls import reverse

from hosts import selection
from hosts.models import Hypervisor

from .pages_fleet import build_fleet

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def fleet(db):
    return build_fleet(30)


def ids(names):
    return list(Hypervisor.objects.filter(name__in=names).order_by("name").values_list("pk", flat=True))


def checked(body) -> list[str]:
    """Names of the rows whose checkbox is checked."""
    return re.findall(r'aria-label="Select ([\w.-]+)" checked>', body)


def select(client, op, *, shown=(), hosts=(), query="", **extra):
    return client.post(reverse("hosts:selection"), {
        "op": op, "shown": [str(pk) for pk in shown], "hosts": [str(pk) for pk in hosts], "query": query,
    }, **extra)


def bulk_form(body) -> str:
    start = body.index('<form id="bulk-change"')
    return body[start:body.index("</form>", start)]


def test_picked_rows_stay_selected_across_a_filter_change_and_paging(client_for, operator, fleet):
    client = client_for(operator)
    page1 = list(Hypervisor.objects.order_by("name")[:25])
    picked = [page1[0].pk, page1[1].pk]  # hv000 (rack-a), hv001 (rack-b)
    response = select(client, "sync", shown=[h.pk for h in page1], hosts=picked, query="per_page=25")
    assert response.status_code == 303 and response["Location"] == "/hosts/?per_page=25"
    body = client.get(response["Location"]).content.decode()
    assert checked(body) == ["hv000", "hv001"]
    assert "<strong>2 hosts selected</strong>" in body
    assert "New change for 2 selected hosts" in body

    # Another filter: hv001 is not shown but still selected, and the count says so.
    body = client.get(reverse("hosts:list"), {"label": "rack-a"}, **HTMX).content.decode()
    assert checked(body) == ["hv000"]
    assert "<strong>2 hosts selected</strong> <span class=\"muted\">(1 shown by this filter)</span>" in body
    # The hand-over carries the hidden one too (the shown one travels as its checked box).
    form = bulk_form(body)
    assert f'<input type="hidden" name="hosts" value="{page1[1].pk}">' in form
    assert f'value="{page1[0].pk}"' not in form

    # Page 2: pick one more; page 1's picks stay.
    page2 = list(Hypervisor.objects.order_by("name")[25:])
    select(client, "sync", shown=[h.pk for h in page2], hosts=[page2[0].pk], query="per_page=25&page=2")
    assert selection.selected_ids(client.session) == sorted(picked + [page2[0].pk])
    body = client.get(reverse("hosts:list"), {"per_page": 25, "page": 2}).content.decode()
    assert checked(body) == [page2[0].name] and "<strong>3 hosts selected</strong>" in body

    # Un-ticking a row on page 1 drops only that one.
    select(client, "sync", shown=[h.pk for h in page1], hosts=[page1[1].pk], query="per_page=25")
    assert selection.selected_ids(client.session) == sorted([page1[1].pk, page2[0].pk])


def test_select_this_page_and_everything_the_filter_matches(client_for, operator, fleet):
    client = client_for(operator)
    body = client.get(reverse("hosts:list"), {"per_page": 25}).content.decode()
    assert 'aria-label="Select all 25 hosts on this page"' in body
    assert "Select all 30 matching hosts" in body
    assert re.search(r"<button type=\"submit\" disabled[^>]*>New change for selected hosts</button>", body)

    page1 = ids([f"hv{i:03d}" for i in range(25)])
    response = select(client, "page", shown=page1, query="per_page=25")
    body = client.get(response["Location"]).content.decode()
    assert len(checked(body)) == 25 and "<strong>25 hosts selected</strong>" in body
    assert re.search(r'id="select-page" aria-label="Select all 25 hosts on this page" checked', body)

    select(client, "unpage", shown=page1, query="per_page=25")
    assert selection.selected_ids(client.session) == []

    # Everything rack-b matches (15 hosts), over more than one page of 10.
    response = select(client, "matching", query="label=rack-b&per_page=25")
    rack_b = list(Hypervisor.objects.filter(labels__name="rack-b").values_list("pk", flat=True))
    assert sorted(selection.selected_ids(client.session)) == sorted(rack_b) and len(rack_b) == 15
    body = client.get(reverse("hosts:list"), {"per_page": 25}).content.decode()
    assert "<strong>15 hosts selected</strong>" in body and "(15 shown by this filter)" not in body

    select(client, "clear", query="")
    assert selection.selected_ids(client.session) == []


def test_a_selection_beyond_the_limit_is_refused_with_the_reason(client_for, operator, fleet, monkeypatch):
    monkeypatch.setattr(selection, "LIMIT", 20)
    client = client_for(operator)
    response = select(client, "matching", query="", **HTMX)
    assert selection.selected_ids(client.session) == []
    body = client.get(response["Location"], **HTMX).content.decode()
    assert "Not selected: that would be more than 20 hosts, the most a selection holds." in body


def test_the_table_posts_the_selection_with_htmx(client_for, operator, fleet):
    body = client_for(operator).get(reverse("hosts:list")).content.decode()
    tbody = body[body.index("<tbody"):body.index(">", body.index("<tbody"))]
    assert f'hx-post="{reverse("hosts:selection")}"' in tbody and 'hx-trigger="change"' in tbody
    assert '"op": "sync"' in tbody and 'hx-push-url="false"' in tbody
    shown = re.findall(r'<input type="hidden" name="shown" value="(\d+)">', body)
    assert len(shown) == 30


def test_only_operators_select(client_for, viewer, fleet):
    response = select(client_for(viewer), "clear")
    assert response.status_code == 403


def test_a_bad_operation_is_a_400(client_for, operator, fleet):
    assert select(client_for(operator), "everything").status_code == 400
    assert select(client_for(operator), "matching", query="status=bogus").status_code == 400


def test_the_list_with_a_selection_costs_a_constant_number_of_queries(client_for, operator, db,
                                                                      django_assert_max_num_queries):
    from .test_pages import LIST_QUERIES

    client = client_for(operator)
    for size in (5, 40):
        Hypervisor.objects.all().delete()
        hosts = build_fleet(size, prefix=f"s{size}-")
        select(client, "page", shown=[h.pk for h in hosts])
        with django_assert_max_num_queries(LIST_QUERIES + 2):  # the selection's count and matching count
            response = client.get(reverse("hosts:list"))
        assert response.status_code == 200


def test_ticking_a_row_redraws_only_the_selection_bar(client_for, operator, fleet):
    """The rows stay as the browser shows them, so a second quick click is never redrawn away."""
    client = client_for(operator)
    page = ids([f"hv{i:03d}" for i in range(30)])
    response = select(client, "sync", shown=page, hosts=page[:2], query="", **HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith("<div class=\"selection-bar\" id=\"selection-bar\"")
    assert "<tbody" not in body and "<strong>2 hosts selected</strong>" in body
    # The page checkbox follows out of band (not all 30 are ticked: it offers to select them all).
    assert re.search(r'<input type="checkbox" id="select-page" aria-label="Select all 30 hosts on this page" '
                     r'hx-swap-oob="true"', body)
    response = select(client, "sync", shown=page, hosts=page, query="", **HTMX)
    assert re.search(r'id="select-page" aria-label="Select all 30 hosts on this page" checked hx-swap-oob="true"',
                     response.content.decode())
