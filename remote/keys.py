"""SSH key material: reading a private key the console is given (the console never parses keys
itself; everything SSH lives behind remote/)."""

from __future__ import annotations

import asyncssh


class KeyProblem(ValueError):
    """The text is not a usable private key. `encrypted`: it needs a passphrase."""

    def __init__(self, message: str, *, encrypted: bool = False):
        super().__init__(message)
        self.encrypted = encrypted


def inspect_private_key(text: str) -> tuple[str, str]:
    """(public key line, SHA256 fingerprint) of an OpenSSH/PEM private key; KeyProblem otherwise."""
    try:
        key = asyncssh.import_private_key(text)
    except asyncssh.KeyEncryptionError:
        raise KeyProblem("the key is protected by a passphrase", encrypted=True) from None
    except asyncssh.KeyImportError as exc:
        if "passphrase" in str(exc).lower():  # asyncssh reports an encrypted key this way
            raise KeyProblem("the key is protected by a passphrase", encrypted=True) from None
        raise KeyProblem("not an SSH private key in OpenSSH or PEM format") from None
    except (ValueError, TypeError, UnicodeError):
        raise KeyProblem("not an SSH private key in OpenSSH or PEM format") from None
    return key.export_public_key("openssh").decode().strip(), key.get_fingerprint("sha256")
