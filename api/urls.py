"""/api/: the REST API under v1/, its OpenAPI schema and docs, and the browser page for tokens."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from audit.api import views as audit_api
from changes.api import views as changes_api
from hosts.api import views as hosts_api

from . import views, views_pages

app_name = "api"

# Each app keeps its resources in its own api/ package (NetBox's habit); they share one router,
# so the names (api:hypervisor-detail...) and the root stay as one API.
router = SimpleRouter()
router.register("hypervisors", hosts_api.HypervisorViewSet, basename="hypervisor")
router.register("nics", hosts_api.NicViewSet, basename="nic")
router.register("vfs", hosts_api.VfViewSet, basename="vf")
router.register("libvirt-networks", hosts_api.LibvirtNetworkViewSet, basename="libvirtnetwork")
router.register("credentials", hosts_api.CredentialViewSet, basename="credential")
router.register("changes", changes_api.ChangeViewSet, basename="change")
router.register("rollouts", changes_api.RolloutViewSet, basename="rollout")
router.register("host-runs", changes_api.HostRunViewSet, basename="hostrun")
router.register("steps", changes_api.StepViewSet, basename="step")
router.register("audit-events", audit_api.AuditEventViewSet, basename="auditevent")
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
