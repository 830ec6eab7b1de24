"""Host create/update/import: parsers (CSV, Ansible INI, Ansible YAML), all-or-nothing import,
the import_hosts management command, and their audit events."""

import asyncssh
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from hosts import importers
from hosts.credentials import create_credential
from hosts.models import Hypervisor
from hosts.services import create_host, import_hosts, update_host


@pytest.fixture
def credential(db):
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    return create_credential("fleet-key", key, username="root")


@pytest.fixture
def other_credential(db):
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    return create_credential("lab-key", key, username="deploy")


CSV = """name,address,port,username,credential,labels
hv01,10.0.0.1,22,root,fleet-key,rack1;prod
hv02,10.0.0.2,2222,deploy,lab-key,rack2 prod
hv03,10.0.0.3,,,,
"""

INI = """# fleet
hv00 ansible_host=10.9.0.1

[rack1]
hv01 ansible_host=10.0.0.1 ansible_port=2201
hv02 ansible_host=10.0.0.2 ansible_user=deploy credential=lab-key

[rack2]
hv[03:04] ansible_host=10.0.0.30

[kvm:children]
rack1
rack2

[kvm:vars]
ansible_user=root

[all:vars]
ansible_port=22
"""

YAML = """all:
  vars:
    ansible_user: root
  hosts:
    hv00:
      ansible_host: 10.9.0.1
  children:
    kvm:
      vars:
        ansible_port: 2222
      children:
        rack1:
          hosts:
            hv01:
              ansible_host: 10.0.0.1
            hv02:
              ansible_host: 10.0.0.2
              ansible_port: 22
              ansible_user: deploy
              credential: lab-key
        rack2:
          hosts:
            hv03:
"""


def by_name(rows):
    return {row["name"]: row for row in rows}


def test_parse_csv():
    rows = by_name(importers.parse_csv(CSV))
    assert rows["hv01"] == {
        "line": 2,
        "name": "hv01",
        "address": "10.0.0.1",
        "port": "22",
        "username": "root",
        "credential": "fleet-key",
        "labels": ["rack1", "prod"],
    }
    assert rows["hv02"]["labels"] == ["rack2", "prod"]
    assert rows["hv03"] == {"line": 4, "name": "hv03", "address": "10.0.0.3", "labels": []}


def test_parse_csv_rejects_unknown_columns():
    with pytest.raises(importers.ParseError, match="line 1: unknown column.*hostname"):
        importers.parse_csv("hostname,address\nhv01,10.0.0.1\n")


def test_parse_ini_groups_children_vars_and_ranges():
    rows = by_name(importers.parse_ini(INI))
    assert set(rows) == {"hv00", "hv01", "hv02", "hv03", "hv04"}
    assert rows["hv00"] == {"line": 2, "name": "hv00", "address": "10.9.0.1", "port": "22", "labels": []}
    assert rows["hv01"]["port"] == "2201"  # host var beats group vars
    assert rows["hv01"]["username"] == "root"  # from [kvm:vars]
    assert rows["hv01"]["labels"] == ["kvm", "rack1"]
    assert rows["hv02"]["username"] == "deploy" and rows["hv02"]["credential"] == "lab-key"
    assert rows["hv03"]["labels"] == ["kvm", "rack2"] and rows["hv04"]["line"] == 9


def test_parse_yaml_nested_groups():
    rows = by_name(importers.parse_yaml(YAML))
    assert set(rows) == {"hv00", "hv01", "hv02", "hv03"}
    assert rows["hv00"]["labels"] == [] and rows["hv00"]["username"] == "root"
    assert rows["hv01"] == {
        "line": 14,
        "name": "hv01",
        "address": "10.0.0.1",
        "port": "2222",
        "username": "root",
        "labels": ["kvm", "rack1"],
    }
    assert rows["hv02"]["port"] == "22" and rows["hv02"]["credential"] == "lab-key"
    assert rows["hv03"]["address"] == "hv03" and rows["hv03"]["labels"] == ["kvm", "rack2"]


def test_guess_format():
    assert importers.guess_format("fleet.csv") == "csv"
    assert importers.guess_format("inventory.yml") == "yaml"
    assert importers.guess_format("", INI) == "ini"
    assert importers.guess_format("", YAML) == "yaml"


@pytest.mark.parametrize("fmt,text,count", [("csv", CSV, 3), ("ini", INI, 5), ("yaml", YAML, 4)])
def test_import_happy_path(fmt, text, count, operator, credential, other_credential):
    rows = importers.parse(text, fmt)
    report = import_hosts(rows, operator, default_credential=credential, source=f"fleet.{fmt}")
    assert report.ok, [str(e) for e in report.errors]
    assert len(report.created) == count
    assert Hypervisor.objects.count() == count
    hv02 = Hypervisor.objects.get(name="hv02")
    assert hv02.credential == other_credential and hv02.username == "deploy"
    hv01 = Hypervisor.objects.get(name="hv01")
    assert hv01.credential == credential and hv01.status == Hypervisor.Status.UNKNOWN
    assert AuditEvent.objects.filter(action="host.imported").count() == count
    event = AuditEvent.objects.filter(action="host.imported", host_name="hv01").get()
    assert event.actor == operator and event.data["source"] == f"fleet.{fmt}"


