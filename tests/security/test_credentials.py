"""SSH credentials: encrypted at rest, never rendered or audited in clear, validated on upload,
rotation of the encryption key (manage.py rotate_credentials_key) and of the key pair."""

import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from hosts.credentials import create_credential, parse_private_key
from hosts.models import Credential, Hypervisor

from .conftest import make_private_key


def _raw_encrypted(pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key_encrypted FROM hosts_credential WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def _secret_lines(key_text: str) -> list[str]:
    """The base64 body lines of a private key that carry more than the public key (a key file
    embeds its public half, and a line of it may legitimately match the shown public key)."""
    public = parse_private_key(key_text)[0].split()[1]
    return [line for line in key_text.splitlines()
            if line and not line.startswith("-----") and line not in public]


def _assert_no_secret(text: str, key_text: str, token: str = ""):
    assert key_text.strip() not in text
    for line in _secret_lines(key_text):
        assert line not in text
    if token:
        assert token not in text


# --- at rest ---------------------------------------------------------------------------------

def test_the_database_holds_only_ciphertext(db, private_key_text):
    credential = create_credential("fleet", private_key_text)
    raw = _raw_encrypted(credential.pk)
    assert raw != private_key_text
    _assert_no_secret(raw, private_key_text)
    assert "PRIVATE KEY" not in raw
    assert Credential.objects.get(pk=credential.pk).get_private_key() == private_key_text


def test_encryption_key_rotation(db, settings, private_key_text):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old]
    rotated = create_credential("rotated", private_key_text)
    forgotten = create_credential("forgotten", make_private_key())
    token_before = _raw_encrypted(rotated.pk)

    # Prepend the new key: both decrypt; rotate everything under the new key.
    settings.CREDENTIAL_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_credentials_key", stdout=out)
    assert "Re-encrypted 2 credential(s)" in out.getvalue()
    assert _raw_encrypted(rotated.pk) != token_before

    # Drop the old key: rotated credentials still decrypt.
    settings.CREDENTIAL_KEYS = [new]
    assert Credential.objects.get(pk=rotated.pk).get_private_key() == private_key_text

    events = AuditEvent.objects.filter(action="credential.rotated", data__what="encryption_key")
    assert events.count() == 2
    for event in events:
        _assert_no_secret(str(event.data), private_key_text)
        assert "private_key_encrypted" not in event.data

    # A credential encrypted only under a key that was removed without rotating cannot be read...
    settings.CREDENTIAL_KEYS = [old]
    stale = create_credential("stale", make_private_key())
    settings.CREDENTIAL_KEYS = [new]
    with pytest.raises(InvalidToken):
        Credential.objects.get(pk=stale.pk).get_private_key()
    # ...and the rotation refuses, all or nothing: nothing was re-encrypted.
    untouched = {c.pk: _raw_encrypted(c.pk) for c in Credential.objects.all()}
    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("rotate_credentials_key", stdout=io.StringIO())
    assert {c.pk: _raw_encrypted(c.pk) for c in Credential.objects.all()} == untouched
    assert forgotten.pk in untouched


def test_rotation_without_the_old_key_fails_but_with_it_succeeds(db, settings, private_key_text):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old]
    credential = create_credential("c1", private_key_text)
    # Forgetting the rotation step: the old-only token does not decrypt under the new key alone.
    settings.CREDENTIAL_KEYS = [new]
    with pytest.raises(InvalidToken):
        Credential.objects.get(pk=credential.pk).get_private_key()
    # Doing it right.
    settings.CREDENTIAL_KEYS = [new, old]
    call_command("rotate_credentials_key", stdout=io.StringIO())
    settings.CREDENTIAL_KEYS = [new]
    assert Credential.objects.get(pk=credential.pk).get_private_key() == private_key_text


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "Paste or upload"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDo not a private key", "not an SSH private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n",
     "not an SSH private key"),
    ("A" * 20000, "too large"),
])
def test_bad_keys_are_refused(text, message):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=message):
        parse_private_key(text)


def test_passphrase_keys_are_refused():
    import asyncssh
    from django.core.exceptions import ValidationError

    key = asyncssh.generate_private_key("ssh-ed25519")
    key = key.export_private_key("pkcs8-pem", passphrase="pw").decode()
    with pytest.raises(ValidationError, match="passphrase"):
        parse_private_key(key)


# --- pages ------------------------------------------------------------------------------------

def test_add_by_paste_shows_public_key_and_fingerprint_only(admin_user, client_for, private_key_text):
    client = client_for(admin_user)
    response = client.post(reverse("hosts:credential_add"),
                           {"name": "fleet-root", "username": "root", "private_key": private_key_text})
    assert response.status_code == 303
    credential = Credential.objects.get(name="fleet-root")
    public, fingerprint = parse_private_key(private_key_text)
    page = client.get(reverse("hosts:credentials")).content.decode()
    assert fingerprint in page and public.split()[1] in page
    _assert_no_secret(page, private_key_text, credential.private_key_encrypted)
    event = AuditEvent.objects.get(action="credential.created")
    assert event.actor == admin_user and event.data["after"]["fingerprint"] == fingerprint
    _assert_no_secret(str(event.data), private_key_text, credential.private_key_encrypted)


