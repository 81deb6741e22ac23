"""Content negotiation of the API: 406 in the error shape for a format no renderer gives,
and, for the completion endpoint, JSON instead (e.g. for `Accept: text/event-stream`)."""

from __future__ import annotations

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with an unknown `?format=` answering 406 that names the formats
    there are. DRF answers 404 to it, as to an unknown `.xml` suffix, which the API's
    URLs do not have: a client would read "no such object"."""

    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            formats = ", ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise NotAcceptable(
                f"Unknown format “{format}”: the formats this endpoint answers in are {formats}."
            )
        return matching


class JSONFallbackNegotiation(ContentNegotiation):
    """A streaming client asks for `text/event-stream`; answers that are not a stream
    (a non-streamed result, an error before the first event) are then JSON, never 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            renderer = renderers[0]
            return renderer, renderer.media_type
