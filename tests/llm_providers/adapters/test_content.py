"""Reading OpenAI-shaped messages: data URLs, text parts, tool arguments, merged turns."""

from __future__ import annotations

import pytest

from llm_providers.adapters.content import (
    JSON_MODE_INSTRUCTION,
    content_text,
    image_parse,
    merge_same_role,
    system_prompt,
    tool_arguments_parse,
    tool_function,
)
from llm_providers.adapters.errors import ProviderBadRequest


def test_image_parse_reads_media_type_and_data_when_url_is_a_base64_data_url():
    image = image_parse("data:image/jpeg;base64,/9j/4AAQ")

    assert image.media_type == "image/jpeg"
    assert image.data == "/9j/4AAQ"
    assert image.raw() == b"\xff\xd8\xff\xe0\x00\x10"


@pytest.mark.parametrize(
    ("declared", "data", "expected"),
    [
        ("image/png", "/9j/4AAQSkZJRg==", "image/jpeg"),
        ("image/jpeg", "iVBORw0KGgoAAAANSUhEUg==", "image/png"),
        ("image/png", "R0lGODlhAQABAAAAACw=", "image/gif"),
        ("image/png", "UklGRiQAAABXRUJQVlA4IA==", "image/webp"),
        # Bytes of no format known here: the label stands.
        ("image/webp", "AAAAAAAAAAAAAAAA", "image/webp"),
    ],
)
def test_image_parse_takes_the_media_type_of_the_bytes_when_the_label_differs(
    declared, data, expected
):
    assert image_parse(f"data:{declared};base64,{data}").media_type == expected


def test_image_parse_returns_none_when_url_is_a_link():
    assert image_parse("https://example.com/cat.png") is None


def test_image_raw_refuses_data_that_is_not_base64():
    image = image_parse("data:image/png;base64,not*base64")

    with pytest.raises(ProviderBadRequest) as caught:
        image.raw()

    assert caught.value.message == "An image data URL does not hold valid base64."


def test_content_text_joins_text_parts_and_skips_images():
    content = [
        {"type": "text", "text": "Look "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
        {"type": "text", "text": "here."},
    ]

    assert content_text(content) == "Look here."
    assert content_text("plain") == "plain"
    assert content_text(None) == ""


def test_system_prompt_joins_system_messages_and_adds_the_json_instruction():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Answer in French."},
    ]

    assert system_prompt(messages, json_mode=False) == "Be brief.\n\nAnswer in French."
    assert system_prompt([], json_mode=True) == JSON_MODE_INSTRUCTION


def test_tool_arguments_parse_refuses_json_that_is_not_an_object():
    with pytest.raises(ProviderBadRequest) as caught:
        tool_arguments_parse("[1, 2]", "lookup")

    assert caught.value.message == "The arguments of the call to tool “lookup” must be an object."
    assert tool_arguments_parse("", "lookup") == {}


def test_tool_function_refuses_a_tool_without_a_name():
    with pytest.raises(ProviderBadRequest) as caught:
        tool_function({"type": "function", "function": {"description": "x"}})

    assert caught.value.message == "Every tool needs a function with a name."


def test_merge_same_role_joins_consecutive_turns_and_drops_empty_ones():
    merged = merge_same_role(
        [
            {"role": "user", "content": [{"text": "a"}]},
            {"role": "user", "content": [{"text": "b"}]},
            {"role": "assistant", "content": []},
            {"role": "assistant", "content": [{"text": "c"}]},
        ]
    )

    assert merged == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}]},
    ]