def test_bad_row_writes_nothing_and_names_the_row(operator, credential):
    text = CSV + "hv 04,10.0.0.4,22,root,fleet-key,\nhv05,10.0.0.5,99999,root,no-such-key,\n"
    report = import_hosts(importers.parse_csv(text), operator, default_credential=credential)
    assert not report.ok
    messages = [str(e) for e in report.errors]
    assert any(m.startswith("line 5 (hv 04): name:") for m in messages), messages
    assert any(m.startswith("line 6 (hv05): port:") for m in messages), messages
    expected = "line 6 (hv05): credential: There is no credential named 'no-such-key'"
    assert any(m.startswith(expected) for m in messages)
    assert Hypervisor.objects.count() == 0
    assert not AuditEvent.objects.filter(action="host.imported").exists()


def test_duplicates_and_existing_names(operator, credential, other_credential):
    create_host({"name": "hv01", "address": "10.0.0.1", "credential": credential}, operator)
    report = import_hosts(importers.parse_csv(CSV + "hv03,10.0.0.33,,,,\n"), operator, credential)
    messages = [str(e) for e in report.errors]
    assert "line 2 (hv01): name: a host with this name already exists." in messages
    assert "line 5 (hv03): name: duplicate of line 4." in messages
    assert Hypervisor.objects.count() == 1
    # --update: existing hosts are updated (audited with the changed fields), new ones created
    report = import_hosts(importers.parse_csv(CSV), operator, credential, update_existing=True)
    assert report.ok and len(report.created) == 2 and [h.name for h in report.updated] == ["hv01"]
    event = AuditEvent.objects.filter(action="host.updated", host_name="hv01").get()
    assert event.data["changes"]["labels"] == {"before": [], "after": ["prod", "rack1"]}


def test_missing_credential_is_an_error(operator):
    report = import_hosts(importers.parse_csv("name,address\nhv01,10.0.0.1\n"), operator)
    assert [str(e) for e in report.errors] == [
        "line 2 (hv01): credential: no credential given (and no default chosen)."
    ]


def test_import_needs_operate(viewer, credential):
    with pytest.raises(PermissionDenied):
        import_hosts(importers.parse_csv(CSV), viewer, credential)


def test_preview_writes_nothing(operator, credential, other_credential):
    text = CSV + "bad name,1.2.3.4,,,,\n"
    preview = importers.preview(text, "auto", operator, credential, filename="x.csv")
    assert preview.format == "csv" and not preview.ok
    assert [row.name for row in preview.rows if row.errors] == ["bad name"]
    assert Hypervisor.objects.count() == 0
    assert not AuditEvent.objects.filter(action__startswith="host.").exists()
    ok = importers.preview(CSV, "csv", operator, credential)
    assert ok.ok and len(ok.report.created) == 3 and Hypervisor.objects.count() == 0
    broken = importers.preview("[rack1\nhv01\n", "ini", operator, credential)
    assert broken.errors == ["line 1: not a section header: '[rack1'"]


def test_create_and_update_host(operator, credential, other_credential):
    host = create_host(
        {"name": "hv10", "address": "hv10.example.net", "credential": "fleet-key", "labels": "rack1, prod"},
        operator,
    )
    assert host.username == "root" and host.port == 22
    assert sorted(label.name for label in host.labels.all()) == ["prod", "rack1"]
    created = AuditEvent.objects.get(action="host.created")
    assert created.data["fields"]["labels"] == ["prod", "rack1"] and created.actor == operator

    update_host(host, {"port": 2222, "credential": other_credential, "labels": ["prod"]}, operator)
    host.refresh_from_db()
    assert host.port == 2222 and host.credential == other_credential
    event = AuditEvent.objects.get(action="host.updated")
    assert event.data["changes"] == {
        "port": {"before": 22, "after": 2222},
        "credential": {"before": "fleet-key", "after": "lab-key"},
        "labels": {"before": ["prod", "rack1"], "after": ["prod"]},
    }
    with pytest.raises(ValidationError) as exc:
        update_host(host, {"address": "bad address!", "port": "x"}, operator)
    assert set(exc.value.message_dict) == {"address", "port"}
    with pytest.raises(ValidationError) as exc:
        create_host({"name": "hv10", "address": "10.1.1.1"}, operator)
    assert "name" in exc.value.message_dict


def test_import_hosts_command(tmp_path, operator, credential, other_credential, capsys):
    path = tmp_path / "fleet.ini"
    path.write_text(INI)
    call_command("import_hosts", str(path), "--credential", "fleet-key", "--as", operator.username)
    assert "5 host(s) read from" in capsys.readouterr().out
    assert Hypervisor.objects.count() == 5
    assert AuditEvent.objects.filter(action="host.imported", actor_name=operator.username).count() == 5

    bad = tmp_path / "bad.csv"
    bad.write_text("name,address\nhv99,not an address\n")
    with pytest.raises(CommandError, match="nothing imported: 1 error"):
        call_command("import_hosts", str(bad), "--credential", "fleet-key")
    assert "line 2 (hv99): address:" in capsys.readouterr().err
    assert not Hypervisor.objects.filter(name="hv99").exists()
