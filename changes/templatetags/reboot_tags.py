"""Template helpers for reboots (issue 7): the host row's live "waiting for <host> to come back
(2m10s)" while a host run is rebooting (computed from the reboot step's start; steps prefetched)."""

from django import template

from changes.reboots import run_message

register = template.Library()


@register.filter
def host_run_message(run) -> str:
    return run_message(run)
