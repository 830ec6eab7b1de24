"""Audit filters as an auditor uses them: a host is filtered by its name (clicking one puts the
name, not an internal id, in the Host box; the box suggests names while typing), and the actor
matches by prefix like the action does."""

import re

import pytest
from django.urls import reverse

from audit.services import record
from hosts.models import Hypervisor

pytestmark = pytest.mark.django_db


def host_box(body) -> str:
    return re.search(r'<input type="text" name="host"[^>]*>', body).group(0)


def test_clicking_a_host_filters_by_its_name(client_for, auditor):
    west = Hypervisor.objects.create(name="west-kvm01", address="10.0.0.1")
    east = Hypervisor.objects.create(name="east-kvm01", address="10.0.0.2")
    record("host.created", obj=west, host=west)
    record("host.created", obj=east, host=east)
    client = client_for(auditor)
    body = client.get(reverse("audit:list")).content.decode()
    assert '<a href="?host=west-kvm01">west-kvm01</a>' in body
    assert f'?host={west.pk}"' not in body

    response = client.get(reverse("audit:list"), {"host": "west-kvm01"})
    assert {e.host_name for e in response.context["events"]} == {"west-kvm01"}
    assert 'value="west-kvm01"' in host_box(response.content.decode())

    detail = client.get(reverse("audit:detail", args=[response.context["events"][0].pk])).content.decode()
    assert f'href="{reverse("audit:list")}?host=west-kvm01"' in detail


def test_a_renamed_host_keeps_its_history_under_the_new_name(client_for, auditor):
    host = Hypervisor.objects.create(name="old-name", address="10.0.0.3")
    record("host.created", obj=host, host=host)
    Hypervisor.objects.filter(pk=host.pk).update(name="new-name")
    host.refresh_from_db()
    record("host.updated", obj=host, host=host)
    client = client_for(auditor)
    events = client.get(reverse("audit:list"), {"host": "new-name"}).context["events"]
    assert [e.action for e in events] == ["host.updated", "host.created"]
    events = client.get(reverse("audit:list"), {"host": "old-name"}).context["events"]
    assert [e.action for e in events] == ["host.created"]


def test_the_host_box_suggests_names_as_you_type(client_for, auditor, operator):
    for name in ("west-kvm01", "west-kvm02", "east-kvm01"):
        Hypervisor.objects.create(name=name, address="10.0.0.9")
    client = client_for(auditor)
    body = client.get(reverse("audit:list")).content.decode()
    box = host_box(body)
    assert 'list="audit-host-names"' in box and f'hx-get="{reverse("audit:host_names")}"' in box
    assert 'hx-target="#audit-host-names"' in box and '<datalist id="audit-host-names"></datalist>' in body
    suggestions = client.get(reverse("audit:host_names"), {"host": "WEST"}).content.decode()
    assert re.findall(r'<option value="([^"]+)">', suggestions) == ["west-kvm01", "west-kvm02"]
    assert client.get(reverse("audit:host_names"), {"host": ""}).content.decode().strip() == ""
    assert client_for(operator).get(reverse("audit:host_names"), {"host": "w"}).status_code == 403


def test_actor_matches_by_prefix(client_for, auditor, operator):
    record("host.created", actor=operator)  # otto
    record("host.created", actor_name="ottoline")
    record("host.created", actor_name="anna")
    client = client_for(auditor)
    actors = {e.actor_name for e in client.get(reverse("audit:list"), {"actor": "ott"}).context["events"]}
    assert actors == {"otto", "ottoline"}
    actors = {e.actor_name for e in client.get(reverse("audit:list"), {"actor": "otto"}).context["events"]}
    assert actors == {"otto", "ottoline"}
    body = client.get(reverse("audit:list")).content.decode()
    assert "A user name or its beginning." in body
