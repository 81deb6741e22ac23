"""Validation of what callers ask for: messages, parameters, tools, embedding inputs.

Every refusal names the field and says what to fix, before anything is
routed, reserved or sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings

from config.settings.consistency import RESERVATION_SETTLE_SECONDS, call_deadline_most

from .exceptions import ApplicationError
from .json_values import CONTROL_CHARACTERS, json_value_error, text_problem

ROLES = frozenset({"system", "user", "assistant", "tool"})
# Data URLs only: the layer never fetches images from URLs on a caller's behalf.
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")
MAX_STOP_SEQUENCES = 4
# Larger than any model's output window; beyond it a value is a mistake.
MAX_TOKENS_LIMIT = 1_000_000
# The width of CallLog.customer_id / service_name.
MAX_SCOPE_LENGTH = 200
# The width of CallLog.model_requested (and of every model column).
MAX_MODEL_LENGTH = 200
_TEXT_UNSENDABLE = "must not contain unpaired surrogates (such as \\ud800)."
# What OpenAI, Anthropic and Bedrock all accept as a tool name: checked here, a
# name one of them refuses would fail every fallback alike.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# 2,048 inputs per embedding call: what the largest providers accept at once.
MAX_EMBED_INPUTS = 2_048
# The size of a tool call's `extra_content` as JSON (UTF-8). Gemini's thought
# signatures, the data it carries, run to a few thousand characters; 64 KiB
# leaves them ten times that and keeps one field from filling a request.
MAX_TOOL_CALL_EXTRA_CONTENT_BYTES = 65_536


class InvalidRequest(ApplicationError):
    code = "invalid_request"
    http_status = 400

    def __init__(self, field: str, message: str):
        super().__init__(message, extra={"field": field})
        self.field = field


def _content_validate(index: int, role: str, content: Any) -> None:
    where = f"messages[{index}].content"
    if isinstance(content, str):
        return
    if content is None and role == "assistant":
        return
    if not isinstance(content, list) or not content:
        raise InvalidRequest(where, f"{where} must be a string or a non-empty list of parts.")
    for part_index, part in enumerate(content):
        part_where = f"{where}[{part_index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(part_where, f"{part_where}.text must be a string.")
        elif kind == "image_url":
            if role != "user":
                raise InvalidRequest(part_where, f"{part_where}: only user messages carry images.")
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not _DATA_URL.match(url):
                raise InvalidRequest(
                    part_where,
                    f"{part_where}.image_url.url must be a base64 data URL "
                    "(data:image/png;base64,...).",
                )
        else:
            raise InvalidRequest(part_where, f"{part_where}.type must be “text” or “image_url”.")


def _extra_content_validate(where: str, extra_content: Any) -> None:
    """A tool call's `extra_content` as an answer gave it: a JSON object of
    bounded size, or null. It is passed on verbatim, so only the shape of the
    data known here (Gemini's thought signature) is checked."""
    if extra_content is None:
        return
    if not isinstance(extra_content, dict):
        raise InvalidRequest(
            where, f"{where} must be a JSON object, as the tool call was answered with, or null."
        )
    problem = json_value_error(extra_content, subject=where)
    if problem:
        raise InvalidRequest(where, problem)
    try:
        text = json.dumps(extra_content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        raise InvalidRequest(where, f"{where} must hold JSON values only.") from None
    if len(text.encode()) > MAX_TOOL_CALL_EXTRA_CONTENT_BYTES:
        raise InvalidRequest(
            where, f"{where} is larger than {MAX_TOOL_CALL_EXTRA_CONTENT_BYTES:,} bytes as JSON."
        )
    if "google" not in extra_content:
        return
    google = extra_content["google"]
    if not isinstance(google, dict):
        raise InvalidRequest(where, f"{where}.google must be a JSON object.")
    signature = google.get("thought_signature", "-")
    if not isinstance(signature, str) or not signature:
        raise InvalidRequest(where, f"{where}.google.thought_signature must be a non-empty string.")


def _json_text_validate(where: str, value: Any) -> None:
    """Refuse what no request can carry: half of a surrogate pair, which the
    SDKs fail to encode once the call is routed and reserved, and nesting beyond
    MAX_JSON_DEPTH, which their recursive encoders fail on. A NUL is valid
    JSON text and goes on (the API refuses it, as it stores what it takes)."""
    problem = json_value_error(value, subject=where, allow_nul=True)
    if problem:
        raise InvalidRequest(where, problem)


def messages_validate(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages", "messages must be a non-empty list.")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(where, f"{where} must be an object with a role and content.")
        role = message.get("role")
        # A list or an object is no role, and cannot be looked up in a set.
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(
                f"{where}.role", f"{where}.role must be one of {', '.join(sorted(ROLES))}."
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise InvalidRequest(
                f"{where}.tool_call_id", f"{where}: a tool message needs its tool_call_id."
            )
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if role != "assistant" or not isinstance(tool_calls, list):
                raise InvalidRequest(
                    f"{where}.tool_calls", f"{where}: only assistant messages carry tool_calls."
                )
            for call_index, call in enumerate(tool_calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not (
                    isinstance(function, dict)
                    and isinstance(call.get("id"), str)
                    and isinstance(function, dict)
                    and isinstance(function.get("name"), str)
                    and isinstance(function.get("arguments"), str)
                ):
                    raise InvalidRequest(
                        f"{where}.tool_calls[{call_index}]",
                        f"{where}.tool_calls[{call_index}] needs an id and a function with a "
                        "name and JSON arguments text.",
                    )
                _extra_content_validate(
                    f"{where}.tool_calls[{call_index}].extra_content", call.get("extra_content")
                )
        if "content" not in message and not tool_calls:
            raise InvalidRequest(f"{where}.content", f"{where} has no content.")
        _content_validate(index, role, message.get("content"))
        _json_text_validate(where, message)
    if all(m["role"] == "system" for m in messages):
        raise InvalidRequest("messages", "messages need at least one non-system message.")
    return messages


def tools_validate(tools: Any) -> list[dict] | None:
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("tools", "tools must be a list of function tools.")
    names = set()
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name or tool.get("type") != "function":
            raise InvalidRequest(
                f"tools[{index}]",
                f"tools[{index}] must be a function tool: "
                '{"type": "function", "function": {"name": ..., "parameters": {...}}}.',
            )
        if not TOOL_NAME.fullmatch(name):
            raise InvalidRequest(
                f"tools[{index}].function.name",
                f"Tool name “{name[:80]}” must be 1 to 64 letters, digits, underscores or dashes.",
            )
        if name in names:
            raise InvalidRequest(f"tools[{index}]", f"Tool name “{name}” is used twice.")
        names.add(name)
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"tools[{index}].function.parameters",
                "Tool parameters must be a JSON schema object.",
            )
        _json_text_validate(f"tools[{index}]", tool)
    return tools


# The bounds of a call's deadline (also of LLM_CALL_DEADLINE_SECONDS): less
# than a second leaves no provider time to answer, so such a call could only
# time out; more than ten minutes outlasts any proxy in front of the API.
MIN_DEADLINE_SECONDS = 1
MAX_DEADLINE_SECONDS = 600


def deadline_most() -> float:
    """The longest deadline a call may set: MAX_DEADLINE_SECONDS, or less when the
    call's budget reservation would lapse before a call that long is settled
    (USAGE_BUDGET_RESERVATION_TTL_SECONDS, config/settings/consistency.py)."""
    return call_deadline_most(settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS, MAX_DEADLINE_SECONDS)


def deadline_invalid() -> str:
    """What a deadline out of its bounds is told."""
    most = deadline_most()
    reason = (
        ""
        if most >= MAX_DEADLINE_SECONDS
        else f" (budget reservations on this server last "
        f"{settings.USAGE_BUDGET_RESERVATION_TTL_SECONDS:g} s, "
        f"{RESERVATION_SETTLE_SECONDS} s of which are kept for settling the call)"
    )
    return f"deadline must be a number of seconds from {MIN_DEADLINE_SECONDS} to {most:g}{reason}."


def deadline_validate(deadline: Any) -> float:
    """A call's deadline in seconds; None: the LLM_CALL_DEADLINE_SECONDS setting."""
    if deadline is None:
        return float(settings.LLM_CALL_DEADLINE_SECONDS)
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not MIN_DEADLINE_SECONDS <= deadline <= deadline_most()
    ):
        # NaN fails the range check too: no comparison with it holds.
        raise InvalidRequest("deadline", deadline_invalid())
    return float(deadline)


def parameters_validate(
    *, max_tokens: Any, temperature: Any, top_p: Any, stop: Any, timeout: Any
) -> list[str] | None:
    """Check numeric parameters; return stop sequences as a list (or None)."""
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise InvalidRequest(
            "max_tokens", f"max_tokens must be a whole number from 1 to {MAX_TOKENS_LIMIT:,}."
        )
    for name, value, upper in (("temperature", temperature, 2), ("top_p", top_p, 1)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper
        ):
            raise InvalidRequest(name, f"{name} must be a number between 0 and {upper}.")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600
    ):
        raise InvalidRequest(
            "timeout", "timeout must be a number of seconds greater than 0 and at most 600."
        )
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOP_SEQUENCES
    ):
        raise InvalidRequest(
            "stop", f"stop must be a string or a list of up to {MAX_STOP_SEQUENCES} strings."
        )
    if any(text_problem(s, allow_nul=True) for s in stops):
        raise InvalidRequest("stop", f"stop {_TEXT_UNSENDABLE}")
    return list(stops) or None


def scope_validate(*, customer_id: Any, service_name: Any) -> tuple[str, str]:
    """The customer and service a call is for: short, printable strings ('' = none).

    Leading and trailing spaces are dropped, as the API and the admin forms
    drop them, so that an override or a budget saved there matches the calls
    a program makes for the same customer.
    """
    scope = []
    for field, value in (("customer_id", customer_id), ("service_name", service_name)):
        if not isinstance(value, str):
            raise InvalidRequest(field, f"{field} must be a string.")
        value = value.strip()
        if len(value) > MAX_SCOPE_LENGTH:
            raise InvalidRequest(field, f"{field} is longer than {MAX_SCOPE_LENGTH} characters.")
        if CONTROL_CHARACTERS.search(value):
            raise InvalidRequest(field, f"{field} must not contain control characters.")
        if text_problem(value):
            raise InvalidRequest(
                field, f"{field} must be valid Unicode text: it holds half of a surrogate pair."
            )
        scope.append(value)
    return scope[0], scope[1]


def model_validate(model: Any) -> str | None:
    """The model a call names, trimmed as the API trims it; None (also for a
    blank name): the route's model.

    Refused unless its call log can record it as named: a model the row had to
    cut or could not hold would be paid for and logged as another, or not at
    all.
    """
    if model is None:
        return None
    if not isinstance(model, str):
        raise InvalidRequest("model", "model must be a string.")
    model = model.strip()
    if len(model) > MAX_MODEL_LENGTH:
        raise InvalidRequest("model", f"model is longer than {MAX_MODEL_LENGTH} characters.")
    if CONTROL_CHARACTERS.search(model):
        raise InvalidRequest("model", "model must not contain control characters.")
    if text_problem(model):
        raise InvalidRequest(
            "model", "model must be valid Unicode text: it holds half of a surrogate pair."
        )
    return model or None


def scope_fields_clean(instance: Any, *, consequence: str) -> dict[str, str]:
    """Trim the `customer_id` and `service_name` of a stored scope (an override,
    a budget) as calls are trimmed, and name those no call can carry.

    Returns {field: message}, each message followed by `consequence`; a value
    over the field's length is left to the field's own message.
    """
    errors = {}
    for field in ("customer_id", "service_name"):
        value = getattr(instance, field).strip()
        setattr(instance, field, value)
        if len(value) > instance._meta.get_field(field).max_length:
            continue
        try:
            scope_validate(**{"customer_id": "", "service_name": "", field: value})
        except InvalidRequest as exc:
            errors[field] = f"{exc.message} Calls that carry one are refused, so {consequence}"
    return errors


def embed_inputs_validate(inputs: Any) -> list[str]:
    if isinstance(inputs, str):
        inputs = [inputs]
    if (
        not isinstance(inputs, list)
        or not inputs
        or not all(isinstance(text, str) and text for text in inputs)
    ):
        raise InvalidRequest("inputs", "inputs must be a non-empty string or list of strings.")
    if len(inputs) > MAX_EMBED_INPUTS:
        raise InvalidRequest("inputs", f"At most {MAX_EMBED_INPUTS} inputs per call.")
    for index, text in enumerate(inputs):
        if text_problem(text, allow_nul=True):
            raise InvalidRequest("inputs", f"inputs[{index}] {_TEXT_UNSENDABLE}")
    return inputs
