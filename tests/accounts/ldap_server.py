"""A real OpenLDAP `slapd` (Debian's package) on a loopback port with a generated directory.

The directory (dc=example,dc=test): a service account for the console's bind, people under
ou=people, groupOfNames groups under ou=groups. slapadd loads it before slapd starts, so every
entry has a server-made entryUUID, as in production. Changes during a test go through
python-ldap as the rootdn, like an administrator's tool would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import spawn, unregister

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "slapd-root-secret-Ao9x"
BIND_DN = f"cn=console,ou=services,{SUFFIX}"
BIND_PASSWORD = "console-bind-secret-7Qz"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"


def available() -> bool:
    return Path(SLAPD).exists() and Path(SLAPADD).exists() and (SCHEMA_DIR / "inetorgperson.schema").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Person:
    uid: str
    password: str
    mail: str
    groups: list[str] = field(default_factory=list)

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


def _entry(dn: str, **attrs) -> str:
    lines = [f"dn: {dn}"]
    for name, values in attrs.items():
        for value in values if isinstance(values, list) else [values]:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"


def directory_ldif(people: list[Person], groups: list[str]) -> str:
    entries = [
        _entry(SUFFIX, objectClass=["top", "dcObject", "organization"], o="Example", dc="example"),
        _entry(f"ou=services,{SUFFIX}", objectClass="organizationalUnit", ou="services"),
        _entry(PEOPLE, objectClass="organizationalUnit", ou="people"),
        _entry(GROUPS, objectClass="organizationalUnit", ou="groups"),
        _entry(BIND_DN, objectClass=["person", "simpleSecurityObject"], cn="console", sn="console",
               userPassword=BIND_PASSWORD),
    ]
    for person in people:
        entries.append(_entry(person.dn, objectClass=["inetOrgPerson"], uid=person.uid, cn=person.uid,
                              sn=person.uid.title(), givenName=person.uid.title(), mail=person.mail,
                              userPassword=person.password))
    for name in groups:
        members = [p.dn for p in people if name in p.groups] or [BIND_DN]  # groupOfNames needs a member
        entries.append(_entry(group_dn(name), objectClass="groupOfNames", cn=name, member=members))
    return "\n".join(entries)


def slapd_conf(db_dir: Path) -> str:
    schemas = "\n".join(f"include {SCHEMA_DIR / n}.schema" for n in ("core", "cosine", "inetorgperson", "nis"))
    return f"""{schemas}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {db_dir}/slapd.pid
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {db_dir}
"""


class Slapd:
    def __init__(self, workdir: Path, people: list[Person], groups: list[str]):
        self.workdir = workdir
        self.people = people
        self.groups = groups
        self.port = free_port()
        self.proc = None

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> Slapd:
        db_dir = self.workdir / "db"
        db_dir.mkdir(parents=True)
        conf = self.workdir / "slapd.conf"
        conf.write_text(slapd_conf(db_dir))
        ldif = self.workdir / "directory.ldif"
        ldif.write_text(directory_ldif(self.people, self.groups))
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True, timeout=60)
        self.log = open(self.workdir / "slapd.log", "wb")  # noqa: SIM115 - open for slapd's life
        self.proc = spawn([SLAPD, "-d", "256", "-f", str(conf), "-h", self.uri + "/"],
                          stdout=self.log, stderr=subprocess.STDOUT)
        self._wait()
        return self

    def _wait(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.workdir / 'slapd.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("slapd did not listen in time")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            unregister(self.proc.pid)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.workdir / "db", ignore_errors=True)

    # -- an administrator's changes -------------------------------------------------------------

    def _admin(self):
        import ldap

        conn = ldap.initialize(self.uri)
        conn.simple_bind_s(ROOT_DN, ROOT_PASSWORD)
        return conn

    def add_member(self, group: str, person: Person):
        import ldap

        conn = self._admin()
        conn.modify_s(group_dn(group), [(ldap.MOD_ADD, "member", [person.dn.encode()])])
        conn.unbind_s()

    def remove_member(self, group: str, person: Person):
        import ldap

        conn = self._admin()
        conn.modify_s(group_dn(group), [(ldap.MOD_DELETE, "member", [person.dn.encode()])])
        conn.unbind_s()

    def recreate(self, person: Person):
        """Delete the entry and add it again: same name, new entryUUID (someone else)."""
        import ldap.modlist

        conn = self._admin()
        conn.delete_s(person.dn)
        attrs = {"objectClass": [b"inetOrgPerson"], "uid": [person.uid.encode()], "cn": [person.uid.encode()],
                 "sn": [b"Other"], "mail": [person.mail.encode()], "userPassword": [person.password.encode()]}
        conn.add_s(person.dn, ldap.modlist.addModlist(attrs))
        conn.unbind_s()

    def entry_uuid(self, person: Person) -> str:
        import ldap

        conn = self._admin()
        ((_dn, attrs),) = conn.search_s(person.dn, ldap.SCOPE_BASE, attrlist=["entryUUID"])
        conn.unbind_s()
        return attrs["entryUUID"][0].decode()
