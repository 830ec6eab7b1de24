"""Creating and rotating SSH credentials. The private key text never leaves this module unencrypted
except on its way to the SSH client (remote/)."""

import asyncssh
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Credential

MAX_KEY_BYTES = 16 * 1024


def parse_private_key(text: str) -> tuple[str, str]:
    """Validate an OpenSSH/PEM private key; return (public key line, SHA256 fingerprint).

    Passphrase-protected keys are refused: workers must use the key unattended.
    """
    if not text or not text.strip():
        raise ValidationError("Paste or upload a private key.")
    if len(text.encode()) > MAX_KEY_BYTES:
        raise ValidationError("That file is too large to be an SSH private key.")
    try:
        key = asyncssh.import_private_key(text)
    except asyncssh.KeyEncryptionError:
        raise ValidationError("The key is protected by a passphrase; upload an unencrypted key.") from None
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise ValidationError("This is not an SSH private key in OpenSSH or PEM format.") from None
    public = key.export_public_key("openssh").decode().strip()
    return public, key.get_fingerprint("sha256")


@transaction.atomic
def create_credential(name: str, private_key: str, username: str = "root") -> Credential:
    public, fingerprint = parse_private_key(private_key)
    credential = Credential(name=name, username=username)
    credential.set_private_key(private_key, public, fingerprint)
    credential.full_clean()
    credential.save()
    return credential
