"""Celery tasks of the prober service (queue `prober`)."""

from services.common.canary import register_canary
from services.common.celery_app import make_celery

app = make_celery("prober")
canary = register_canary(app, "prober")
