"""Reading providers' answers: the checks that keep a malformed answer from
passing for one, and garbage usage figures from being billed.

The SDKs build their answer objects from whatever JSON came, without checking
it against the wire format: the openai and anthropic SDKs construct their
models unvalidated, botocore takes most values as they are. Any field can
thus be missing or hold any JSON value. The adapters read answers through
these helpers: a value of the wrong shape makes the answer a
`MalformedAnswer`, a usage figure that is no count of tokens raises
`UnusableUsage` (the adapter then estimates the usage), and an answer that
names no model is taken to come from the model requested.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .errors import malformed_answer

# 100 million: ten times the largest context window offered (10M tokens). A
# usage figure above it is no count of one call's tokens; it also keeps every
# figure far inside CallLog's integer columns (2,147,483,647).
MAX_REPORTED_TOKENS = 100_000_000


class UnusableUsage(Exception):
    """A usage figure is reported but is no count of tokens."""


def is_object(value: Any) -> bool:
    """Whether a value of an answer is a JSON object (a dict, or the SDK's model of one)."""
    return isinstance(value, dict | BaseModel)


def member(value: Any, name: str) -> Any:
    """The member `name` of a JSON object (a dict or the SDK's model of one);
    None when it is missing, or when `value` is no object."""
    if isinstance(value, dict):
        return value.get(name)
    if isinstance(value, BaseModel):
        return getattr(value, name, None)
    return None


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages: "a number", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if is_object(value):
        return "an object"
    return type(value).__name__


def not_an_object(value: Any) -> str:
    """What is wrong with an answer whose body is not a JSON object. An SDK
    hands over the body's text when it is not JSON."""
    if isinstance(value, str):
        return "it is not JSON"
    return f"it is {json_kind(value)}, not a JSON object"


def answer_object(value: Any, label: str) -> Any:
    """`value`, an answer's body as its SDK parsed it, when it is a JSON object."""
    if not is_object(value):
        raise malformed_answer(label, not_an_object(value))
    return value


def optional_text(value: Any, label: str, what: str) -> str | None:
    """`value` when it is text or null; `what` names it in the error otherwise."""
    if value is None or isinstance(value, str):
        return value
    raise malformed_answer(label, f"{what} is {json_kind(value)}, not text")


def optional_object(value: Any, label: str, what: str) -> Any:
    """`value` when it is a JSON object or null; `what` names it in the error otherwise."""
    if value is None or is_object(value):
        return value
    raise malformed_answer(label, f"{what} is {json_kind(value)}, not an object")


def optional_list(value: Any, label: str, what: str) -> list[Any]:
    """`value` when it is a list, [] when null; `what` names it in the error otherwise."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise malformed_answer(label, f"{what} is {json_kind(value)}, not a list")


def optional_index(value: Any, label: str, what: str) -> int | None:
    """`value` when it is a whole number or null; `what` names it in the error otherwise."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise malformed_answer(label, f"{what} is {json_kind(value)}, not a whole number")


def token_figure(value: Any) -> int | None:
    """A usage figure as a count of tokens; None when it is not reported
    (missing or null). Raises `UnusableUsage` when it is reported but is no
    count: not a number (text, a boolean), negative, with a fraction (10.5;
    10.0 counts as 10), not finite, or above `MAX_REPORTED_TOKENS`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnusableUsage
    if isinstance(value, float):
        # NaN and infinities are no whole numbers either.
        if not value.is_integer():
            raise UnusableUsage
        value = int(value)
    if not 0 <= value <= MAX_REPORTED_TOKENS:
        raise UnusableUsage
    return value


def token_figures(usage: Any, names: tuple[str, ...]) -> dict[str, int]:
    """The figures `names` of a usage object that it reports (missing and null
    ones left out; none of a null object). Raises `UnusableUsage` when it is
    no object or one of them is no count."""
    if usage is None:
        return {}
    if not is_object(usage):
        raise UnusableUsage
    figures = {}
    for name in names:
        figure = token_figure(member(usage, name))
        if figure is not None:
            figures[name] = figure
    return figures


def answered_model(value: Any, requested: str) -> str:
    """The model an answer names, or `requested` when it names none (missing,
    null, blank or not text): prices and logs then go by the model asked for."""
    return value if isinstance(value, str) and value.strip() else requested


def required_object(value: Any, label: str, what: str) -> Any:
    """`value` when it is a JSON object; `what` names it in the error otherwise."""
    if value is None:
        raise malformed_answer(label, f"{what} is missing")
    if is_object(value):
        return value
    raise malformed_answer(label, f"{what} is {json_kind(value)}, not an object")
