"""Who a console user is in the directory: one row per external identity that logs in as them.

A person is the directory's, not an account name: LDAP's entryUUID / AD's objectGUID, OIDC's
(issuer, sub). Every identity maps to exactly one console user, so four-eyes (`requested_by !=
approver`, changes/approvals.py) holds whichever way the person logs in. `directory_id` is the
person key shared across sources: the LDAP entry's UUID, and for OIDC the value of the claim
named by OIDC_DIRECTORY_ID_CLAIM (Keycloak's LDAP_ID, Entra ID's on-premises immutable id), so an
LDAP login and an OIDC login of the same directory entry land on the same console user.
"""

from django.conf import settings
from django.db import models


class ExternalIdentity(models.Model):
    class Source(models.TextChoices):
        LDAP = "ldap", "LDAP / Active Directory"
        OIDC = "oidc", "OpenID Connect"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identities")
    source = models.CharField(max_length=10, choices=Source.choices)
    # LDAP: the directory's name (LDAP_DIRECTORY_NAME); OIDC: the issuer URL.
    issuer = models.CharField(max_length=255)
    # LDAP: entryUUID / objectGUID as a canonical UUID string; OIDC: `sub`.
    subject = models.CharField(max_length=255)
    directory_id = models.CharField(max_length=255, blank=True, db_index=True)
    # The name the person typed or the provider gave, as last seen (the console user keeps its own).
    external_name = models.CharField(max_length=255, blank=True)
    # The directory groups / claim values seen at the last login, for the profile page.
    groups = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["source", "issuer", "subject"]
        constraints = [
            models.UniqueConstraint(fields=["source", "issuer", "subject"], name="identity_unique_subject")
        ]

    def __str__(self):
        return f"{self.get_source_display()} {self.external_name or self.subject}"
