import datetime
import json
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import bulk_record, record
from audit.views import PAGE_SIZE
from tests.audit.helpers import the_event

pytestmark = pytest.mark.django_db


def _ids(response):
    return [e.id for e in response.context["events"]]


def _seed(n=10, **extra):
    bulk_record(
        {
            "action": "host.discovered" if i % 2 else "change.approved",
            "actor_name": "anna" if i % 3 else "otto",
            "host_id": i % 4 + 1,
            "host_name": f"hv{i % 4 + 1}",
            "change_id": i % 5 + 1,
            "object_repr": f"object {i}",
            "data": {"note": f"needle-{i}"},
            **extra,
        }
        for i in range(n)
    )


@pytest.mark.parametrize("name", ["audit:list", "audit:export"])
def test_only_auditors_see_and_export(client_for, client, operator, auditor, name):
    url = reverse(name)
    assert client.get(url).status_code == 302  # anonymous → login
    assert client_for(operator).get(url).status_code == 403
    assert client_for(auditor).get(url).status_code == 200


def test_views_declare_their_permission():
    from audit import views

    for view in (views.event_list, views.event_detail, views.export):
        assert view.required_permission == "audit"


def test_filters(client_for, auditor):
    _seed(40)
    record("host.updated", actor=auditor, data={"before": {"port": 22}, "after": {"port": 2222}})
    c = client_for(auditor)
    url = reverse("audit:list")
    all_ids = _ids(c.get(url))
    assert len(all_ids) == 42  # 40 + audit's own login + host.updated
    assert all(e.actor_name == "otto" for e in c.get(url, {"actor": "otto"}).context["events"])
    assert {e.action for e in c.get(url, {"action": "change."}).context["events"]} == {"change.approved"}
    assert {e.host_id for e in c.get(url, {"host": "2"}).context["events"]} == {2}
    assert {e.host_id for e in c.get(url, {"host": "hv3"}).context["events"]} == {3}
    assert {e.change_id for e in c.get(url, {"change": "5"}).context["events"]} == {5}
    found = c.get(url, {"q": "NEEDLE-17"}).context["events"]
    assert [e.object_repr for e in found] == ["object 17"]
    assert [e.action for e in c.get(url, {"q": "2222"}).context["events"]] == ["host.updated"]
    assert c.get(url, {"q": "100%_"}).context["events"] == []  # LIKE wildcards are literal
    today = timezone.now().date()
    assert len(_ids(c.get(url, {"since": today.isoformat(), "until": today.isoformat()}))) == 42
    assert _ids(c.get(url, {"until": (today - datetime.timedelta(days=1)).isoformat()})) == []
    assert c.get(url, {"change": "x"}).status_code == 422
    assert c.get(url, {"change": "1.5"}).status_code == 422
    assert c.get(url, {"change": str(2**64)}).status_code == 422
    assert c.get(url, {"host": str(2**64)}).context["events"] == []
    assert c.get(url, {"before": str(2**64)}).status_code == 400
    assert c.get(url, {"before": "-1"}).status_code == 400


def test_keyset_pagination_walks_every_event_once(client_for, auditor):
    _seed(2 * PAGE_SIZE + 7)
    c = client_for(auditor)
    url = reverse("audit:list")
    seen, response = [], c.get(url)
    while True:
        seen += _ids(response)
        older = response.context["older_id"]
        if not older:
            break
        response = c.get(url, {"before": older})
    total = AuditEvent.objects.count()
    assert seen == list(range(total, 0, -1))
    back = c.get(url, {"after": seen[PAGE_SIZE * 2]})  # "newer" from the third page
    assert _ids(back) == seen[PAGE_SIZE : PAGE_SIZE * 2]


