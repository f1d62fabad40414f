"""Celery tasks of the toolsynth service (queue `toolsynth`)."""

from services.common.canary import register_canary
from services.common.celery_app import make_celery

app = make_celery("toolsynth")
canary = register_canary(app, "toolsynth")
