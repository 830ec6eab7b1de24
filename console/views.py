from .htmx import render_page
from .roles import require_permission


@require_permission("view_fleet")
def dashboard(request):
    return render_page(request, "console/dashboard.html", {})
