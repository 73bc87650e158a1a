from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from masplatform.api import ObtainTokenView, router
from masplatform.throttling import throttled_login
from masplatform.views import SchemaView

admin.site.site_header = "masplatform"
admin.site.site_title = "masplatform admin"
admin.site.index_title = "Agents, workflows and conflicts"

handler500 = "masplatform.views.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # The logins, rate-limited (masplatform/throttling.py); these come before the routes they replace.
    path("admin/login/", throttled_login(admin.site.login)),
    path("api-auth/login/", throttled_login(LoginView.as_view(template_name="rest_framework/login.html"))),
    path("admin/", admin.site.urls),
    path("api/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("api/", include("messaging.urls")),  # the HTTP inbox and the bus's metrics
    path("api/", include(router.urls)),
    path("api-auth/", include("rest_framework.urls")),
]
