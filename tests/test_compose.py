"""docker-compose.yml: valid against the Compose specification (check-jsonschema's vendored
schema; no Docker engine needed) and complete: the services, their health checks, the settings."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"db", "redis", "web", "worker", "beat"}
CONSOLE_ENV = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CREDENTIAL_KEYS", "ALLOWED_HOSTS", "HTTPS"}


def load():
    return yaml.safe_load(COMPOSE.read_text())


def check_jsonschema() -> str:
    local = Path(sys.executable).with_name("check-jsonschema")
    return str(local) if local.exists() else shutil.which("check-jsonschema")


def test_compose_file_is_valid_against_the_compose_spec():
    tool = check_jsonschema()
    assert tool, "check-jsonschema is a dev dependency (pip install -e '.[dev]')"
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_and_health_checks():
    services = load()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped"
    assert services["db"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in services["db"]["healthcheck"]["test"]


def test_console_services_share_the_settings():
    services = load()["services"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert CONSOLE_ENV <= set(env), f"{name} misses {CONSOLE_ENV - set(env)}"
        assert env["HTTPS"] == "1" and env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
        # Secrets have no default: compose refuses to start without them.
        assert ":?" in env["SECRET_KEY"] and ":?" in env["CREDENTIAL_KEYS"]
        needs = services[name]["depends_on"]
        assert needs["db"]["condition"] == needs["redis"]["condition"] == "service_healthy"
    web = " ".join(services["web"]["command"])
    assert web.index("manage.py migrate") < web.index("gunicorn"), "the web migrates before it serves"
    assert "celery -A console worker" in " ".join(services["worker"]["command"])
    assert "beat" in services["beat"]["command"]
    assert services["web"]["build"] == "." and (ROOT / "Dockerfile").exists()
    assert services["worker"]["image"] == services["beat"]["image"] == services["web"]["image"]
