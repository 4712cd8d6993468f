"""Prometheus text format, parsed strictly (the service and metrics tests read it)."""

from __future__ import annotations

import re

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels}` -> value; checks every family has HELP and TYPE before its samples."""
    values, declared = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif not line.startswith("# HELP "):
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name = match[1]
            assert any(name == d or name.startswith(d + "_") for d in declared), line
            values[name + (match[2] or "")] = float(match[3])
    return values
