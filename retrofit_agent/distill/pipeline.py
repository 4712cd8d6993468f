"""The offline steps after training, and `all`: a run directory becomes a model bundle.

Each step leaves its output in the run directory (out_dir); `all` skips a step whose output is
already there, so an interrupted `all` resumes where it stopped. The bundle directory is
written last, and the agent's own loader verifies it before `all` reports success.

    train    -> checkpoint.pt (resumed if it stopped early)
    export   -> student.fp32.onnx, export.json
    labels   -> labels.npz (from labels.label_set, by the teacher's text tower)
    quantize -> student.int8.onnx, quantize.json
    eval     -> eval.json, eval.png (when eval.folder is set)
    bundle   -> <bundle dir>/manifest.json + the files above
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrofit_agent.bundle import writer
from retrofit_agent.bundle.labels import load_label_bank
from retrofit_agent.bundle.labelset import load_label_set
from retrofit_agent.bundle.manifest import LABELS, STUDENT_FP32, STUDENT_INT8, Description
from retrofit_agent.bundle.sections import Metrics, StudentInfo
from retrofit_agent.config import load_config
from retrofit_agent.distill.config import RunConfig
from retrofit_agent.distill.data import FrameCache, model_inputs
from retrofit_agent.distill.evaluate import evaluate
from retrofit_agent.distill.export import check_parity, export_onnx
from retrofit_agent.distill.labelset import build_label_bank
from retrofit_agent.distill.quantize import quantize
from retrofit_agent.distill.reports import (
    EVAL_REPORT,
    EXPORT_REPORT,
    QUANTIZE_REPORT,
    EvalReport,
    ExportReport,
    QuantizeReport,
    read_report,
    write_report,
)
from retrofit_agent.distill.spec import StudentSpec
from retrofit_agent.distill.student import Student, describe_head, parameter_count
from retrofit_agent.distill.teacher import Teacher
from retrofit_agent.distill.train import CHECKPOINT, build_student, load_checkpoint, train
from retrofit_agent.errors import ConfigError
from retrofit_agent.frames.pipeline import Pipeline


def trained_student(config: RunConfig) -> tuple[Student, StudentSpec]:
    """The student of the run's checkpoint, in eval mode, and its spec."""
    state = load_checkpoint(config.out_dir / CHECKPOINT)
    student = build_student(state.spec)
    student.load_state_dict(state.student)
    return student.eval(), state.spec


def run_train(config: RunConfig) -> bool:
    """Train, or finish an interrupted training; False when the checkpoint was complete."""
    checkpoint = config.out_dir / CHECKPOINT
    resume = checkpoint.is_file()
    if resume and load_checkpoint(checkpoint).step >= config.train.steps:
        return False
    train(config, resume=resume)
    return True


def run_export(config: RunConfig) -> ExportReport:
    student, spec = trained_student(config)
    fp32 = config.out_dir / STUDENT_FP32
    export_onnx(student, spec.image_size, fp32, config.export.opset)
    inputs = model_inputs(FrameCache(config.cache_dir), spec, config.export.parity_frames)
    report = check_parity(student, fp32, inputs, config.export.max_abs_diff)
    write_report(config.out_dir / EXPORT_REPORT, report)
    return report


def run_labels(config: RunConfig, teacher: Teacher) -> Path:
    if config.labels.label_set is None:
        raise ConfigError("labels.label_set: not set (a label-set TOML, e.g. models/labels/)")
    path = config.out_dir / LABELS
    build_label_bank(load_label_set(config.labels.label_set), teacher.embed_texts, path)
    return path


def run_quantize(config: RunConfig) -> QuantizeReport:
    _, spec = trained_student(config)
    cache = FrameCache(config.cache_dir)
    labels = config.out_dir / LABELS
    report = quantize(
        config.out_dir / STUDENT_FP32,
        config.out_dir / STUDENT_INT8,
        model_inputs(cache, spec, config.quantize.calibration_frames),
        model_inputs(cache, spec, config.quantize.fidelity_frames),
        config.quantize,
        load_label_bank(labels) if labels.is_file() else None,
    )
    write_report(config.out_dir / QUANTIZE_REPORT, report)
    return report


