"""Pagination of API lists: numbered pages by default, cursors for call logs."""

from __future__ import annotations

from django.utils.dateparse import parse_datetime
from rest_framework import pagination
from rest_framework.exceptions import NotFound

# 200 per page: enough for a dashboard, small enough to answer fast.
MAX_PAGE_SIZE = 200


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=2&page_size=100` over a stable ordering; answers count/next/previous/results."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


def _is_aware_datetime(text: str) -> bool:
    try:
        parsed = parse_datetime(text)
    except ValueError:
        return False
    return parsed is not None and parsed.tzinfo is not None


class CreatedAtCursorPagination(pagination.CursorPagination):
    """Newest first, stable under inserts: `?cursor=<opaque>` from `next` / `previous`."""

    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def decode_cursor(self, request):
        """The cursor, or 404 when it is not one this pagination gives out.

        DRF checks only the cursor's encoding; its position goes into the
        query as given. Every `next` / `previous` link carries a time with its
        zone, so anything else is an invalid cursor, not a query error.
        """
        cursor = super().decode_cursor(request)
        position = cursor.position if cursor is not None else None
        if position is not None and not _is_aware_datetime(position):
            raise NotFound(self.invalid_cursor_message)
        return cursor
