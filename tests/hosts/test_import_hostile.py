"""Hostile import files: NUL bytes, bare CRs, control characters, deep nesting, random text.

Whatever the file holds, the upload page, its confirm step and `manage.py import_hosts` answer a
clear message naming the line (a 4xx or a CommandError), never a 500 or a traceback, and write
nothing (no host, no label, no audit event). The fuzzing runs on the suite's database (PostgreSQL
in CI, which is the one that refuses NUL in text).
"""

import asyncssh
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from hosts import importers
from hosts.credentials import create_credential
from hosts.models import Hypervisor, Label

FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def credential(db):
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    return create_credential("fleet-key", key, username="root")


@pytest.fixture
def client(client_for, operator, credential):
    return client_for(operator)


def counts():
    return Hypervisor.objects.count(), Label.objects.count(), AuditEvent.objects.count()


def upload(client, filename, text, credential):
    return client.post(reverse("hosts:import"), {
        "file": SimpleUploadedFile(filename, text.encode("utf-8", "surrogatepass")), "format": "auto",
        "default_credential": credential.pk,
    })


def confirm(client, text, fmt, credential, filename="hosts"):
    return client.post(reverse("hosts:import"), {
        "text": text, "format": fmt, "filename": filename, "default_credential": credential.pk, "confirm": "1",
    })


def command(tmp_path, filename, text):
    path = tmp_path / filename
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    call_command("import_hosts", str(path), "--credential", "fleet-key")


HOSTILE = [
    # (file name, text, what the message says, the line it names)
    ("nul.csv", "name,address\nhv01,10.0.0.1\nhv\x0002,10.0.0.2\n", "NUL", 3),
    ("cr.csv", "name,address\nhv01,10.0.0.1\nhv02,10.0.\r0.2\n", "bare CR", 3),
    ("quoted-cr.csv", 'name,address,description\nhv01,10.0.0.1,"rack\r12"\n', "line break", 2),
    ("nul.ini", "[rack1]\nhv01 ansible_host=10.0.0.1\nhv02 ansible_host=10.0\x00.0.2\n", "NUL", 3),
    ("nul.yaml", 'all:\n  hosts:\n    hv01:\n    "hv\\0x":\n', "NUL", 4),
    ("ctl.yaml", 'all:\n  hosts:\n    hv01:\n      ansible_host: "10.0.0.1\\x1b[2J"\n', "U+001B", 3),
    ("deep.yaml", "all:\n  hosts:\n    hv01:\n      description: " + "[" * 3000 + "]" * 3000 + "\n", "nested", None),
]


