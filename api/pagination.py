"""Cursor pagination on the id: stable pages however fast rows are added, no COUNT(*).

Responses: {"next": url|null, "previous": url|null, "results": [...]}; `?page_size=` up to 500.
"""

from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    cursor_query_param = "cursor"


class NewestFirstCursorPagination(IdCursorPagination):
    ordering = "-id"
