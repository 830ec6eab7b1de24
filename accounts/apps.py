from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and single sign-on"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings

        from .config import check_role_names

        check_role_names(getattr(settings, "LDAP_ROLE_MAP", {}), variable="LDAP_ROLE_MAP")
        check_role_names(getattr(settings, "OIDC_ROLE_MAP", {}), variable="OIDC_ROLE_MAP")
