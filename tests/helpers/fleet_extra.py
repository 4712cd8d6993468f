"""Whether the [fleet] extra is installed (the emulated camera has only the device's packages).

`import helpers.needs_fleet` skips the importing test module without it; tests/fleet/conftest.py
ignores that whole directory.
"""

from __future__ import annotations

import importlib.util

FLEET_EXTRA = ("starlette", "uvicorn", "psycopg", "psycopg_pool")
MISSING = [name for name in FLEET_EXTRA if importlib.util.find_spec(name) is None]
