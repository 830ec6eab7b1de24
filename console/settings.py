"""Settings, all from the environment (see docs/operations.md for every variable).

Defaults give the embedded demo: SQLite under var/, Celery on a filesystem broker under var/,
secrets generated once into var/. Production sets DATABASE_URL, REDIS_URL, SECRET_KEY,
CREDENTIAL_KEYS, ALLOWED_HOSTS and HTTPS=1 (docker-compose.yml does).
"""

import ipaddress
import os
import secrets
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONSOLE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# A test run owns what it uses on shared servers: its own PostgreSQL database and its own Redis keys
# and queue names (tests/conftest.py). The id is made once by the pytest process and inherited
# by every process the tests start (the Celery worker), so they all meet in the same places.
TEST_RUN_ID = os.environ.get("CONSOLE_TEST_RUN_ID", "")
if not TEST_RUN_ID and os.environ.get("PYTEST_VERSION"):
    TEST_RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
    os.environ["CONSOLE_TEST_RUN_ID"] = TEST_RUN_ID


def _local_secret(filename: str, make) -> str:
    """A secret generated once and kept in var/ (demo and development only; production sets env)."""
    path = VAR_DIR / filename
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY") or _local_secret("secret_key", lambda: secrets.token_urlsafe(64))
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

# Fernet keys for SSH private keys at rest. The first encrypts; all decrypt (rotation: prepend a
# new key, run `manage.py rotate_credentials_key`, then drop the old one).
CREDENTIAL_KEYS = env_list("CREDENTIAL_KEYS") or [
    _local_secret("credential_key", lambda: Fernet.generate_key().decode())
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_filters",
    "console",
    "audit",
    "hosts",
    "changes",
    "rest_framework",
    "drf_spectacular",
    "api",
    "accounts",
    "notifications",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "console.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "console.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.roles",
                "accounts.context_processors.sso",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if os.environ.get("DATABASE_NAME_OVERRIDE"):
    # Used by the test suite so a Celery worker subprocess opens the test database.
    DATABASES["default"]["NAME"] = os.environ["DATABASE_NAME_OVERRIDE"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + IMMEDIATE transactions let the web, the worker and beat share one file safely.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not :memory:, so a Celery worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}
elif TEST_RUN_ID:
    DATABASES["default"]["TEST"] = {"NAME": f"test_sriov_{TEST_RUN_ID}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# Sessions expire: 8 hours of absolute lifetime, and at browser close.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # htmx takes the token from <body hx-headers>, never from the cookie

# Login throttling (console/security.py): N failures for one user name, or M from one client
# address, within the window lock logins out until the failures age out of the window.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_IP_FAILURE_LIMIT = env_int("LOGIN_IP_FAILURE_LIMIT", 50)
LOGIN_FAILURE_WINDOW = env_int("LOGIN_FAILURE_WINDOW", 15 * 60)

X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

# Behind a TLS-terminating proxy (production). The demo runs plain http on 127.0.0.1.
HTTPS = env_bool("HTTPS")
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
_broker_dir = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # The exchange tables, which kombu would otherwise write into the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# Redis transport options (also used by tests that point a process at a Redis they started).
# Unacked messages come back after visibility_timeout; stuck host runs are resumed sooner by beat.
# The socket bounds make a frozen or vanished Redis an error the worker retries, never a hang:
# commands time out, idle connections are pinged, a timed-out command is retried once.
REDIS_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 900),
    # Short: a web request that publishes (console/dispatch.py) waits at most about this long (twice,
    # with retry_on_timeout) on a frozen Redis before the message goes to the outbox.
    "socket_timeout": float(os.environ.get("REDIS_SOCKET_TIMEOUT", 5)),
    "socket_connect_timeout": float(os.environ.get("REDIS_CONNECT_TIMEOUT", 3)),
    "socket_keepalive": True,
    "health_check_interval": env_int("REDIS_HEALTH_CHECK_INTERVAL", 10),
    "retry_on_timeout": True,
}
if TEST_RUN_ID:
    REDIS_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = f"sriov-test-{TEST_RUN_ID}:"
