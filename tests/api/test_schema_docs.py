"""The OpenAPI schema, the docs page built from it, and constant query counts of the collections."""

import pytest

from tests.changes.conftest import make_credential, make_host

pytestmark = pytest.mark.django_db


def test_schema_documents_every_operation_with_its_permission(viewer, api_for):
    api = api_for(viewer)
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A personal API token (docs/api.md)."}
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert len(operations) > 40
    for path, method, op in operations:
        assert path.startswith("/api/v1/")
        assert "Permission: `" in op.get("description", ""), f"{method} {path} does not say its permission"
    approve = schema["paths"]["/api/v1/changes/{id}/approve/"]["post"]
    assert "Permission: `approve`" in approve["description"] and "403" in approve["responses"]
    yaml = api.get("/api/schema/")
    assert yaml.status_code == 200 and b"openapi: 3" in yaml.content


def test_docs_page_lists_the_endpoints(viewer, client):
    client.force_login(viewer)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "/api/v1/changes/{id}/approve/" in text and ">approve<" in text
    assert "<script>" not in text  # CSP: no inline scripts


@pytest.mark.parametrize("url", ["/api/v1/hypervisors/", "/api/v1/nics/", "/api/v1/vfs/", "/api/v1/changes/",
                                 "/api/v1/rollouts/", "/api/v1/host-runs/", "/api/v1/steps/",
                                 "/api/v1/audit-events/"])
def test_collections_cost_a_constant_number_of_queries(url, admin_user, api_for, django_assert_max_num_queries):
    from changes.services import create_change

    credential = make_credential()
    api = api_for(admin_user)

    def add(start, count):
        for index in range(start, start + count):
            host = make_host(f"hv-q{index:03d}", credential=credential, labels=["a", "b"],
                             nics=[("eno49", "0000:04:00.0", 2)])
            create_change({"title": "q", "reason": "q", "targets": {"host_ids": [host.pk]},
                           "operations": [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"},
                                           "count": 4}]}, admin_user)

    add(0, 2)
    api.get(url)  # warm up (content types, token)
    with django_assert_max_num_queries(12) as small:
        assert api.get(url).status_code == 200
    add(2, 12)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert api.get(url).status_code == 200


def test_schema_generates_without_warnings_and_validates(tmp_path):
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert out.read_text().startswith("openapi: 3")
