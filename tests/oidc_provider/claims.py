"""The provider's claims: preferred_username, e-mail, names, groups and the directory id
(`ldap_id`, as Keycloak's LDAP federation exposes it) from users.json."""

import json

from django.conf import settings
from oauth2_provider.oauth2_validators import OAuth2Validator


def people() -> dict:
    return json.loads((settings.DIR / "users.json").read_text())


class ClaimsValidator(OAuth2Validator):
    oidc_claim_scope = None  # every claim below, whatever the scopes

    def get_additional_claims(self, request):
        person = people().get(request.user.username, {})
        claims = {
            "preferred_username": request.user.username,
            "email": person.get("email", ""),
            "given_name": person.get("given_name", request.user.username.title()),
            "family_name": person.get("family_name", "Tester"),
            "groups": person.get("groups", []),
        }
        if person.get("ldap_id"):
            claims["ldap_id"] = person["ldap_id"]
        return claims
