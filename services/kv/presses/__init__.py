"""The token-selection presses, one file each, registered by name (NVIDIA kvpress's shape).

A press file holds its method's config, its prefill selection, its decode-time eviction and
its minimum budget (a subclass of base.Press); adding a method is that file and one line in
PRESSES. The planner (services/kv/budget.py) and the cache (services/kv/cache.py) only ask
the press of a request's method.
"""

from __future__ import annotations

from services.kv.presses import h2o, pyramidkv, snapkv, streamingllm
from services.kv.presses.base import Press

PRESSES: dict[str, Press] = {
    press.name: press for press in (streamingllm.PRESS, h2o.PRESS, snapkv.PRESS, pyramidkv.PRESS)
}
