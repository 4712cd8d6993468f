"""The bundle shipped as models/default: verified, runs on real footage, labels its demo clip."""

import json
import os
import subprocess
import sys
from collections import Counter

from helpers.paths import REPO

from retrofit_agent.bundle.manifest import load_bundle
from retrofit_agent.distill.synthetic import HELD_OUT
from retrofit_agent.store.queue import Store

DEFAULT = REPO / "models" / "default"
DEMO = REPO / "models" / "demo.mp4"
# what the demo clip shows, two seconds each (retrofit_agent.distill.synthetic.write_demo_clip)
DEMO_SCRIPT = [
    "red_square",
    "red_circle",
    "blue_star",
    "blue_triangle",
    "green_ring",
    "yellow_star",
    "white_cross",
    "black_circle",
]
FRAMES_PER_SCENE = 20
# combinations that no training or distillation image showed
HELD_OUT_SCENES = [s for s in DEMO_SCRIPT if tuple(s.split("_")) in HELD_OUT]


def dry_run(video, *args, every_frame=False):
    """The dry run's JSON summary; `every_frame`: store every frame (not the keep policy's)."""
    env = {**os.environ, "RETROFIT_AGENT_KEEP__EVERY_FRAME": "true" if every_frame else "false"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrofit_agent",
            "--dry-run",
            str(video),
            "--no-publish",
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_default_bundle_verifies_and_says_what_it_is():
    bundle = load_bundle(DEFAULT)  # every sha256 and the manifest schema
    manifest = bundle.manifest
    assert manifest.teacher.architecture == "synthetic-clip"
    assert manifest.teacher.checkpoint_sha256 is not None
    assert manifest.metrics.eval.top1.student_int8 > manifest.metrics.eval.chance


def test_default_bundle_runs_on_real_footage(real_video):
    summary = dry_run(real_video)
    assert summary["frames"] == 221
    assert 0 < summary["stored_rows"] == summary["kept"]["observations"] < 221
    assert summary["model"]["name"] == load_bundle(DEFAULT).manifest.name


def scene_winners(db, group: str) -> list[str]:
    """The most frequent top label of `group` in each scene of the demo clip."""
    store = Store(db)
    tops = [o.top[group].label for o in store.observations()]
    store.close()
    return [
        Counter(tops[i : i + FRAMES_PER_SCENE]).most_common(1)[0][0]
        for i in range(0, len(tops), FRAMES_PER_SCENE)
    ]


def test_default_bundle_labels_the_demo_clip(tmp_path):
    """Every colour right; objects in at least 6 of 8 scenes, the held-out ones included.

    Measured (models/README.md): all three held-out scenes right; the white cross is taken
    for a star and the black circle for a black star.
    """
    summary = dry_run(DEMO, "--db", tmp_path / "demo.db", every_frame=True)
    assert summary["frames"] == len(DEMO_SCRIPT) * FRAMES_PER_SCENE
    db = tmp_path / "demo.db"
    assert scene_winners(db, "colour") == [s.split("_")[0] for s in DEMO_SCRIPT]
    objects = dict(zip(DEMO_SCRIPT, scene_winners(db, "object"), strict=True))
    assert all(objects[scene] == scene for scene in HELD_OUT_SCENES), objects
    assert sum(shown == labelled for shown, labelled in objects.items()) >= 6, objects
