"""Encoding of AWS event-stream messages, the binary framing of Bedrock's ConverseStream.

A message is a prelude (total length, headers length, both uint32 big-endian,
then the CRC32 of those 8 bytes), the headers (name length uint8, name, value
type 7 = string, value length uint16, value), the payload, and the CRC32 of
everything before it.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

_STRING_HEADER = 7
# Prelude (12 bytes) + message CRC (4 bytes).
_FRAME_OVERHEAD = 16


def _headers_encode(headers: dict[str, str]) -> bytes:
    encoded = b""
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        encoded += struct.pack("!B", len(name_bytes)) + name_bytes
        encoded += struct.pack("!BH", _STRING_HEADER, len(value_bytes)) + value_bytes
    return encoded


def message_encode(headers: dict[str, str], payload: bytes) -> bytes:
    header_bytes = _headers_encode(headers)
    total = _FRAME_OVERHEAD + len(header_bytes) + len(payload)
    prelude = struct.pack("!II", total, len(header_bytes))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + header_bytes + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def event_encode(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event of the stream (`messageStart`, `contentBlockDelta`, `metadata`...)."""
    return message_encode(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        json.dumps(payload).encode(),
    )


def exception_encode(exception_type: str, message: str) -> bytes:
    """An error inside the stream (`throttlingException`, `modelStreamErrorException`...)."""
    return message_encode(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )
