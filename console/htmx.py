from django.shortcuts import render


def wants_partial(request) -> bool:
    """The one htmx rule (as NetBox): a partial for htmx requests, the full page otherwise."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def render_page(request, template: str, context: dict, *, partial: str | None = None, status: int = 200):
    """Render `template`, or only `partial` when htmx asked for it."""
    chosen = partial if partial and wants_partial(request) else template
    return render(request, chosen, context, status=status)
