"""Run by tests/test_run_isolation.py as a separate pytest session (not collected otherwise):
start the real Celery worker fixture, report its pid and queue, then wait to be killed."""

import json
import os
import time

from django.conf import settings


def test_wait_to_be_killed(celery_worker):
    out = os.environ["PROBE_OUT"]
    with open(out + ".tmp", "w") as fh:
        json.dump({"worker_pid": celery_worker.proc.pid, "queue": settings.CELERY_TASK_DEFAULT_QUEUE,
                   "database": settings.DATABASES["default"]["NAME"], "pytest_pid": os.getpid()}, fh)
    os.rename(out + ".tmp", out)
    time.sleep(600)
