"""The camera's architecture: the suite knows where it runs, and aarch64 embeds as x86 does.

tools/emulated_aarch64.py sets RETROFIT_EXPECT_MACHINE for the emulated run of the `device`
tests; .ci/run sets RETROFIT_ARM64_PYTHON (that emulated python, with the agent installed)
for the host's run, which then compares the two architectures' embeddings.
"""

import os
import platform
import subprocess

import cv2
import numpy as np
import pytest
from helpers.arch_embeddings import embed_frames, embed_inputs
from helpers.paths import REPO, TESTS

from retrofit_agent.bundle.manifest import load_bundle

EXPECTED_MACHINE = os.environ.get("RETROFIT_EXPECT_MACHINE")
ARM64_PYTHON = os.environ.get("RETROFIT_ARM64_PYTHON")
DEFAULT_BUNDLE = REPO / "models" / "default"
# (max |diff|, min cosine) of L2-normalised embeddings, aarch64 vs this machine. Given the same
# input tensor, onnxruntime's kernels (NEON vs AVX) differ by summation order in FP32; in INT8
# the tiny conv net and the default ResNet-10 bundle (QOperator U8S8 convolutions) agree
# exactly (measured: 3.0e-8). (The former MobileNetV3 default, with hard-swish and
# squeeze-excite in QLinearAdd/Mul, did not: 4.8e-3, min cosine 0.99987.) From the same frames,
# aarch64's OpenCV resizes through its own kernels (KleidiCV, carotene) and lands one intensity
# level off on ~2% of the input values, which the INT8 network amplifies (measured with the
# default bundle: 4.2e-3, 0.99989; FP32 1.7e-4, 0.9999997).
SAME_INPUTS = {"fp32": (1e-5, 0.99999), "int8": (1e-5, 0.99999)}
END_TO_END = {"fp32": (1e-3, 0.9999), "int8": (1e-2, 0.999)}


@pytest.mark.device
@pytest.mark.skipif(
    not EXPECTED_MACHINE,
    reason="RETROFIT_EXPECT_MACHINE is not set (tools/emulated_aarch64.py test)",
)
def test_runs_on_the_expected_machine():
    assert platform.machine() == EXPECTED_MACHINE


@pytest.mark.skipif(
    not ARM64_PYTHON, reason="RETROFIT_ARM64_PYTHON is not set (tools/emulated_aarch64.py install)"
)
@pytest.mark.parametrize("which", ["tiny", "default"])
def test_aarch64_embeddings_match_this_machine(which, tiny_bundle, road_images, tmp_path, capsys):
    bundle = tiny_bundle if which == "tiny" else DEFAULT_BUNDLE
    rng = np.random.default_rng(0)
    frames = [cv2.imread(str(p)) for p in sorted(road_images.glob("*.jpg"))]
    frames += [rng.integers(0, 256, frames[0].shape, np.uint8), frames[0] // 8]  # noise, dusk
    np.save(tmp_path / "frames.npy", np.stack(frames))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONNOUSERSITE": "1"}
    script = TESTS / "helpers" / "arch_embeddings.py"
    subprocess.run(
        [ARM64_PYTHON, script, bundle, tmp_path / "frames.npy", tmp_path / "arm64.npz"],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    arm64 = np.load(tmp_path / "arm64.npz")
    assert str(arm64["machine"]) == "aarch64"
    host = embed_frames(bundle, np.stack(frames))
    one_level = 1 / (255 * min(load_bundle(bundle).manifest.std))
    np.testing.assert_allclose(arm64["inputs"], host["inputs"], rtol=0, atol=1.001 * one_level)

    same_inputs = embed_inputs(bundle, arm64["inputs"])
    report, failed = [], []
    for what, ours, tolerance in (
        ("same inputs", same_inputs, SAME_INPUTS),
        ("same frames", host, END_TO_END),
    ):
        for kind, (max_diff, min_cosine) in tolerance.items():
            diff = float(np.abs(arm64[kind] - ours[kind]).max())
            cosine = float((arm64[kind] * ours[kind]).sum(axis=1).min())
            report.append(
                f"{which} bundle, {kind}, {what}, aarch64 vs {platform.machine()}: "
                f"max |diff| {diff:.1e}, min cosine {cosine:.8f}"
            )
            if diff > max_diff or cosine < min_cosine:
                failed.append(f"{report[-1]} (allowed {max_diff:.0e}, {min_cosine})")
    with capsys.disabled():
        print("", *report, sep="\n")
    assert not failed, failed
