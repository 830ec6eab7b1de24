from django.conf import settings


def sso(request):
    """What the login page offers: the directory (same form as local accounts) and/or OIDC."""
    return {
        "sso": {
            "ldap": getattr(settings, "LDAP_ENABLED", False),
            "oidc": getattr(settings, "OIDC_ENABLED", False),
            "oidc_name": getattr(settings, "OIDC_DISPLAY_NAME", "single sign-on"),
        }
    }
