"""JSON from requests: every failure to read it is the caller's field error, never INTERNAL."""

from __future__ import annotations

import json
from typing import Any

from services.common.errors import InvalidInput


def load_json(text: str | bytes, field: str) -> Any:
    """json.loads, with malformed or too deeply nested input as InvalidInput naming field."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(field, f"not JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(field, "JSON nested too deeply") from None
