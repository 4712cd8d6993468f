"""Check that every runtime dependency has aarch64 wheels for each Python the camera may run.

The camera has no compiler and no time to build numpy or onnxruntime from source, so a
dependency (or one of its own dependencies) without an aarch64 wheel for a supported Python
breaks the install in the field. pip resolves the whole tree for the target platform from
wheel metadata alone (nothing is downloaded or installed); a failure names the package.

    python tools/check_aarch64_wheels.py [REQUIREMENT...] [--python 3.12 ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import project_requirements

# Python versions of the camera OS releases in deploy/PLATFORMS.md (pyproject: >=3.11).
PYTHONS = ("3.11", "3.12", "3.13")
# glibc of the oldest supported camera OS (Debian 12 / Raspberry Pi OS "bookworm"): a wheel
# built for a newer glibc would not load there.
GLIBC_MINOR = 36
PLATFORMS = (
    "manylinux2014_aarch64",
    *(f"manylinux_2_{minor}_aarch64" for minor in range(17, GLIBC_MINOR + 1)),
)


def resolve(requirements: Sequence[str], python: str) -> tuple[list[str], str]:
    """(wheel file names, "") for CPython `python` on aarch64, or ([], pip's errors)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
            "--target", str(Path(tmp) / "target"), "--report", str(report),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
            *(f"--platform={platform}" for platform in PLATFORMS),
            *requirements,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
            return [], "\n".join(errors) or result.stderr.strip()
        installs = json.loads(report.read_text())["install"]
    return [item["download_info"]["url"].rsplit("/", 1)[-1] for item in installs], ""


def missing_package(pip_errors: str, requirement: str) -> str:
    """The package pip found no wheel for: `requirement` itself or one of its dependencies."""
    match = re.search(r"No matching distribution found for (\S+)", pip_errors)
    return project_requirements.package_name(match[1] if match else requirement)


def glibc_needed(wheels: list[str]) -> tuple[int, int]:
    """The newest glibc any of `wheels` needs, from their manylinux tags."""
    needed = (2, 17)
    for wheel in wheels:
        tags = wheel.rsplit("-", 1)[-1].replace("manylinux2014", "manylinux_2_17")
        versions = [(int(a), int(b)) for a, b in re.findall(r"manylinux_(\d+)_(\d+)_", tags)]
        if versions:  # any one of a wheel's tags will do
            needed = max(needed, min(versions))
    return needed


def check(requirements: Sequence[str], pythons: Sequence[str]) -> dict[str, list[str]]:
    """Print what resolves per Python; return {missing package: [Python versions]}."""
    missing: dict[str, list[str]] = {}
    for python in pythons:
        wheels, errors = resolve(requirements, python)
        if wheels:
            glibc = ".".join(map(str, glibc_needed(wheels)))
            names = ", ".join("-".join(w.split("-")[:2]) for w in wheels)
            print(f"python {python} aarch64, glibc >= {glibc}: {len(wheels)} wheels: {names}")
            continue
        culprits = []
        for requirement in requirements:
            _, alone = resolve([requirement], python)
            if alone:
                culprits.append(package := missing_package(alone, requirement))
                missing.setdefault(package, []).append(python)
                print(f"python {python} aarch64: no wheel for {package} (via {requirement})")
                print(f"  {alone}".replace("\n", "\n  "))
        if not culprits:  # each resolves alone, not together
            print(f"python {python} aarch64: the requirements conflict:\n  {errors}")
            missing.setdefault("(conflict)", []).append(python)
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "requirements", nargs="*", help="default: [project].dependencies of pyproject.toml"
    )
    parser.add_argument("--python", action="append", help=f"default: {' '.join(PYTHONS)}")
    args = parser.parse_args()
    missing = check(args.requirements or project_requirements.runtime(), args.python or PYTHONS)
    if missing:
        summary = "; ".join(f"{name} (python {', '.join(v)})" for name, v in missing.items())
        print(f"check_aarch64_wheels: no aarch64 wheel for: {summary}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
