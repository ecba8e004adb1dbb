"""The real Celery app, plus a pause for fault tests.

With HOLD_AFTER_REMINDER_FILE set, the first booking:reminder job that finishes
writes its process id there and sleeps before returning to the pool, that is
after its transaction committed and before the broker got its ack.
"""

import os
import time
from pathlib import Path

from celery.signals import task_postrun

from saas.celery import app

__all__ = ["app"]


@task_postrun.connect
def _hold_after_reminder(task=None, **kwargs) -> None:
    marker = os.environ.get("HOLD_AFTER_REMINDER_FILE")
    if not marker or task is None or task.name != "bookings.reminder_send":
        return
    path = Path(marker)
    if path.exists():
        return  # only the first delivery is held
    path.write_text(str(os.getpid()))
    time.sleep(600)
