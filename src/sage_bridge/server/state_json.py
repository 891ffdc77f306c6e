"""The run-time state of budgets, limiters and cooldowns as JSON, for the admin status.

Money is a decimal string ("1.25"), so no float rounding creeps into what scripts read. Times are
ISO 8601 strings, and seconds and token counts are numbers.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sage_bridge.runtime import Runtime


def runtime_state(runtime: Runtime) -> dict[str, Any]:
    """Return the `budgets`, `limits` and `cooldowns` keys of GET /admin/status."""
    registries = runtime.registries
    return {
        "budgets": [_plain(budget) for budget in registries.budgets.snapshot()],
        "limits": _plain(registries.limiters.snapshot()),
        "cooldowns": [_plain(cooldown) for cooldown in registries.cooldowns.snapshot()],
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return round(value, 3)
    return value
