"""/api/: the REST API under v1/, its OpenAPI schema and docs, and the browser page for tokens."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import views, views_pages

app_name = "api"

router = SimpleRouter()
router.register("hypervisors", views.HypervisorViewSet, basename="hypervisor")
router.register("nics", views.NicViewSet, basename="nic")
router.register("vfs", views.VfViewSet, basename="vf")
router.register("credentials", views.CredentialViewSet, basename="credential")
router.register("changes", views.ChangeViewSet, basename="change")
router.register("rollouts", views.RolloutViewSet, basename="rollout")
router.register("host-runs", views.HostRunViewSet, basename="hostrun")
router.register("steps", views.StepViewSet, basename="step")
router.register("audit-events", views.AuditEventViewSet, basename="auditevent")
router.register("tokens", views.TokenViewSet, basename="token")

urlpatterns = [
    path("v1/", views.ApiRootView.as_view(), name="root"),
    path("v1/me/", views.MeView.as_view(), name="me"),
    path("v1/", include(router.urls)),
    path("schema/", views_pages.SchemaView.as_view(), name="schema"),
    path("docs/", views_pages.docs, name="docs"),
    path("tokens/", views_pages.token_page, name="tokens"),
    path("tokens/<int:pk>/revoke/", views_pages.token_revoke, name="token_revoke"),
]
