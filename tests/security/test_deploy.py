"""Production settings: `manage.py check --deploy` is clean, and the headers are what we promise."""

import os
import re
import subprocess
import sys

from cryptography.fernet import Fernet
from django.urls import reverse

from tests.conftest import ROOT


def _production_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "HTTPS", "SECRET_KEY", "ALLOWED_HOSTS"}}
    env.update(
        DEBUG="0",
        HTTPS="1",
        SECRET_KEY="x" + Fernet.generate_key().decode() + Fernet.generate_key().decode(),
        ALLOWED_HOSTS="console.example.com",
        CSRF_TRUSTED_ORIGINS="https://console.example.com",
        CREDENTIAL_KEYS=Fernet.generate_key().decode(),
        CONSOLE_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="console.settings",
    )
    return env


def test_check_deploy_has_no_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=_production_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_values(tmp_path):
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({"
        "'ssl': s.SECURE_SSL_REDIRECT, 'proxy': list(s.SECURE_PROXY_SSL_HEADER),"
        "'hsts': s.SECURE_HSTS_SECONDS,"
        "'session_secure': s.SESSION_COOKIE_SECURE, 'csrf_secure': s.CSRF_COOKIE_SECURE, 'debug': s.DEBUG,"
        "'xfo': s.X_FRAME_OPTIONS, 'referrer': s.SECURE_REFERRER_POLICY}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_production_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "ssl": True, "proxy": ["HTTP_X_FORWARDED_PROTO", "https"], "hsts": 31536000,
        "session_secure": True, "csrf_secure": True, "debug": False, "xfo": "DENY", "referrer": "same-origin",
    }


def test_security_headers_on_every_page(client, viewer):
    client.force_login(viewer)
    for url in (reverse("login"), reverse("dashboard")):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Request-ID"]


def test_no_inline_script_or_style_in_templates():
    """CSP forbids inline script and style; templates must not rely on them."""
    offenders = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        for match in re.finditer(r"<script\b[^>]*>", text):
            if "src=" not in match.group(0):
                offenders.append(f"{path.relative_to(ROOT)}: inline <script>")
        if re.search(r"\sstyle\s*=", text):
            offenders.append(f"{path.relative_to(ROOT)}: style= attribute")
        if re.search(r"\shx-on[:-]|\son[a-z]+\s*=\s*[\"']", text):
            offenders.append(f"{path.relative_to(ROOT)}: inline event handler")
    assert not offenders, offenders

