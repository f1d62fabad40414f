"""Celery tasks of the judge service (queue `judge`)."""

from services.common.canary import register_canary
from services.common.celery_app import make_celery

app = make_celery("judge")
canary = register_canary(app, "judge")
