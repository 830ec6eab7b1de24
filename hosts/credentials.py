"""Creating and rotating SSH credentials. The private key text never leaves this module unencrypted
except on its way to the SSH client (remote/)."""

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import record
from remote.keys import KeyProblem, inspect_private_key

from .models import Credential

MAX_KEY_BYTES = 16 * 1024
PASSPHRASE_MESSAGE = "The key is protected by a passphrase; upload an unencrypted key."


def parse_private_key(text: str) -> tuple[str, str]:
    """Validate an OpenSSH/PEM private key; return (public key line, SHA256 fingerprint).

    Passphrase-protected keys are refused: workers must use the key unattended.
    """
    if not text or not text.strip():
        raise ValidationError("Paste or upload a private key.")
    if len(text.encode()) > MAX_KEY_BYTES:
        raise ValidationError("That file is too large to be an SSH private key.")
    try:
        return inspect_private_key(text)
    except KeyProblem as exc:
        if exc.encrypted:
            raise ValidationError(PASSPHRASE_MESSAGE) from None
        raise ValidationError("This is not an SSH private key in OpenSSH or PEM format.") from None


def _summary(credential: Credential) -> dict:
    """What the audit history may know about a credential: never the private key."""
    return {
        "name": credential.name,
        "username": credential.username,
        "public_key": credential.public_key,
        "fingerprint": credential.fingerprint,
    }


@transaction.atomic
def create_credential(name: str, private_key: str, username: str = "root", *, actor=None) -> Credential:
    public, fingerprint = parse_private_key(private_key)
    credential = Credential(name=name, username=username)
    credential.set_private_key(private_key, public, fingerprint)
    credential.full_clean()
    credential.save()
    record("credential.created", actor=actor, obj=credential, data={"after": _summary(credential)})
    return credential


@transaction.atomic
def update_credential(credential: Credential, *, name: str, username: str, actor=None) -> Credential:
    """Rename a credential or change its SSH user name (the key pair stays)."""
    before = _summary(credential)
    credential.name = name
    credential.username = username
    credential.full_clean()
    credential.save()
    after = _summary(credential)
    changed = {k: {"before": before[k], "after": after[k]} for k in before if before[k] != after[k]}
    if changed:
        record("credential.updated", actor=actor, obj=credential, data={"changed": changed})
    return credential


@transaction.atomic
def replace_key_pair(credential: Credential, private_key: str, *, actor=None) -> Credential:
    """Replace the key pair (the old public key must be removed from the hosts by the operator)."""
    public, fingerprint = parse_private_key(private_key)
    old_fingerprint = credential.fingerprint
    credential.set_private_key(private_key, public, fingerprint)
    credential.save()
    record(
        "credential.rotated", actor=actor, obj=credential,
        data={"what": "key_pair", "old_fingerprint": old_fingerprint, "new_fingerprint": fingerprint,
              "public_key": public},
    )
    return credential


class CredentialInUse(Exception):
    def __init__(self, credential: Credential, host_names: list[str]):
        self.host_names = host_names
        shown = ", ".join(host_names[:10]) + (" ..." if len(host_names) > 10 else "")
        super().__init__(
            f"{credential.name} is used by {len(host_names)} host(s) ({shown}); "
            "give them another credential first."
        )


@transaction.atomic
def delete_credential(credential: Credential, *, actor=None) -> None:
    host_names = list(credential.hosts.order_by("name").values_list("name", flat=True))
    if host_names:
        raise CredentialInUse(credential, host_names)
    summary = _summary(credential)
    record("credential.deleted", actor=actor, obj=credential, data={"before": summary})
    credential.delete()


def reencrypt_all(*, actor_name: str = "manage.py") -> int:
    """Re-encrypt every private key under the first of settings.CREDENTIAL_KEYS, in one
    transaction (all or nothing); audit `credential.rotated` per credential. Returns the count."""
    from console import crypto

    count = 0
    with transaction.atomic():
        for credential in Credential.objects.select_for_update().order_by("pk"):
            credential.private_key_encrypted = crypto.rotate(credential.private_key_encrypted)
            credential.save(update_fields=["private_key_encrypted", "updated_at"])
            record(
                "credential.rotated", actor_name=actor_name, obj=credential,
                data={"what": "encryption_key", "fingerprint": credential.fingerprint},
            )
            count += 1
    return count
