from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import security, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", security.ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("hosts/", include("hosts.urls")),
    path("audit/", include("audit.urls")),
    path("changes/", include("changes.urls")),
    path("api/", include("api.urls")),
    path("", include("accounts.urls")),
    path("notifications/", include("notifications.urls")),
    path("", include("metrics.urls")),
    path("admin/", admin.site.urls),
]

# In the site layout, with the reason; a 403 is audited (console.views.permission_denied).
handler403 = "console.views.permission_denied"
handler404 = "console.views.page_not_found"
