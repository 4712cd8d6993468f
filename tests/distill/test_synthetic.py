import cv2
import numpy as np
import pytest

from retrofit_agent.distill.synthetic import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    SceneGenerator,
    all_combinations,
    class_name,
    single_objects,
    write_demo_clip,
    write_eval_folder,
)


def test_scenes_are_a_function_of_seed_and_index():
    a, b = SceneGenerator(seed=3), SceneGenerator(seed=3)
    for i in (0, 17, 999):
        assert np.array_equal(a.scene(i).image, b.scene(i).image)
        assert a.scene(i).caption == b.scene(i).caption
    other = SceneGenerator(seed=4)
    assert not np.array_equal(a.scene(0).image, other.scene(0).image)
    assert a.scene(0).image.shape == (64, 64, 3) and a.scene(0).image.dtype == np.uint8


def test_held_out_combinations_never_appear_in_training_scenes():
    generator = SceneGenerator()
    assert len(all_combinations()) == len(COLOURS) * len(SHAPES) == 48
    seen = set()
    for scene in generator.scenes(3000):
        for thing in scene.things:
            seen.add((thing.colour, thing.shape))
        for colour, shape in HELD_OUT:
            assert f"{colour} {shape}" not in scene.caption
    assert seen.isdisjoint(HELD_OUT)
    assert seen == set(all_combinations()) - set(HELD_OUT)  # every other combination is used
    assert {c for c, _ in seen} == set(COLOURS) and {s for _, s in seen} == set(SHAPES)


def test_held_out_split_and_eval_folder(tmp_path):
    generator = SceneGenerator()
    things = {(s.things[0].colour, s.things[0].shape) for s in generator.scenes(200, "held_out")}
    assert things == set(HELD_OUT)
    write_eval_folder(generator, tmp_path, per_class=3, split="held_out")
    folders = {p.name: len(list(p.iterdir())) for p in tmp_path.iterdir()}
    assert len(folders) == 48
    assert {name for name, n in folders.items() if n} == {class_name(*c) for c in HELD_OUT}
    assert all(n in (0, 3) for n in folders.values())
    # evaluation images come from their own stream: never equal to a training scene
    eval_images = [s.image for s in single_objects(generator, "seen", 1)]
    train_images = [s.image for s in generator.scenes(200)]
    assert not any(np.array_equal(e, t) for e in eval_images for t in train_images)


def test_demo_clip(tmp_path):
    captions = write_demo_clip(tmp_path / "demo.mp4", SceneGenerator(), seconds_per_scene=0.5)
    capture = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 * len(captions)
    assert "red circle" in captions  # a held-out combination is shown
    assert capture.read()[0]


def test_unknown_held_out_combination_is_refused():
    with pytest.raises(ValueError, match="unknown colours or shapes"):
        SceneGenerator(held_out=[("teal", "circle")])


@pytest.mark.slow
def test_a_short_teacher_training_beats_chance_on_held_out(tmp_path):
    pytest.importorskip("open_clip", reason="needs the [distill] extra")
    from retrofit_agent.distill.synthetic_teacher import train_synthetic_teacher
    from retrofit_agent.distill.teacher import Teacher

    config, report = train_synthetic_teacher(tmp_path, steps=40, batch_size=96, eval_per_class=10)
    assert report["chance"] == pytest.approx(1 / 48)
    assert report["top1_held_out"] > 3 * report["chance"]
    teacher = Teacher(config)  # loads through the same path as a real CLIP checkpoint
    assert teacher.dim == 128 and teacher.identity.architecture == "synthetic-clip"
