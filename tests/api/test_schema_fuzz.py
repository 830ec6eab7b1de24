"""Schemathesis against the live OpenAPI schema: generated valid and invalid requests for every
operation, sent to the Django WSGI app with an admin's token, never get a 5xx.

A bounded number of examples per operation (FUZZ_EXAMPLES, default 8 valid + 8 invalid), derandomised so
a run is repeatable; the requests run in the test's transaction (rolled back afterwards).
"""

import os

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from tests.changes.conftest import make_credential, make_host

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))


@pytest.fixture
def wsgi_app():
    """The real WSGI handler, kept from closing the test's database connection at the end of each
    request (as Django's test client does), so the requests run inside the test's transaction."""
    from django.core import signals
    from django.db import close_old_connections

    handler = WSGIHandler()

    def app(environ, start_response):
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            result = handler(environ, start_response)
            body = b"".join(result)
            result.close()
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)
        return [body]

    return app


@pytest.fixture
def seeded(db, operator):
    """A few real objects so that some generated ids hit something."""
    from changes.services import create_change

    host = make_host("hv-fuzz", credential=make_credential("fuzz"), nics=[("eno49", "0000:04:00.0", 0)])
    create_change({"title": "fuzz", "reason": "fuzz", "targets": {"host_ids": [host.pk]},
                   "operations": [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 2}]},
                  operator)
    return host


def test_no_operation_answers_5xx(seeded, admin_user, api_for, wsgi_app):
    api = api_for(admin_user)
    raw = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert raw["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(raw)
    app = wsgi_app
    headers = {"Authorization": f"Bearer {api.token_text}"}
    failures, ran = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate])
            @given(case=strategy)
            def run(case):
                response = case.call(app=app, headers=headers)
                case.validate_response(response, checks=[not_a_server_error], headers=headers)

            try:
                run()
                ran += 1
            except Exception as exc:  # collect every operation's failure, then report them all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}"[:3000])
    assert ran > 60, ran
    assert not failures, "\n\n".join(failures)
