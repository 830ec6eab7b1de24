# SR-IOV Console: one image for web (gunicorn), worker and beat (docker-compose.yml).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONSOLE_VAR_DIR=/var/lib/sriov-console

WORKDIR /app

# Dependencies first (cached while only the code changes). pyproject.toml installs no package of
# its own (packages = []), only the pinned dependencies.
COPY pyproject.toml ./
# python-ldap (LDAP / Active Directory login) builds against OpenLDAP's and SASL's headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libldap-dev libsasl2-dev \
    && pip install . \
    && apt-get purge -y --auto-remove gcc \
    && rm -rf /var/lib/apt/lists/*

COPY . .

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin console \
    && mkdir -p "$CONSOLE_VAR_DIR/witness" "$CONSOLE_VAR_DIR/metrics" \
    && chown -R console "$CONSOLE_VAR_DIR"
USER console

EXPOSE 8000
# The compose file gives each service its command; this default is the web server.
CMD ["gunicorn", "console.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--access-logfile", "-"]
