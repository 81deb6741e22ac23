"""The API's JSON parser: every body it cannot take is a parse error (400), never a crash.

Two inputs get past DRF's own parser: a body nested too deep for the decoder
(RecursionError, which DRF does not catch), and numbers too large for a float
such as ``1e309``, which Python reads as infinity although JSON has no such
value. The second would travel on to a provider, and DRF's renderer refuses to
write it back.
"""

from __future__ import annotations

import codecs
import json
import math

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils.json import strict_constant


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"Number out of range: {text} is too large for a 64-bit float")
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser that also refuses non-finite numbers and over-deep nesting."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        try:
            return json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=strict_constant,
                parse_float=_finite_float,
            )
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
