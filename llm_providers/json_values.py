"""Checks on JSON values from outside (options, chat messages): storable text, bounded nesting.

PostgreSQL refuses NUL characters and unpaired surrogates (`"\\ud800"`) in
text and jsonb, and deeply nested values exhaust the stack of any recursive
code that walks or encodes them. These checks walk iteratively, so a value
nested however deep is refused rather than crashing the check.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

# 64 levels: far more than provider options, chat messages or a tool's JSON
# schema need, and far below Python's recursion limit (json, DRF, psycopg).
MAX_JSON_DEPTH = 64

# What no name sent to a provider (a model's, a customer's) may hold.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MODEL_NAME_CONTROL = "A model name must not contain control characters (such as a line break)."

TEXT_NUL = "nul"
TEXT_SURROGATE = "surrogate"
TOO_DEEP = "too_deep"


def text_problem(text: str, *, allow_nul: bool = False) -> str | None:
    """TEXT_NUL or TEXT_SURROGATE when a database would refuse `text`, else None.

    `allow_nul`: only what cannot be encoded at all (an unpaired surrogate) is
    a problem; a NUL is valid JSON text (``"\\u0000"``) and may be sent on."""
    if not allow_nul and "\x00" in text:
        return TEXT_NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return TEXT_SURROGATE
    return None


def json_value_problem(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, allow_nul: bool = False
) -> str | None:
    """The first problem found in `value` (TEXT_NUL, TEXT_SURROGATE, TOO_DEEP), or None.

    Keys and string values are checked as text; a list or object counts as
    one level, so `{"a": [1]}` is two levels deep.
    """
    # (value, number of lists and objects around it)
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item, allow_nul=allow_nul)
            if problem:
                return problem
        elif isinstance(item, dict | list | tuple):
            if depth + 1 > max_depth:
                return TOO_DEEP
            if isinstance(item, dict):
                for key, child in item.items():
                    pending.append((key, depth + 1))
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)
    return None


def json_value_error(
    value: Any, *, subject: str, max_depth: int = MAX_JSON_DEPTH, allow_nul: bool = False
) -> str | None:
    """A message saying what is wrong with `value` (“Options must not …”), or None."""
    problem = json_value_problem(value, max_depth=max_depth, allow_nul=allow_nul)
    if problem == TEXT_NUL:
        return f"{subject} must not contain NUL characters."
    if problem == TEXT_SURROGATE:
        return f"{subject} must not contain unpaired surrogates (such as \\ud800)."
    if problem == TOO_DEEP:
        return f"{subject} must not be nested more than {max_depth} levels deep."
    return None


def text_error(text: str) -> str | None:
    """What a database column would refuse in `text`, as a field's message; or None."""
    problem = text_problem(text)
    if problem == TEXT_NUL:
        return "Must not contain NUL characters."
    if problem == TEXT_SURROGATE:
        return "Must not contain unpaired surrogates (such as \\ud800)."
    return None


def text_fields_errors(instance: models.Model) -> dict[str, list[str]]:
    """{field: [message]} for the text fields of `instance` that its table
    cannot store: None in a column without NULL, a NUL character or an
    unpaired surrogate.

    full_clean() lets them through (a field that may be blank skips its checks
    for None, and no check looks for the other two), so a Python caller's
    value would fail the INSERT instead: a DataError, or an IntegrityError
    that a save reports as some other conflict. Values that are not text are
    left to full_clean(), which converts them.
    """
    errors = {}
    for field in instance._meta.concrete_fields:
        if not isinstance(field, models.CharField | models.TextField):
            continue
        value = getattr(instance, field.attname)
        if value is None:
            if not field.null:
                errors[field.name] = ["This field cannot be null."]
            continue
        problem = text_error(value) if isinstance(value, str) else None
        if problem:
            errors[field.name] = [problem]
    return errors


def model_name_validate(value: str) -> None:
    """A model name stored for calls to send (a default, an override's): one
    with a control character would be sent as it is, where a call naming it
    is refused (chat_input.model_validate)."""
    if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
        raise ValidationError(MODEL_NAME_CONTROL, code="control_characters")
