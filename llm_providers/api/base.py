"""What every API view shares, tenant-scoped or not.

A method the path does not have answers 405, with the `Allow` header listing
the ones it has, before anything else is looked at: the credentials (DRF
would authenticate first, and answer 401 to a bad one and 403 to a session
without a CSRF token), the role, the tenant, the `Accept` header and the
query. Whoever asks learns the same, and nothing more.

Views of the API mix in `APIViewMixin`, which also brings the API's content
negotiation (`negotiation.ContentNegotiation`) and its schema inspector
(`schema.ViewSchema`); a view from a library (the OpenAPI schema's) mixes in
`MethodCheckedFirstMixin` alone.
"""

from __future__ import annotations

from rest_framework.exceptions import MethodNotAllowed

from .negotiation import ContentNegotiation
from .schema import ViewSchema


class MethodCheckedFirstMixin:
    """Mixed in before DRF's view class: 405 before authentication, permissions and throttles."""

    def initial(self, request, *args, **kwargs):
        method = request.method.lower()
        if method not in self.http_method_names or not hasattr(self, method):
            # In the view's first format (JSON for the API's views), whatever the
            # request asks for: the browsable API's page would show the caller,
            # who is not looked up.
            renderer = self.get_renderers()[0]
            request.accepted_renderer, request.accepted_media_type = renderer, renderer.media_type
            raise MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)


class APIViewMixin(MethodCheckedFirstMixin):
    """The base of every view under /api/v1/."""

    content_negotiation_class = ContentNegotiation
    schema = ViewSchema()
    # Whether the view acts for a tenant (`scoping.TenantScopedAPIMixin`), as the
    # schema says in its error answers.
    acts_for_tenant = False
