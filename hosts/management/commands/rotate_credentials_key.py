"""Re-encrypt every SSH private key under the newest credential encryption key.

Procedure (docs/operations.md, "Rotating keys"):

1. Generate a key:
   `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`.
2. Prepend it to CREDENTIAL_KEYS (`CREDENTIAL_KEYS=new,old`) on every web and worker process; restart.
3. `python manage.py rotate_credentials_key` — all credentials in one transaction, each audited
   (`credential.rotated`, no secrets).
4. Remove the old key from CREDENTIAL_KEYS everywhere; restart.
"""

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hosts.credentials import reencrypt_all


class Command(BaseCommand):
    help = "Re-encrypt every credential's private key with the first key of CREDENTIAL_KEYS."

    def handle(self, *args, **options):
        if not settings.CREDENTIAL_KEYS:
            raise CommandError("CREDENTIAL_KEYS is empty.")
        try:
            count = reencrypt_all(actor_name="manage.py rotate_credentials_key")
        except InvalidToken:
            raise CommandError(
                "A credential cannot be decrypted with any key in CREDENTIAL_KEYS; nothing was changed. "
                "Keep the old key in the list (after the new one) until the rotation has run."
            ) from None
        keys = len(settings.CREDENTIAL_KEYS)
        self.stdout.write(
            f"Re-encrypted {count} credential(s) with the first of {keys} key(s)."
            + (" You can now remove the other keys from CREDENTIAL_KEYS." if keys > 1 else "")
        )
