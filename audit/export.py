"""Streaming CSV / JSON Lines writers for audit exports (the audit page and the API use them).

`streaming_response(queryset, fmt)` streams a queryset of AuditEvent oldest first over a
server-side cursor (`.iterator(chunk_size=2000)`): memory stays bounded whatever the row count.
Recording `audit.exported` is the caller's job (it knows the filter and the channel).
"""

import csv
import json

from django.http import StreamingHttpResponse
from django.utils import timezone

from .chain import format_time

LIST_FIELDS = (
    "id",
    "created_at",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "host_id",
    "host_name",
    "change_id",
    "client_ip",
    "request_id",
)
EXPORT_FIELDS = (*LIST_FIELDS, "actor_id", "data", "prev_hash", "hash")
FORMATS = ("csv", "jsonl")
CHUNK_SIZE = 2000


class _Echo:
    def write(self, value):
        return value


_CSV_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    """Spreadsheet-safe: a text cell starting like a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    text = format_time(value) if hasattr(value, "astimezone") else str(value)
    if isinstance(value, str | dict | list) and text.startswith(_CSV_DANGEROUS):
        return "'" + text
    return text


def csv_rows(rows):
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        yield writer.writerow([_csv_cell(value) for value in row])


def jsonl_rows(rows):
    for row in rows:
        doc = dict(zip(EXPORT_FIELDS, row, strict=True))
        doc["created_at"] = format_time(doc["created_at"])
        yield json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n"


def streaming_response(queryset, fmt):
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    rows = queryset.order_by("id").values_list(*EXPORT_FIELDS).iterator(chunk_size=CHUNK_SIZE)
    if fmt == "csv":
        response = StreamingHttpResponse(csv_rows(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(jsonl_rows(rows), content_type="application/x-ndjson; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response
