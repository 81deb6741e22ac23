"""Reading the OpenAI-shaped chat messages for adapters whose vendors use another shape."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ProviderBadRequest
from .types import Message, Tool

# Appended to the system prompt when a request asks for JSON and the vendor
# has no JSON switch that works on every one of its models.
JSON_MODE_INSTRUCTION = (
    "Answer with a single valid JSON object and nothing else: "
    "no prose before or after it, no code fences."
)

# The user turn put before a conversation that begins with the assistant's:
# Bedrock Converse refuses one whose first turn is not the user's. A bare
# mark: it asks nothing of the model and costs one token.
LEADING_USER_TEXT = "."

_DATA_URL = re.compile(
    r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL
)
# Line breaks and spaces inside base64 (MIME encoders wrap it every 76
# characters): callers may send them, vendors take the data without them.
_WHITESPACE = re.compile(r"\s+")
# Media type names in common use that are not the registered ones vendors
# take: Anthropic accepts only image/jpeg, and browsers and tools still write
# image/jpg.
_MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
# The first bytes of the formats vendors take. Anthropic refuses (400) an
# image whose bytes are not of the media type its data URL names, where
# OpenAI looks at the bytes; so the bytes decide when they are recognised.
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# 16 base64 characters: the first 12 bytes, enough for every signature.
_SIGNATURE_CHARACTERS = 16


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image given as a base64 data URL."""

    media_type: str
    data: str  # base64 text, whitespace removed

    def raw(self) -> bytes:
        try:
            return base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProviderBadRequest("An image data URL does not hold valid base64.") from exc


def image_parse(url: str) -> InlineImage | None:
    """The inline image of a `data:<type>;base64,...` URL, or None for another URL."""
    match = _DATA_URL.match(url or "")
    if not match:
        return None
    media_type = match.group("media_type").lower()
    data = _WHITESPACE.sub("", match.group("data"))
    return InlineImage(
        media_type=_media_type_of_bytes(data) or _MEDIA_TYPE_ALIASES.get(media_type, media_type),
        data=data,
    )


def _media_type_of_bytes(data: str) -> str | None:
    """The image format the first bytes of base64 `data` show, if a known one."""
    try:
        head = base64.b64decode(data[:_SIGNATURE_CHARACTERS], validate=True)
    except (binascii.Error, ValueError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in _IMAGE_SIGNATURES if head.startswith(signature)), None)


def content_parts(content: Any) -> Iterator[dict[str, Any]]:
    """The parts of a message's content: a plain string counts as one text part."""
    if isinstance(content, str):
        yield {"type": "text", "text": content}
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                yield part
            elif isinstance(part, str):
                yield {"type": "text", "text": part}


def has_visible_text(text: Any) -> bool:
    """Whether a text part says anything: Anthropic and Bedrock refuse (400) a
    text block that is empty or only whitespace, and models often answer
    "\\n\\n" beside a tool call, which callers send back in the conversation."""
    return isinstance(text, str) and bool(text.strip())


def sent_stop_sequences(stops: list[str] | None) -> list[str]:
    """The stop sequences sent to the vendor: those `local_stops` leaves out."""
    return [stop for stop in stops or () if has_visible_text(stop)]


def local_stops(stops: list[str] | None) -> list[str]:
    """The stop sequences Anthropic and Bedrock adapters apply themselves:
    Anthropic's API refuses (400) one that is only whitespace ("\\n" is
    common), so those are not sent but cut the answer (on Bedrock too, where
    Claude is the same model behind another API)."""
    return [stop for stop in stops or () if not has_visible_text(stop)]


def stop_position(text: str, stops: list[str]) -> int | None:
    """Where the first of `stops` in `text` begins, if one is there."""
    found = [position for stop in stops if (position := text.find(stop)) != -1]
    return min(found) if found else None


def stop_prefix_length(text: str, stops: list[str]) -> int:
    """The length of the longest end of `text` that begins one of `stops`."""
    longest = max((len(stop) for stop in stops), default=0)
    for length in range(min(longest - 1, len(text)), 0, -1):
        if any(stop.startswith(text[-length:]) for stop in stops):
            return length
    return 0


def held_text_split(held: str, stops: list[str]) -> tuple[str, str, bool]:
    """Apply `stops` to the text a stream holds back: (what is ready to send,
    what stays held as it may begin a stop sequence, whether one was found,
    in which case what stays held is all that is left of the answer)."""
    cut = stop_position(held, stops)
    if cut is not None:
        return "", held[:cut], True
    kept = stop_prefix_length(held, stops)
    return held[: len(held) - kept], held[len(held) - kept :], False


def content_text(content: Any) -> str:
    """The text parts of a message's content, joined."""
    return "".join(p.get("text") or "" for p in content_parts(content) if p.get("type") == "text")


def image_url_of(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    return image.get("url", "") if isinstance(image, dict) else str(image or "")


def system_prompt(messages: list[Message], *, json_mode: bool) -> str:
    """The system messages joined, plus the JSON instruction when asked for."""
    pieces = [content_text(m.get("content")) for m in messages if m.get("role") == "system"]
    if json_mode:
        pieces.append(JSON_MODE_INSTRUCTION)
    return "\n\n".join(p for p in pieces if has_visible_text(p))


def tool_arguments_parse(arguments: str | None, name: str) -> dict[str, Any]:
    """A tool call's JSON arguments as a dict (vendors other than OpenAI want objects)."""
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ProviderBadRequest(
            f"The arguments of the call to tool “{name}” are not valid JSON."
        ) from exc
    if not isinstance(parsed, dict):
        raise ProviderBadRequest(f"The arguments of the call to tool “{name}” must be an object.")
    return parsed


def tool_function(tool: Tool) -> dict[str, Any]:
    """The function part of an OpenAI function tool, with an object schema."""
    function = tool.get("function") or {}
    if not function.get("name"):
        raise ProviderBadRequest("Every tool needs a function with a name.")
    return {
        "name": function["name"],
        "description": function.get("description") or "",
        "parameters": function.get("parameters") or {"type": "object", "properties": {}},
    }


def arguments_dump(arguments: Any) -> str:
    """A vendor's tool input (an object) as the JSON text `ToolCall` carries."""
    return json.dumps(arguments if arguments is not None else {}, separators=(",", ":"))


def conversation_turns(
    messages: list[dict[str, Any]],
    *,
    text_block: Callable[[str], dict[str, Any]],
    is_tool_result: Callable[[dict[str, Any]], bool],
) -> list[dict[str, Any]]:
    """Converted messages as turns Anthropic and Bedrock take: roles alternate
    (consecutive messages of one role are joined, empty ones dropped), a user
    turn's tool results come before its other content (each tool call wants
    its result at the start of the next user turn), and the first turn is the
    user's (`LEADING_USER_TEXT` before one that begins with the assistant)."""
    turns = merge_same_role(messages)
    for turn in turns:
        if turn["role"] == "user":
            results = [block for block in turn["content"] if is_tool_result(block)]
            others = [block for block in turn["content"] if not is_tool_result(block)]
            turn["content"] = results + others
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [text_block(LEADING_USER_TEXT)]})
    return turns


def merge_same_role(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join consecutive messages of one role: Anthropic and Bedrock want turns to alternate
    (several tool results answering one assistant turn become one user turn)."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if not message["content"]:
            continue
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(message["content"])
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    return merged
