"""Metrics tests share the run's PROMETHEUS_MULTIPROC_DIR (console/settings.py: one folder per
test run under var/test/metrics). Folders of earlier runs whose pytest is gone are removed here."""

import shutil
from pathlib import Path

from django.conf import settings

from tests.procs import alive


def _drop_abandoned_metric_dirs():
    root = Path(settings.VAR_DIR) / "metrics"
    for folder in root.glob("test-*") if root.is_dir() else []:
        pid = folder.name[len("test-"):].split("_")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


_drop_abandoned_metric_dirs()
