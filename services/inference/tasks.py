"""Celery tasks of the inference service (queue `inference`)."""

from services.common.canary import register_canary
from services.common.celery_app import make_celery

app = make_celery("inference")
canary = register_canary(app, "inference")
