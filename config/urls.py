"""URL configuration: the admin, the versioned API, its schema and its docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

api_v1 = [
    path("", include("llm_providers.api.urls")),
    path("", include("overrides.api.urls")),
    path("", include("usage.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Log in and out of the browsable API.
    path("api/auth/", include("rest_framework.urls")),
]

# Errors outside any API view (an unknown URL, a refused Host) answer the API's error
# shape under /api/.
handler400 = "llm_providers.api.views.bad_request"
handler404 = "llm_providers.api.views.not_found"
handler500 = "llm_providers.api.views.server_error"
