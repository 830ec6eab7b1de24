"""Fixtures for the security tests: SSH key texts and a small inventory to point URLs at."""

import asyncssh
import pytest


def make_private_key(alg: str = "ssh-ed25519") -> str:
    return asyncssh.generate_private_key(alg).export_private_key("openssh").decode()


@pytest.fixture
def private_key_text():
    return make_private_key()


@pytest.fixture
def sample_objects(db, private_key_text):
    """One of each inventory object, so URLs with an <int:pk> can point at something real."""
    from audit.services import record
    from hosts.credentials import create_credential
    from hosts.models import Hypervisor, Nic, VirtualFunction

    credential = create_credential("sample-key", private_key_text)
    host = Hypervisor.objects.create(name="hv-sample", address="127.0.0.1", credential=credential)
    nic = Nic.objects.create(host=host, name="eno49", pci_address="0000:04:00.0",
                             sriov_totalvfs=7, sriov_numvfs=0)
    vf = VirtualFunction.objects.create(nic=nic, index=0, pci_address="0000:04:10.0")
    event = record("host.created", obj=host, host=host)
    objects = {"credential": credential, "host": host, "nic": nic, "vf": vf, "audit_event": event}
    try:
        from django.db import transaction

        from changes.models import ChangeRequest
        from tests.conftest import make_user

        with transaction.atomic():
            requester = make_user("sample-requester", "operator")
            objects["change"] = ChangeRequest.objects.create(title="sample", reason="sample",
                                                             requested_by=requester)
    except Exception:  # the changes app's required fields may differ; URLs then use pk 1 (404 is fine)
        pass
    return objects


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Role users are created for every matrix test; PBKDF2 at full strength is only slow here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