def test_add_by_upload(admin_user, client_for, private_key_text):
    client = client_for(admin_user)
    upload = SimpleUploadedFile("id_ed25519", private_key_text.encode())
    response = client.post(reverse("hosts:credential_add"),
                           {"name": "uploaded", "username": "sriov-console", "key_file": upload})
    assert response.status_code == 303
    assert Credential.objects.get(name="uploaded").get_private_key() == private_key_text


def test_a_rejected_form_does_not_echo_the_key(admin_user, client_for, private_key_text):
    client = client_for(admin_user)
    # Valid key but invalid name: the page comes back with errors and without the key.
    response = client.post(reverse("hosts:credential_add"),
                           {"name": "bad name!", "username": "root", "private_key": private_key_text})
    assert response.status_code == 400
    _assert_no_secret(response.content.decode(), private_key_text)
    # Not a key at all.
    response = client.post(reverse("hosts:credential_add"),
                           {"name": "ok", "username": "root", "private_key": "hello"})
    assert response.status_code == 400
    assert "not an SSH private key" in response.content.decode()
    # A binary upload.
    response = client.post(reverse("hosts:credential_add"),
                           {"name": "ok", "username": "root",
                            "key_file": SimpleUploadedFile("k", b"\xff\xfe\x00")})
    assert response.status_code == 400
    assert not Credential.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="credential.").exists()


def test_replace_key_pair_edit_and_delete(admin_user, client_for, private_key_text):
    client = client_for(admin_user)
    credential = create_credential("fleet", private_key_text)
    old_fingerprint = credential.fingerprint
    new_key = make_private_key("ecdsa-sha2-nistp256")
    url = reverse("hosts:credential_rotate", args=[credential.pk])
    assert client.post(url, {"private_key": new_key}).status_code == 400  # confirmation missing
    response = client.post(url, {"private_key": new_key, "confirm": "on"})
    assert response.status_code == 303
    credential.refresh_from_db()
    assert credential.get_private_key() == new_key and credential.fingerprint != old_fingerprint
    event = AuditEvent.objects.get(action="credential.rotated")
    assert event.data["old_fingerprint"] == old_fingerprint
    assert event.data["new_fingerprint"] == credential.fingerprint
    _assert_no_secret(str(event.data), new_key)
    _assert_no_secret(str(event.data), private_key_text)

    response = client.post(reverse("hosts:credential_edit", args=[credential.pk]),
                           {"name": "fleet2", "username": "sriov-console"})
    assert response.status_code == 303
    event = AuditEvent.objects.get(action="credential.updated")
    assert event.data["changed"]["name"] == {"before": "fleet", "after": "fleet2"}

    host = Hypervisor.objects.create(name="hv1", address="127.0.0.1", credential=credential)
    response = client.post(reverse("hosts:credential_delete", args=[credential.pk]))
    assert response.status_code == 409 and "hv1" in response.content.decode()
    Hypervisor.objects.filter(pk=host.pk).update(credential=None)
    response = client.post(reverse("hosts:credential_delete", args=[credential.pk]))
    assert response.status_code == 303 and not Credential.objects.exists()
    assert AuditEvent.objects.filter(action="credential.deleted").count() == 1


def test_credentials_are_not_exposed_in_the_admin_site(admin_user, client, private_key_text):
    """Either Credential is not registered, or its admin shows neither the key nor its ciphertext."""
    from django.contrib import admin

    credential = create_credential("fleet", private_key_text)
    if Credential not in admin.site._registry:
        return
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    for url in (reverse("admin:hosts_credential_changelist"),
                reverse("admin:hosts_credential_change", args=[credential.pk])):
        page = client.get(url).content.decode()
        _assert_no_secret(page, private_key_text, credential.private_key_encrypted)


def test_an_empty_post_is_answered_with_errors(admin_user, client_for, private_key_text):
    client = client_for(admin_user)
    for url in (reverse("hosts:credential_add"),):
        response = client.post(url, {})
        assert response.status_code == 400 and b"errorlist" in response.content
    credential = create_credential("fleet", private_key_text)
    for name in ("hosts:credential_edit", "hosts:credential_rotate"):
        response = client.post(reverse(name, args=[credential.pk]), {})
        assert response.status_code == 400 and b"errorlist" in response.content


def test_credential_form_fuzz(admin_user, client_for):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = client_for(admin_user)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=st.text(max_size=120), username=st.text(max_size=40), key=st.one_of(
        st.text(max_size=400),
        st.just("-----BEGIN OPENSSH PRIVATE KEY-----\n").map(lambda h: h + "A" * 300 + "\n-----END"),
    ))
    def run(name, username, key):
        before = (Credential.objects.count(), AuditEvent.objects.count())
        response = client.post(reverse("hosts:credential_add"),
                               {"name": name, "username": username, "private_key": key})
        assert response.status_code == 400
        assert (Credential.objects.count(), AuditEvent.objects.count()) == before

    run()
