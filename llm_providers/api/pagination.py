"""Pagination of API lists: numbered pages by default, cursors for call logs."""

from __future__ import annotations

from rest_framework import pagination

# 200 per page: enough for a dashboard, small enough to answer fast.
MAX_PAGE_SIZE = 200


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=2&page_size=100` over a stable ordering; answers count/next/previous/results."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


class CreatedAtCursorPagination(pagination.CursorPagination):
    """Newest first, stable under inserts: `?cursor=<opaque>` from `next` / `previous`."""

    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
