"""A real OIDC provider process (tests/oidc_provider: django-oauth-toolkit under gunicorn) and a
browser-like walk through the authorization-code flow against it."""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.procs import spawn, unregister

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "sriov-console-test"
CLIENT_SECRET = "oidc-client-secret-Zr4u-" + "x" * 16
REDIRECT_URI = "http://testserver/oidc/callback/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OidcProvider:
    def __init__(self, workdir: Path, people: dict):
        self.workdir = workdir
        self.people = people
        self.port = free_port()
        self.proc = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.base}/o"

    def env(self) -> dict:
        """The console's OIDC_* environment for this provider."""
        return {
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_ISSUER": self.issuer,
            "OIDC_AUTHORIZATION_ENDPOINT": f"{self.issuer}/authorize/",
            "OIDC_TOKEN_ENDPOINT": f"{self.issuer}/token/",
            "OIDC_USERINFO_ENDPOINT": f"{self.issuer}/userinfo/",
            "OIDC_JWKS_ENDPOINT": f"{self.issuer}/.well-known/jwks.json",
            "OIDC_SCOPES": "openid email profile groups",
            "OIDC_DISPLAY_NAME": "Test IdP",
        }

    def _write_people(self):
        (self.workdir / "users.json").write_text(json.dumps(self.people))

    def reset(self, people: dict):
        """New claims for the same people (their provider accounts and passwords stay)."""
        for name, person in people.items():
            person["password"] = self.people[name]["password"]
        self.people = people
        self._write_people()

    def set_groups(self, username: str, groups: list[str]):
        self.people[username]["groups"] = groups
        self._write_people()

    def start(self) -> OidcProvider:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "secret_key").write_text(secrets.token_urlsafe(40))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.workdir / "rsa.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self._write_people()
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
               "DJANGO_SETTINGS_MODULE": "tests.oidc_provider.settings",
               "OIDC_PROVIDER_DIR": str(self.workdir), "OIDC_PROVIDER_PORT": str(self.port)}
        subprocess.run([sys.executable, "-m", "tests.oidc_provider.setup", CLIENT_ID, CLIENT_SECRET, REDIRECT_URI],
                       cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
        self.log = open(self.workdir / "provider.log", "wb")  # noqa: SIM115 - open for the server's life
        self.proc = spawn([sys.executable, "-m", "gunicorn", "tests.oidc_provider.wsgi:application",
                           "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--access-logfile", "-"],
                          cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "provider.log").read_text()[-3000:])
            try:
                if requests.get(f"{self.issuer}/.well-known/jwks.json", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("the OIDC provider did not answer in time")

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

    # -- a person's browser -------------------------------------------------------------------

    def login(self, console, username: str, password: str | None = None):
        """Walk the flow: console → provider login → consent-less authorize → console callback.
        Returns (authorize request URL, the console's answer to the callback)."""
        password = password or self.people[username]["password"]
        start = console.get("/oidc/authenticate/")
        assert start.status_code == 302, start
        authorize = start["Location"]
        browser = requests.Session()
        answer = browser.get(authorize, allow_redirects=False, timeout=10)
        assert answer.status_code == 302 and "/accounts/login/" in answer.headers["Location"], answer.text[:500]
        login_url = self.base + answer.headers["Location"] if answer.headers["Location"].startswith("/") \
            else answer.headers["Location"]
        page = browser.get(login_url, timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        next_url = re.search(r'name="next" value="([^"]*)"', page.text).group(1).replace("&amp;", "&")
        posted = browser.post(login_url, data={"username": username, "password": password,
                                               "csrfmiddlewaretoken": token, "next": next_url},
                              allow_redirects=False, timeout=10)
        assert posted.status_code == 302, f"provider login failed: {posted.status_code}"
        back = browser.get(self.base + posted.headers["Location"], allow_redirects=False, timeout=10)
        assert back.status_code == 302 and back.headers["Location"].startswith(REDIRECT_URI), back.text[:500]
        callback = urlsplit(back.headers["Location"])
        return authorize, console.get(f"{callback.path}?{callback.query}")