if not CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = dict(REDIS_BROKER_TRANSPORT_OPTIONS)
CELERY_TASK_DEFAULT_QUEUE = f"sriov-test-{TEST_RUN_ID}" if TEST_RUN_ID else "celery"
# A broker outage is ridden out: the worker reconnects for ever (at start-up too). Publishing is
# bounded (a retry, then the outbox: console/dispatch.py), so no caller hangs for the outage.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = float(os.environ.get("CELERY_BROKER_CONNECTION_TIMEOUT", 5))
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": env_int("CELERY_PUBLISH_MAX_RETRIES", 1),
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 2,
}
# A task running when the connection drops finishes (our tasks are idempotent and own their
# host runs by token); cancelling it would cut an agent call in half.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Publishing through console/dispatch.py: retries after the first try before the message goes to
# the outbox (beat's flush_outbox sends it once the broker is back).
DISPATCH_PUBLISH_RETRIES = env_int("DISPATCH_PUBLISH_RETRIES", 1)
DISPATCH_SOCKET_TIMEOUT = float(os.environ.get("DISPATCH_SOCKET_TIMEOUT", 2))  # seconds per publish try
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "discover-fleet": {
        "task": "hosts.tasks.discover_fleet",
        "schedule": crontab(minute=f"*/{env_int('DISCOVERY_INTERVAL_MINUTES', 15)}"),
    },
    # changes/: resume host runs whose worker died, and expire approvals that waited too long.
    "resume-stale-host-runs": {
        "task": "changes.tasks.resume_stale_host_runs",
        "schedule": float(env_int("HOSTRUN_RESUME_INTERVAL_SECONDS", 30)),
    },
    # Messages the broker did not take when they were published (console/dispatch.py).
    "flush-outbox": {
        "task": "console.tasks.flush_outbox",
        "schedule": float(env_int("OUTBOX_FLUSH_INTERVAL_SECONDS", 10)),
    },
    "expire-approvals": {
        "task": "changes.tasks.expire_approvals",
        "schedule": crontab(minute="*/5"),
    },
}

# --- Audit witnesses (audit/witness.py, docs/audit.md "Witnesses") ------------------------------
# The chain's head is written outside the database after every commit that appends events.
AUDIT_WITNESS_FILE_ENABLED = env_bool("AUDIT_WITNESS_FILE_ENABLED", True)
AUDIT_WITNESS_FILE = os.environ.get("AUDIT_WITNESS_FILE", "")  # "" → var/audit-witness/<database>.jsonl
AUDIT_WITNESS_FSYNC = env_bool("AUDIT_WITNESS_FSYNC")  # survive a machine crash, at ~1 fsync per append
AUDIT_WITNESS_SYSLOG = os.environ.get("AUDIT_WITNESS_SYSLOG", "")  # udp://host:514, tcp://host:514, /dev/log
# HMAC keys of the signed witness lines: the first signs, all verify (rotation as CREDENTIAL_KEYS).
AUDIT_WITNESS_KEYS = env_list("AUDIT_WITNESS_KEYS") or [
    _local_secret("audit_witness_key", lambda: secrets.token_urlsafe(32))
]
# Events newer than the newest witness are reported by verify_audit once older than this.
AUDIT_WITNESS_GRACE_SECONDS = env_int("AUDIT_WITNESS_GRACE_SECONDS", 300)

# --- Console behaviour ------------------------------------------------------------------------
SSH_CONNECT_TIMEOUT = float(os.environ.get("SSH_CONNECT_TIMEOUT", 10))
SSH_OPERATION_TIMEOUT = float(os.environ.get("SSH_OPERATION_TIMEOUT", 120))
DISCOVERY_CONCURRENCY = env_int("DISCOVERY_CONCURRENCY", 50)
# A discovery queued or running this long without a result is presumed lost: a new one may be queued.
DISCOVERY_PENDING_SECONDS = env_int("DISCOVERY_PENDING_SECONDS", 300)
DISCOVERY_CHUNK_SIZE = env_int("DISCOVERY_CHUNK_SIZE", 50)  # hosts per discovery task (fan-out)
# Prefer AES-GCM ciphers and curve25519 key exchange where the host offers them (docs/security.md).
SSH_FAST_CRYPTO = env_bool("SSH_FAST_CRYPTO", True)
# Trust-on-first-use for host keys: off by default, an admin accepts each new key.
HOST_KEY_TOFU = env_bool("HOST_KEY_TOFU")

# Changes (changes/, docs/changes.md).
# The operations a change can carry, one class each (changes/operations/), in the wizard's order.
# CHANGE_OPERATIONS_EXTRA adds more by dotted path (a site's own, or a test's).
CHANGE_OPERATIONS = [
    "changes.operations.set_vfs.SetVfs",
    "changes.operations.vf_driver.VfDriver",
    "changes.operations.vf_config.VfConfig",
    "changes.operations.libvirt_network.LibvirtNetwork",
    "changes.operations.kernel_args.KernelArgs",
    "changes.operations.reboot.Reboot",
] + env_list("CHANGE_OPERATIONS_EXTRA")
CHANGE_APPROVALS_REQUIRED = env_int("CHANGE_APPROVALS_REQUIRED", 1)  # distinct approvers per change
APPROVAL_MAX_AGE = env_int("APPROVAL_MAX_AGE", 7 * 24 * 3600)  # seconds a submitted change may wait
PLAN_INVENTORY_MAX_AGE = env_int("PLAN_INVENTORY_MAX_AGE", 3600)  # older inventory → a plan warning
HOSTRUN_HEARTBEAT_SECONDS = float(os.environ.get("HOSTRUN_HEARTBEAT_SECONDS", 10))
HOSTRUN_STALE_SECONDS = float(os.environ.get("HOSTRUN_STALE_SECONDS", 60))  # no heartbeat → resumed
HOSTRUN_WAIT_RETRY_SECONDS = float(os.environ.get("HOSTRUN_WAIT_RETRY_SECONDS", 5))  # host held elsewhere
# Reboots (docs/changes.md "Kernel arguments and reboots").
REBOOT_DEADLINE_SECONDS = float(os.environ.get("REBOOT_DEADLINE_SECONDS", 900))  # not back by then → failed
BOOT_POLL_SECONDS = float(os.environ.get("BOOT_POLL_SECONDS", 5))  # await_boot re-schedules itself this often
BOOT_PROBE_TIMEOUT = float(os.environ.get("BOOT_PROBE_TIMEOUT", 5))  # connect timeout of one boot probe
REBOOT_PARALLELISM = env_int("REBOOT_PARALLELISM", 1)  # hosts rebooting at once unless the reboot op says more