@pytest.mark.parametrize("query", [{}, {"action": "change.", "q": "needle"}, {"host": "2"}])
def test_query_count_does_not_grow_with_history(client_for, auditor, query):
    c = client_for(auditor)
    url = reverse("audit:list")
    _seed(10)
    c.get(url, query)  # warm caches (content types, session)
    with CaptureQueriesContext(connection) as small:
        assert c.get(url, query).status_code == 200
    _seed(1000)
    with CaptureQueriesContext(connection) as large:
        assert c.get(url, query).status_code == 200
    assert len(large) == len(small)


def test_chain_state_is_shown(client_for, auditor):
    from django.core.management import call_command

    _seed(5)
    c = client_for(auditor)
    assert "has not been verified yet" in c.get(reverse("audit:list")).content.decode()
    call_command("verify_audit", stdout=None)
    text = c.get(reverse("audit:list")).content.decode()
    assert "verified up to event 6" in text


def test_detail_shows_before_after_and_step_transcript_link(client_for, auditor):
    event = record(
        "host.updated",
        actor=auditor,
        data={"before": {"port": 22, "user": "root"}, "after": {"port": 2222, "user": "root"}},
    )
    fake_step = SimpleNamespace(pk=5, _meta=SimpleNamespace(label_lower="changes.step"))
    step = record("step.finished", actor_name="worker", obj=fake_step, data={"exit_status": 0})
    c = client_for(auditor)
    text = c.get(reverse("audit:detail", args=[event.pk])).content.decode()
    assert "Before and after" in text and "2222" in text and event.hash in text
    text = c.get(reverse("audit:detail", args=[step.pk])).content.decode()
    assert "exit_status" in text
    assert f'href="{reverse("changes:step", args=[5])}"' in text
    assert c.get(reverse("audit:detail", args=[9999])).status_code == 404


def _consume(response):
    return b"".join(response.streaming_content).decode()


def test_export_csv_and_jsonl_follow_the_filter_and_are_audited(client_for, auditor):
    _seed(20)
    c = client_for(auditor)
    response = c.get(reverse("audit:export"), {"format": "jsonl", "action": "change."})
    assert response.streaming and response["Content-Type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in _consume(response).splitlines()]
    assert len(rows) == 10 and {r["action"] for r in rows} == {"change.approved"}
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    exported = the_event("audit.exported")
    assert exported.actor_id == auditor.pk
    assert exported.data == {"format": "jsonl", "filter": {"action": "change."}}
    response = c.get(reverse("audit:export"), {"format": "csv", "actor": "otto"})
    lines = _consume(response).splitlines()
    assert lines[0].startswith("id,created_at,actor_name,action")
    assert len(lines) == 1 + sum(1 for i in range(20) if i % 3 == 0)


def test_export_neutralises_spreadsheet_formulas(client_for, auditor):
    record("host.updated", actor_name='=HYPERLINK("http://evil")')
    text = _consume(client_for(auditor).get(reverse("audit:export"), {"format": "csv", "action": "host."}))
    assert "'=HYPERLINK" in text


def test_export_rejects_bad_format_and_bad_filter(client_for, auditor):
    c = client_for(auditor)
    assert c.get(reverse("audit:export"), {"format": "xml"}).status_code == 400
    assert c.get(reverse("audit:export"), {"change": "nope"}).status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_timeline_partial_renders_events(rf, auditor):
    from django.template.loader import render_to_string

    from audit.services import timeline

    host = type("Host", (), {"pk": 3, "name": "hv3"})()
    record("host.created", host=host)
    record("host.updated", host=host)
    record("auth.login")
    events = timeline(host=host)
    assert [e.action for e in events] == ["host.updated", "host.created"]
    html = render_to_string("audit/_timeline.html", {"events": events, "can": {"audit": True}})
    assert "host.updated" in html and reverse("audit:detail", args=[events[0].pk]) in html


def test_admin_is_read_only(client_for, superuser):
    c = client_for(superuser)
    event = record("auth.login")
    assert c.get(reverse("admin:audit_auditevent_changelist")).status_code == 200
    assert c.get(reverse("admin:audit_auditevent_add")).status_code == 403
    page = c.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert page.status_code == 200 and b'name="action"' not in page.content
    assert (
        c.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()
