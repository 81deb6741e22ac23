"""The loopback server's scripting: order, routes, defaults, recorded requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.upstreams.openai import OpenAIUpstream
from tests.upstreams.server import UNSCRIPTED_STATUS


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_replies_are_served_in_the_order_they_were_enqueued(openai_upstream):
    openai_upstream.enqueue_error(429, message="first")
    openai_upstream.enqueue_chat("second")

    first = _post(f"{openai_upstream.base_url}/chat/completions", {"n": 1})
    second = _post(f"{openai_upstream.base_url}/chat/completions", {"n": 2})

    assert first[0] == 429
    assert first[1]["error"]["message"] == "first"
    assert second[1]["choices"][0]["message"]["content"] == "second"
    assert [r.json for r in openai_upstream.requests] == [{"n": 1}, {"n": 2}]


def test_request_without_a_script_gets_418_and_is_noted(openai_upstream):
    status, body = _post(f"{openai_upstream.base_url}/chat/completions", {})

    assert status == UNSCRIPTED_STATUS
    assert body["error"]["message"] == (
        "Loopback upstream: no reply is scripted for POST /v1/chat/completions."
    )
    assert [reason for _, reason in openai_upstream.unanswered] == ["no reply is scripted"]


def test_reply_for_another_route_is_refused(openai_upstream):
    openai_upstream.enqueue_models(["gpt-4o"])

    status, body = _post(f"{openai_upstream.base_url}/chat/completions", {})

    assert status == UNSCRIPTED_STATUS
    assert "the next reply is for a 'models' request, not 'chat'" in body["error"]["message"]


def test_default_reply_answers_when_nothing_is_enqueued():
    with OpenAIUpstream() as upstream:
        upstream.enqueue_error(500)
        upstream.set_default(upstream.chat_reply("default"))

        answers = [_post(f"{upstream.base_url}/chat/completions", {}) for _ in range(3)]

    assert [status for status, _ in answers] == [500, 200, 200]
    assert answers[2][1]["choices"][0]["message"]["content"] == "default"


def test_raw_replies_are_sent_as_given(openai_upstream):
    openai_upstream.enqueue_raw("<html>oops</html>", content_type="text/html", route="chat")
    openai_upstream.enqueue_raw(chunks=["data: {oops\n\n", b"data: [DONE]\n\n"], route="chat")

    answers = []
    for _ in range(2):
        request = urllib.request.Request(
            f"{openai_upstream.base_url}/chat/completions", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answers.append((response.headers["Content-Type"], response.read()))

    assert answers == [
        ("text/html", b"<html>oops</html>"),
        ("application/json", b"data: {oops\n\ndata: [DONE]\n\n"),
    ]
