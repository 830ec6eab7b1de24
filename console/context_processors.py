from .roles import PERMISSIONS, has_permission


def roles(request):
    """`can.operate`, `can.approve`... for templates, so menus show only what the user may do."""
    user = getattr(request, "user", None)
    return {"can": {codename: has_permission(user, codename) for codename in PERMISSIONS}}
