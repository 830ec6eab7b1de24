"""Prepare the provider's database: migrate, the console as a confidential client, the people.

    python -m tests.oidc_provider.setup <client_id> <client_secret> <redirect_uri>
"""

import os
import sys


def main(client_id: str, client_secret: str, redirect_uri: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from oauth2_provider.models import get_application_model

    from .claims import people

    call_command("migrate", verbosity=0, interactive=False)
    Application = get_application_model()
    Application.objects.create(
        name="sriov-console", client_id=client_id, client_secret=client_secret,
        client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri, algorithm=Application.RS256_ALGORITHM, skip_authorization=True,
    )
    User = get_user_model()
    for username, person in people().items():
        User.objects.create_user(username=username, password=person["password"])


if __name__ == "__main__":
    main(*sys.argv[1:4])