@pytest.mark.parametrize(("filename", "text", "says", "line"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_on_upload_with_its_line_and_nothing_written(
    client, credential, filename, text, says, line
):
    before = counts()
    response = upload(client, filename, text, credential)
    body = response.content.decode()
    assert response.status_code == 400
    assert says in body
    if line is not None:
        assert f"line {line}:" in body
    assert counts() == before


@pytest.mark.parametrize(("filename", "text", "says", "line"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_on_confirm_and_nothing_written(client, credential, filename, text, says, line):
    """The confirm step re-sends the text: a hand-made confirm post gets the same answer."""
    before = counts()
    fmt = {"csv": "csv", "ini": "ini", "yaml": "yaml"}[filename.rsplit(".", 1)[1]]
    response = confirm(client, text, fmt, credential, filename)
    assert response.status_code == 400
    body = response.content.decode()
    # A NUL is refused by the form field itself; everything else by the parser, naming the line.
    assert says in body or "Null characters are not allowed" in body
    assert counts() == before


@pytest.mark.parametrize(("filename", "text", "says", "line"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_by_the_import_command(credential, tmp_path, filename, text, says, line):
    before = counts()
    with pytest.raises(CommandError) as refused:
        command(tmp_path, filename, text)
    assert says in str(refused.value)
    if line is not None:
        assert f"line {line}:" in str(refused.value)
    assert counts() == before


def test_the_import_command_refuses_a_file_that_is_not_utf8(credential, tmp_path):
    (tmp_path / "latin1.csv").write_bytes("name\nhv-caf\xe9\n".encode("latin-1"))
    before = counts()
    with pytest.raises(CommandError, match="not UTF-8"):
        call_command("import_hosts", str(tmp_path / "latin1.csv"), "--credential", "fleet-key")
    assert counts() == before


# ---------------------------------------------------------------------------------------------
# Fuzzing: random rows in every format, with nasty values
# ---------------------------------------------------------------------------------------------

nasty = st.one_of(
    st.sampled_from(["hv01", "hv-02", "10.0.0.1", "::1", "root", "22", "rack1;prod", "", " "]),
    st.sampled_from(["\x00", "a\x00b", "\r", "a\rb", "\n", '"', "'", ",", "=", "[", "]", ":", "#", ";",
                     "\ufeff", "\x1b", "\x7f", "\u2028", "é" * 70, "x" * 300, "[01:99999999]", "{", "- a"]),
    st.text(max_size=20),
)
rows = st.lists(st.tuples(nasty, nasty, nasty, nasty), min_size=0, max_size=6)


def as_csv(items):
    lines = ["name,address,port,labels"] + [",".join(row) for row in items]
    return "\n".join(lines) + "\n"


def as_ini(items):
    lines = ["[rack1]"] + [f"{n} ansible_host={a} ansible_port={p} credential={c}" for n, a, p, c in items]
    return "\n".join(lines) + "\n"


def as_yaml(items):
    lines = ["all:", "  hosts:"]
    for name, address, port, extra in items:
        lines += [f"    {name}:", f"      ansible_host: {address}", f"      ansible_port: {port}", f"      {extra}"]
    return "\n".join(lines) + "\n"


FORMATS = {"csv": as_csv, "ini": as_ini, "yaml": as_yaml}


@given(fmt=st.sampled_from(sorted(FORMATS)), items=rows, raw=st.one_of(st.none(), st.text(max_size=200)))
@FUZZ
def test_import_fuzz_never_500_never_a_partial_write(client, credential, fmt, items, raw):
    text = raw if raw is not None else FORMATS[fmt](items)
    before = counts()
    response = upload(client, f"hosts.{fmt}", text, credential)
    assert response.status_code in (200, 400), response.status_code
    assert counts() == before, "the preview wrote something"
    if response.status_code != 200:
        assert b"errorlist" in response.content, "a 400 without a message"
        response = confirm(client, text, fmt, credential)  # a hand-made confirm of the same file
        assert response.status_code == 400
        assert counts() == before
        return
    preview = response.context["preview"]
    response = confirm(client, text, preview.format, credential)
    assert response.status_code in (303, 400)
    hosts, labels, events = counts()
    if response.status_code == 400:
        assert (hosts, labels, events) == before, "a refused import wrote something"
    else:
        assert hosts == before[0] + len(preview.rows)
        assert AuditEvent.objects.filter(action="host.imported").count() == before[2] + len(preview.rows)
        Hypervisor.objects.all().delete()  # the next example starts empty (audit events stay: append-only)
        Label.objects.all().delete()


@given(fmt=st.sampled_from(sorted(FORMATS)), items=rows)
@FUZZ
def test_import_command_fuzz_refuses_cleanly_or_imports_everything(credential, tmp_path, fmt, items):
    text = FORMATS[fmt](items)
    before = counts()
    try:
        command(tmp_path, f"hosts.{fmt}", text)
    except CommandError:
        assert counts() == before, "a refused import wrote something"
        return
    _fmt, parsed = importers.load(text, fmt, f"hosts.{fmt}")
    assert Hypervisor.objects.count() == before[0] + len(parsed)
    Hypervisor.objects.all().delete()
    Label.objects.all().delete()


@pytest.mark.parametrize(("filename", "text", "says", "line"), HOSTILE[:5], ids=[h[0] for h in HOSTILE[:5]])
def test_hostile_text_is_refused_by_the_api_import(operator, credential, filename, text, says, line):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(operator)
    before = counts()
    fmt = filename.rsplit(".", 1)[1]
    response = api.post("/api/v1/hypervisors/import/", {"text": text, "format": fmt,
                                                       "default_credential": "fleet-key"}, format="json")
    assert response.status_code == 400, response.content
    body = response.content.decode()
    assert says in body or "Null characters are not allowed" in body
    assert counts() == before
