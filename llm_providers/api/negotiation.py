"""Content negotiation of the completion endpoint: JSON whenever the client's Accept
header names nothing the endpoint renders (e.g. `Accept: text/event-stream`)."""

from __future__ import annotations

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class JSONFallbackNegotiation(DefaultContentNegotiation):
    """A streaming client asks for `text/event-stream`; answers that are not a stream
    (a non-streamed result, an error before the first event) are then JSON, never 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            renderer = renderers[0]
            return renderer, renderer.media_type
