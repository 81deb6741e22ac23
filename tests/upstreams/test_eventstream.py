"""The event-stream encoder of the loopback Bedrock server, checked by botocore's own decoder."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from tests.upstreams.eventstream import event_encode, exception_encode


def test_event_encode_produces_a_frame_botocore_decodes():
    buffer = EventStreamBuffer()
    buffer.add_data(event_encode("contentBlockDelta", {"delta": {"text": "Hé"}}))

    message = next(buffer)

    assert message.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(message.payload) == {"delta": {"text": "Hé"}}


def test_exception_encode_is_decoded_as_an_exception_message():
    buffer = EventStreamBuffer()
    buffer.add_data(exception_encode("throttlingException", "Slow down"))

    message = next(buffer)

    assert message.headers[":message-type"] == "exception"
    assert message.to_response_dict()["status_code"] == 400


def test_event_encode_checksum_covers_the_payload():
    frame = bytearray(event_encode("messageStop", {"stopReason": "end_turn"}))
    frame[-6] ^= 0xFF  # a payload byte
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(frame))

    with pytest.raises(ChecksumMismatch):
        next(buffer)
