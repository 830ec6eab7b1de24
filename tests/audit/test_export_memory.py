"""A 100,000-event export streams: memory stays bounded while every row comes out."""

import json
import tracemalloc

import pytest
from django.urls import reverse

from audit.services import bulk_record

ROWS = 100_000
BOUND = 50 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_of_100k_events_streams_with_bounded_memory(client_for, auditor, fmt):
    bulk_record(
        {
            "action": "step.finished",
            "actor_name": "worker",
            "host_id": i % 1000,
            "host_name": f"hv{i % 1000}",
            "object_repr": f"step {i}",
            "data": {"exit_status": 0, "note": "x" * 200},
        }
        for i in range(ROWS)
    )
    c = client_for(auditor)
    tracemalloc.start()
    try:
        response = c.get(reverse("audit:export"), {"format": fmt, "action": "step."})
        assert response.streaming
        rows, size = 0, 0
        for chunk in response.streaming_content:
            size += len(chunk)
            rows += chunk.count(b"\n")
        response.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == ROWS + (1 if fmt == "csv" else 0)
    assert size > 200 * ROWS  # the whole export was bigger than the bound...
    assert peak < BOUND, f"peak {peak / 1e6:.1f} MB"  # ...but was never held in memory
    if fmt == "jsonl":
        assert json.loads(chunk.splitlines()[-1])["action"] == "step.finished"
