import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch", reason="needs the [distill] extra")

from helpers.distill import make_teacher, tiny_run  # noqa: E402

from retrofit_agent.distill.config import RunConfig  # noqa: E402
from retrofit_agent.distill.data import Batches, FrameCache  # noqa: E402
from retrofit_agent.distill.losses import DistillLoss  # noqa: E402
from retrofit_agent.distill.teacher import Teacher  # noqa: E402
from retrofit_agent.distill.train import (  # noqa: E402
    CHECKPOINT,
    LOG,
    build_student,
    load_checkpoint,
    lr_at,
    train,
)
from retrofit_agent.errors import ConfigError  # noqa: E402


def fixed_batch_loss(config: RunConfig, student) -> float:
    """The run's loss on batch 0, evaluated without dropout or augmentation."""
    teacher = Teacher(config.teacher)
    cache = FrameCache(config.cache_dir)
    batches = Batches(cache, 16, teacher.mean, teacher.std, color_jitter=0)
    images, targets = batches(0)
    criterion = DistillLoss(
        config.losses, teacher.embed_texts(config.losses.prompts), teacher.logit_scale
    )
    with torch.no_grad():
        return criterion(student.eval()(images), targets)[0].item()


def test_training_lowers_the_loss_and_logs(tiny_teacher, real_video, tmp_path):
    config = tiny_run(
        tmp_path / "run",
        tiny_teacher,
        real_video,
        train={"steps": 25, "checkpoint_every": 100, "log_every": 5},
    )
    trained = train(config)
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert state["step"] == 25 and state["spec"]["dim"] == 32
    torch.manual_seed(1)
    # a freshly initialised student of the same shape
    untrained = build_student(load_checkpoint(tmp_path / "run" / CHECKPOINT).spec)
    assert fixed_batch_loss(config, trained) < 0.8 * fixed_batch_loss(config, untrained)
    records = [json.loads(line) for line in (tmp_path / "run" / LOG).read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25]
    assert all(
        r["images_per_s"] > 0 and {"feature", "contrastive", "crossmodal"} <= set(r)
        for r in records
    )


def test_resume_continues_exactly(tiny_teacher, real_video, tmp_path):
    straight = train(tiny_run(tmp_path / "a", tiny_teacher, real_video))
    interrupted = tiny_run(tmp_path / "b", tiny_teacher, real_video, train={"steps": 3})
    train(interrupted)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["step"] == 3
    resumed = train(tiny_run(tmp_path / "b", tiny_teacher, real_video), resume=True)
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_of_another_dimension(tiny_teacher, real_video, tmp_path):
    train(tiny_run(tmp_path / "run", tiny_teacher, real_video, train={"steps": 1}))
    wider = make_teacher(tmp_path / "wider", name="tiny-clip-wider", embed_dim=48)
    with pytest.raises(ConfigError, match="checkpoint has dim 32, this run 48"):
        train(tiny_run(tmp_path / "run", wider, real_video), resume=True)


def test_warmup_then_cosine_schedule(tiny_teacher, real_video, tmp_path):
    config = tiny_run(
        tmp_path,
        tiny_teacher,
        real_video,
        train={"steps": 100, "warmup_steps": 10, "lr": 1e-3, "min_lr": 1e-5},
    )
    rates = [lr_at(step, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(1e-5, rel=0.05)


def cli(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "retrofit_agent.distill", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def toml_text(data: dict) -> str:
    """A run config dict (as model_dump(mode="json") gives it) as TOML."""
    data = dict(data)
    lines = [f"out_dir = {json.dumps(data.pop('out_dir'))}"]
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(v)}" for key, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_toml(path, config: RunConfig):
    path.write_text(toml_text(config.model_dump(mode="json")))
    return path


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("teacher", {"checkpoint": "/nonexistent/teacher.pt"}, "teacher.checkpoint: "),
        ("data", {"videos": ["/nonexistent/clip.mp4"]}, "clip.mp4: not a readable video"),
        ("data", {"videos": [], "images": ["EMPTY"]}, "no training images"),
        ("train", {"stepz": 3}, "train.stepz: unknown key"),
    ],
)
def test_cli_bad_input_is_one_clear_line(
    tiny_teacher, real_video, tmp_path, section, change, message
):
    (tmp_path / "empty").mkdir()
    data = tiny_run(tmp_path / "out", tiny_teacher, real_video).model_dump(mode="json")
    data[section].update(change)
    text = toml_text(data).replace("EMPTY", str(tmp_path / "empty"))
    path = tmp_path / "run.toml"
    path.write_text(text)
    result = cli("train", "--config", path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_cli_trains_and_resumes(tiny_teacher, real_video, tmp_path):
    path = write_toml(tmp_path / "run.toml", tiny_run(tmp_path / "out", tiny_teacher, real_video))
    first = cli("train", "--config", path, "--steps", 2)
    assert first.returncode == 0, first.stderr
    assert f"checkpoint: {tmp_path / 'out' / CHECKPOINT}" in first.stdout
    second = cli("train", "--config", path, "--steps", 4, "--resume")
    assert second.returncode == 0, second.stderr
    assert torch.load(tmp_path / "out" / CHECKPOINT, weights_only=False)["step"] == 4


RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from retrofit_agent.distill.config import load_run_config
    from retrofit_agent.distill.train import train
    student = train(load_run_config(sys.argv[1]))
    torch.save(student.state_dict(), sys.argv[2] + f"/rank{os.environ['RANK']}.pt")
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_end_identical(tiny_teacher, real_video, tmp_path):
    config = write_toml(
        tmp_path / "run.toml",
        tiny_run(tmp_path / "out", tiny_teacher, real_video, train={"steps": 2}),
    )
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(script),
        str(config),
        str(tmp_path),
    ]
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    initial = build_student(load_checkpoint(tmp_path / "out" / CHECKPOINT).spec)
    moved = False
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
        moved |= not torch.equal(tensor, initial.state_dict()[name])
    assert moved
