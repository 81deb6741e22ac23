"""The API's JSON parser: a body nested too deep to decode is a parse error (400), not a crash."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, which catches only ValueError: the decoder's
    RecursionError on a deeply nested body becomes a ParseError as well."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
