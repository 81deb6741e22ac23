"""Pagination of API lists: numbered pages by default, cursors for call logs and alerts."""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from datetime import datetime

from django.db.models import Q
from django.utils.dateparse import parse_datetime
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError

from .serializers import integer_text_is_plain

# 200 per page: enough for a dashboard, small enough to answer fast.
MAX_PAGE_SIZE = 200
# A cursor position is "<created_at>|<id>"; cursors given out before ids were
# added hold the time alone.
_POSITION_SEPARATOR = "|"
_ID = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1


def _page_size(paginator, request) -> int:
    """The page size asked for, at most MAX_PAGE_SIZE; one that is not a whole
    number of at least 1 is refused rather than replaced by the default."""
    asked = request.query_params.get(paginator.page_size_query_param)
    if asked is None:
        return paginator.page_size
    size = int(asked) if integer_text_is_plain(asked) else 0
    if size < 1:
        raise ValidationError(
            {
                paginator.page_size_query_param: [
                    f"A whole number from 1 to {paginator.max_page_size} is required."
                ]
            }
        )
    return min(size, paginator.max_page_size)


def _page_size_documented(paginator, parameters: list[dict]) -> list[dict]:
    """The page_size parameter as it is read: at least 1, a larger one gives the maximum."""
    for parameter in parameters:
        if parameter["name"] == paginator.page_size_query_param:
            parameter["schema"] = {"type": "integer", "minimum": 1}
            parameter["description"] = (
                f"Results per page (default {paginator.page_size}); "
                f"a larger size than {paginator.max_page_size} gives {paginator.max_page_size}."
            )
    return parameters


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=2&page_size=100` over a stable ordering; answers count/next/previous/results."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request):
        return _page_size(self, request)

    def get_schema_operation_parameters(self, view):
        parameters = _page_size_documented(self, super().get_schema_operation_parameters(view))
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {
                    "oneOf": [
                        {"type": "integer", "minimum": 1},
                        {"type": "string", "enum": list(self.last_page_strings)},
                    ]
                }
                parameter["description"] = (
                    "A page number from 1, or `last`; a page past the end answers 404."
                )
        return parameters

    def get_page_number(self, request, paginator):
        """The page asked for: digits or "last"; other text int() would read is no page."""
        number = super().get_page_number(request, paginator)
        if isinstance(number, str) and not integer_text_is_plain(number):
            message = paginator.error_messages["invalid_page"]
            raise NotFound(self.invalid_page_message.format(page_number=number, message=message))
        return number


def _position_parse(position: str) -> tuple[datetime, int | None] | None:
    """The time and id of a cursor position, or None when it is not one this pagination
    gives out (every position carries a time with its zone)."""
    text, separator, pk = position.partition(_POSITION_SEPARATOR)
    try:
        created_at = parse_datetime(text)
    except ValueError:
        return None
    if created_at is None or created_at.tzinfo is None:
        return None
    if not separator:
        return created_at, None
    if not _ID.fullmatch(pk) or int(pk) > _MAX_ID:
        return None
    return created_at, int(pk)


def _beyond(created_at: datetime, pk: int | None, *, newer: bool) -> Q:
    """Rows past a position in the walk's direction: older ones, or newer ones (`newer`).

    The bound on the time alone comes first so that the (tenant, -created_at)
    index still narrows the scan; the id orders rows of the same time.
    """
    if pk is None:
        return Q(created_at__gt=created_at) if newer else Q(created_at__lt=created_at)
    if newer:
        return Q(created_at__gte=created_at) & (Q(created_at__gt=created_at) | Q(id__gt=pk))
    return Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(id__lt=pk))


class CreatedAtCursorPagination(pagination.CursorPagination):
    """Newest first, stable under inserts: `?cursor=<opaque>` from `next` / `previous`.

    DRF's cursor holds one field and an offset among the rows sharing it,
    which goes wrong when rows share a time: alerts of one check all do, and
    a row written meanwhile with the same time shifts the offset. The
    position here is the time and the id, unique, so no offset is needed.
    """

    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request):
        return _page_size(self, request)

    def get_schema_operation_parameters(self, view):
        return _page_size_documented(self, super().get_schema_operation_parameters(view))

    def decode_cursor(self, request):
        """The cursor, or 404 when it is not one this pagination gives out."""
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is not None:
            # DRF's decoding skips characters outside base64: a cursor of none
            # (a NUL, "!!", nothing) would read as no cursor, the first page.
            try:
                b64decode(encoded.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error):
                raise NotFound(self.invalid_cursor_message) from None
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is None and cursor.offset == 0:
            # Every cursor given out holds a position, or (from before ids were
            # added to positions) an offset; one with neither is made up.
            raise NotFound(self.invalid_cursor_message)
        self._position = None
        if cursor is not None and cursor.position is not None:
            self._position = _position_parse(cursor.position)
            if self._position is None:
                raise NotFound(self.invalid_cursor_message)
        return cursor

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self.cursor = self.decode_cursor(request)
        offset, reverse, position = self.cursor or (0, False, None)
        oldest_first = [name.removeprefix("-") for name in self.ordering]
        queryset = queryset.order_by(*(oldest_first if reverse else self.ordering))
        if self._position is not None:
            queryset = queryset.filter(_beyond(*self._position, newer=reverse))
        # Only a cursor holding the time alone has an offset; the links built
        # from this page carry unique positions and none.
        results = list(queryset[offset : offset + self.page_size + 1])
        if self.cursor is not None:
            self.cursor = self.cursor._replace(offset=0)
        self.page = results[: self.page_size]
        following = (
            self._get_position_from_instance(results[-1], self.ordering)
            if len(results) > self.page_size
            else None
        )
        if reverse:
            self.page.reverse()
            self.has_next, self.next_position = position is not None or offset > 0, position
            self.has_previous, self.previous_position = following is not None, following
        else:
            self.has_next, self.next_position = following is not None, following
            self.has_previous = position is not None or offset > 0
            self.previous_position = position
        if (self.has_previous or self.has_next) and self.template is not None:
            self.display_page_controls = True
        return self.page

    def _get_position_from_instance(self, instance, ordering) -> str:
        return f"{instance.created_at.isoformat()}{_POSITION_SEPARATOR}{instance.pk}"
