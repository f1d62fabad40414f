"""Celery tasks of the trainer service (queue `trainer`)."""

from services.common.canary import register_canary
from services.common.celery_app import make_celery

app = make_celery("trainer")
canary = register_canary(app, "trainer")
