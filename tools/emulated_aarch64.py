"""Run the agent as on the camera: aarch64 (Cortex-A72) under qemu-user, via ../shared/arm64.

install  ../shared/arm64/setup.sh builds an aarch64 CPython with the aarch64 wheels of the
         runtime dependencies and pytest, both as pinned in pyproject.toml; then the agent's own
         wheel is built here and installed beside them with --no-deps, as on a camera.
test     the tests marked `device`, run by the emulated python against that installed wheel
         (never this checkout's sources) with a tiny bundle built here: a camera has no onnx to
         build bundles with, and parity across architectures needs the very same files.

    [ARM64_ROOT=/tmp/arm64] python tools/emulated_aarch64.py install|test [PYTEST ARGS...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import project_requirements

REPO = Path(__file__).resolve().parent.parent
SETUP = Path(os.environ.get("RETROFIT_SHARED", REPO.parent / "shared")) / "arm64" / "setup.sh"
ROOT = Path(os.environ.get("ARM64_ROOT", "/tmp/arm64"))  # setup.sh's default
PYTHON = ROOT / "bin" / "python3"
AGENT = ROOT / "agent"  # the agent's wheel, installed; setup.sh puts the dependencies in site/
# setup.sh's sysroot reads .pth files here (it puts one for site/ there too)
SITE_DIR = ROOT / "sysroot" / "usr" / "lib" / "python3" / "dist-packages"
WHERE_AM_I = """
import platform, sys, cv2, numpy, onnxruntime, retrofit_agent
assert platform.machine() == "aarch64", platform.machine()
assert retrofit_agent.__file__.startswith(sys.argv[1]), retrofit_agent.__file__
print(f"{platform.machine()}: python {platform.python_version()}, numpy {numpy.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}, "
      f"agent {retrofit_agent.__version__} from {retrofit_agent.__file__}")
"""


def emulated_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, less the ways the emulated python could find x86 packages."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"PYTHONNOUSERSITE": "1"} | (extra or {})


def emulated(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the emulated python from outside the checkout, so it imports the installed agent."""
    return subprocess.run([str(PYTHON), *args], env=emulated_env(), cwd=ROOT, check=True, **kwargs)


def install() -> None:
    if not SETUP.is_file():
        sys.exit(f"emulated_aarch64: {SETUP} not found (../shared is absent)")
    # pip itself: setup.sh and install() run `pip check` under emulation (sqlite-utils brings
    # it along too)
    requirements = [
        *project_requirements.runtime(),
        *project_requirements.extra("dev", "pytest"),
        "pip",
    ]
    ROOT.mkdir(parents=True, exist_ok=True)
    log = ROOT / "setup.log"
    print(f"emulated_aarch64: {SETUP} into {ROOT} (log: {log}) with {' '.join(requirements)}")
    with open(log, "w") as out:
        env = os.environ | {"ARM64_ROOT": str(ROOT), "ARM64_REQS": " ".join(requirements)}
        done = subprocess.run(["bash", str(SETUP)], env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(log.read_text()[-4000:])
        sys.exit(f"emulated_aarch64: setup.sh failed with exit code {done.returncode}")

    version = emulated("-c", "import sys; print('%d.%d' % sys.version_info[:2])",
                       capture_output=True, text=True).stdout.strip()  # fmt: skip
    shutil.rmtree(AGENT, ignore_errors=True)
    with tempfile.TemporaryDirectory() as dist:
        pip = [sys.executable, "-m", "pip", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", dist, str(REPO)], check=True)
        subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(AGENT),
                        "--only-binary=:all:", "--implementation", "cp", "--python-version",
                        version, "--platform", "manylinux2014_aarch64",
                        *map(str, Path(dist).glob("*.whl"))], check=True)  # fmt: skip
    (SITE_DIR / "zz_arm64_agent.pth").write_text(f"{AGENT}\n")
    emulated("-m", "pip", "check")  # the agent's declared dependencies, as aarch64 wheels
    emulated("-c", WHERE_AM_I, str(AGENT))


def test(pytest_args: list[str]) -> int:
    if not PYTHON.is_file():
        sys.exit(f"emulated_aarch64: {PYTHON} not found: run `install` first")
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.bundle_factory import build_bundle  # needs onnx, which this (x86) side has

    with tempfile.TemporaryDirectory(prefix="arm64-test-") as tmp:
        bundle = build_bundle(Path(tmp) / "tiny")
        env = {"RETROFIT_TINY_BUNDLE": str(bundle), "RETROFIT_EXPECT_MACHINE": "aarch64"}
        command = ["-m", "pytest", "-m", "device", "-p", "no:cacheprovider", "--durations=5",
                   f"--basetemp={tmp}/pytest", *pytest_args]  # fmt: skip
        started = time.monotonic()
        # from tests/, which holds no retrofit_agent: the suite imports the installed wheel
        done = subprocess.run([str(PYTHON), *command], env=emulated_env(env), cwd=REPO / "tests")
        print(f"emulated_aarch64: device tests took {time.monotonic() - started:.0f} s")
        return done.returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("install", "test"):
        sys.exit(__doc__)
    if sys.argv[1] == "install":
        install()
        return 0
    return test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