def run_eval(config: RunConfig, teacher: Teacher) -> EvalReport:
    if config.eval.folder is None:
        raise ConfigError("eval.folder: not set (a folder with one sub-folder per class)")
    _, spec = trained_student(config)
    out = config.out_dir
    return evaluate(
        config.eval.folder,
        config.eval.templates,
        teacher,
        spec,
        out / STUDENT_FP32,
        out / STUDENT_INT8,
        out,
    )


def description(config: RunConfig) -> Description:
    """The bundle's manifest fields, from the run's checkpoint and reports."""
    out = config.out_dir
    student, spec = trained_student(config)
    quantized = read_report(out / QUANTIZE_REPORT, QuantizeReport)
    evaluation = None
    if (out / EVAL_REPORT).is_file():
        evaluation = read_report(out / EVAL_REPORT, EvalReport).summary()
    return Description(
        name=config.bundle.name,
        teacher=spec.teacher,
        student=StudentInfo(
            architecture=f"{spec.backbone} + {describe_head(spec.hidden)} head -> {spec.dim}",
            backbone=spec.backbone,
            head_hidden=spec.hidden,
            params=parameter_count(student),
        ),
        size=spec.image_size,
        resize=spec.resize,
        mean=spec.mean,
        std=spec.std,
        embedding_dim=spec.dim,
        logit_scale=spec.teacher_logit_scale,
        quantization=quantized.section(),
        metrics=Metrics(
            export_max_abs_diff=read_report(out / EXPORT_REPORT, ExportReport).max_abs_diff,
            int8_vs_fp32_cosine=quantized.chosen.cosine_mean,
            int8_top1_label_agreement=quantized.chosen.top1_agreement,
            eval=evaluation,
        ),
    )


def write_bundle(config: RunConfig, force: bool = False) -> Path:
    """Copy the run's outputs into the bundle directory with a manifest, then verify it with
    the agent's loader and its frame path (which also checks every dimension)."""
    bundle = config.bundle_dir
    if bundle.exists() and not force:
        raise ConfigError(f"{bundle}: bundle directory exists (use --force to replace it)")
    fields = description(config)  # before the old bundle goes: every report is there and valid
    if bundle.exists():
        shutil.rmtree(bundle)
    files = {name: config.out_dir / name for name in (STUDENT_INT8, STUDENT_FP32, LABELS)}
    writer.write_bundle(bundle, fields, files)
    Pipeline(load_config(None, environ={}, overrides={"model": bundle}))  # the agent accepts it
    return bundle


def run_all(config: RunConfig, force: bool = False, say: Callable[[str], None] = print) -> Path:
    """Every step whose output is missing (and every step after it), then the bundle."""
    out = config.out_dir
    if config.bundle_dir.exists() and not force:
        raise ConfigError(f"{config.bundle_dir}: bundle directory exists (use --force)")
    say("train")
    stale = run_train(config)  # once a step runs, every later step runs again
    teacher = None

    def get_teacher() -> Teacher:
        nonlocal teacher
        teacher = teacher or Teacher(config.teacher)
        return teacher

    steps: list[tuple[str, list[Path], Callable[[], Any]]] = [
        ("export", [out / STUDENT_FP32, out / EXPORT_REPORT], lambda: run_export(config)),
        ("labels", [out / LABELS], lambda: run_labels(config, get_teacher())),
        ("quantize", [out / STUDENT_INT8, out / QUANTIZE_REPORT], lambda: run_quantize(config)),
    ]
    if config.eval.folder is not None:
        steps.append(("eval", [out / EVAL_REPORT], lambda: run_eval(config, get_teacher())))
    for name, outputs, step in steps:
        if not stale and all(p.is_file() for p in outputs):
            say(f"{name}: done before, kept")
            continue
        say(name)
        step()
        stale = True
    bundle = write_bundle(config, force)
    say(f"bundle: {bundle}")
    return bundle
