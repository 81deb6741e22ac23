"""URL configuration: the admin, the versioned API, its schema and its docs."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from llm_providers.api.views import SchemaView
from llm_providers.forms import LoginForm

api_v1 = [
    path("", include("llm_providers.api.urls")),
    path("", include("overrides.api.urls")),
    path("", include("usage.api.urls")),
]

# Log in and out of the browsable API: DRF's own views, with failed logins throttled
# per client address.
api_auth = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="rest_framework/login.html", authentication_form=LoginForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/auth/", include((api_auth, "rest_framework"))),
]

# Errors outside any API view (an unknown URL, a refused Host) answer the API's error
# shape under /api/.
handler400 = "llm_providers.api.views.bad_request"
handler404 = "llm_providers.api.views.not_found"
handler500 = "llm_providers.api.views.server_error"
