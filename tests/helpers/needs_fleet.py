"""Importing this skips the importing test module where the [fleet] extra is missing."""

import pytest

from helpers.fleet_extra import MISSING

if MISSING:
    pytest.skip(f"needs the [fleet] extra ({', '.join(MISSING)})", allow_module_level=True)