# --- REST API (api/, docs/api.md) -----------------------------------------------------------
REST_FRAMEWORK = {
    # Bearer tokens for automation, the session (with CSRF) for the browser. The first class's
    # WWW-Authenticate header makes anonymous requests answer 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view names the console permission of each action (api/permissions.py).
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.ConsolePermission"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.IdCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "api.schema.ConsoleAutoSchema",
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": [],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SR-IOV Console API",
    "DESCRIPTION": "Hypervisor inventory, change requests with four-eyes approval, rollouts and the "
    "audit trail. Same roles and rules as the web UI. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "HostStatusEnum": "hosts.models.Hypervisor.Status",
        "ChangeStateEnum": "changes.models.ChangeRequest.State",
        "RolloutStateEnum": "changes.models.Rollout.State",
        "HostRunStateEnum": "changes.models.HostRun.State",
    },
}
API_TOKEN_LAST_USED_RESOLUTION = env_int("API_TOKEN_LAST_USED_RESOLUTION", 60)  # seconds between writes
API_TOKEN_MAX_PER_USER = env_int("API_TOKEN_MAX_PER_USER", 20)  # active tokens per user
# Refused bearer tokens from one client address within LOGIN_FAILURE_WINDOW before it gets 429
# (api/authentication.py); valid tokens are never refused by it.
API_TOKEN_IP_FAILURE_LIMIT = env_int("API_TOKEN_IP_FAILURE_LIMIT", 20)

# --- Single sign-on (accounts/, docs/operations.md "Single sign-on") --------------------------
# LDAP / Active Directory through django-auth-ldap (LDAP_* variables), OpenID Connect through
# mozilla-django-oidc (OIDC_* variables); local accounts always work (break-glass admins).
from accounts.config import (  # noqa: E402
    authentication_backends,
    check_linked_sources,
    ldap_settings,
    oidc_settings,
)

_ldap, _oidc = ldap_settings(os.environ), oidc_settings(os.environ)
check_linked_sources(_ldap, _oidc, os.environ)
globals().update(_ldap)
globals().update(_oidc)
AUTHENTICATION_BACKENDS = authentication_backends(LDAP_ENABLED, OIDC_ENABLED)  # noqa: F821

# --- Notifications (notifications/, docs/operations.md "Notifications") ---------------------
CONSOLE_BASE_URL = os.environ.get("CONSOLE_BASE_URL", "http://127.0.0.1:8000")  # links in e-mails/webhooks
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
NOTIFY_EMAIL_ENABLED = bool(EMAIL_HOST)
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", 10))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "sriov-console@localhost")
EMAIL_SUBJECT_PREFIX = os.environ.get("EMAIL_SUBJECT_PREFIX", "[SR-IOV Console] ")
NOTIFY_MAX_ATTEMPTS = env_int("NOTIFY_MAX_ATTEMPTS", 6)  # tries per delivery, then it is failed
NOTIFY_RETRY_BASE_SECONDS = float(os.environ.get("NOTIFY_RETRY_BASE_SECONDS", 30))  # 30 s, 60 s, 120 s...
NOTIFY_RETRY_MAX_SECONDS = float(os.environ.get("NOTIFY_RETRY_MAX_SECONDS", 600))  # below the visibility timeout
NOTIFY_WEBHOOK_TIMEOUT = float(os.environ.get("NOTIFY_WEBHOOK_TIMEOUT", 10))

# --- Metrics (metrics/, docs/operations.md "Metrics") -----------------------------------------
# Multi-process prometheus-client: each process writes its counters under PROMETHEUS_MULTIPROC_DIR
# (read by prometheus_client at import, hence set in the environment here, before any import);
# /metrics merges every file under METRICS_COLLECT_DIR (the shared parent in docker-compose.yml).
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics" / (f"test-{TEST_RUN_ID}" if TEST_RUN_ID else "local"))
)
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
METRICS_COLLECT_DIR = os.environ.get("METRICS_COLLECT_DIR") or os.environ["PROMETHEUS_MULTIPROC_DIR"]
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = [
    ipaddress.ip_network(item, strict=False)
    for item in env_list("METRICS_ALLOWED_ADDRESSES", "127.0.0.1/32,::1/128")
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # urllib3 logs request lines at DEBUG: a webhook URL's path can be its secret (Slack, Teams).
    "loggers": {"asyncssh": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
