"""Zero-shot evaluation: teacher, student FP32 and student INT8 on a labelled image folder.

One sub-folder per class; the folder name (underscores as spaces) goes into the prompt templates
and the teacher's text tower builds the classifier, exactly as for the label bank. The students
run as deployed (ONNX on onnxruntime, the agent's preprocessing). Reports top-1 accuracy,
retention (student / teacher), per-class accuracy and embedding cosine distributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch

from retrofit_agent.bundle.sections import Cosines, CosineStats, Retention, Top1
from retrofit_agent.distill.export import onnx_embeddings
from retrofit_agent.distill.labelset import ensemble
from retrofit_agent.distill.reports import EVAL_REPORT, EvalReport, write_report
from retrofit_agent.distill.spec import StudentSpec
from retrofit_agent.distill.teacher import Teacher
from retrofit_agent.errors import ConfigError
from retrofit_agent.frames.capture import IMAGE_SUFFIXES

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

MODELS = tuple(Top1.model_fields)  # teacher, student_fp32, student_int8


def labelled_images(folder: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image paths, class index per image) from one sub-folder per class.

    An empty sub-folder is still a class: a wrong answer the classifier can give (e.g. every
    seen combination when only held-out ones are tested).
    """
    if not folder.is_dir():
        raise ConfigError(f"eval.folder: {folder}: no such folder")
    classes, paths, labels = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        labels += [len(classes)] * len(files)
        classes.append(sub.name)
        paths += files
    if not paths:
        raise ConfigError(f"eval.folder: {folder}: no images in class sub-folders")
    return classes, paths, np.asarray(labels)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"{path}: not a readable image")
    return image


def _stats(values: np.ndarray) -> CosineStats:
    return CosineStats(
        mean=float(values.mean()),
        min=float(values.min()),
        p5=float(np.percentile(values, 5)),
        p50=float(np.percentile(values, 50)),
    )


def evaluate(
    folder: Path,
    templates: Sequence[str],
    teacher: Teacher,
    spec: StudentSpec,
    fp32: Path,
    int8: Path,
    out_dir: Path,
) -> EvalReport:
    """Evaluate and write eval.json and eval.png into `out_dir`; returns the report."""
    classes, paths, labels = labelled_images(folder)
    text = np.stack(
        [
            ensemble([t.format(c.replace("_", " ")) for t in templates], teacher.embed_texts)
            for c in classes
        ]
    )
    images = [_read(p) for p in paths]
    preprocessor = spec.preprocessor()
    inputs = np.concatenate([preprocessor(image).copy() for image in images])
    teacher_emb = torch.cat(
        [teacher.embed_images(images[i : i + 64]) for i in range(0, len(images), 64)]
    ).numpy()
    embeddings = {
        "teacher": teacher_emb,
        "student_fp32": onnx_embeddings(fp32, inputs),
        "student_int8": onnx_embeddings(int8, inputs),
    }
    correct = {m: (e @ text.T).argmax(axis=1) == labels for m, e in embeddings.items()}
    top1 = Top1(**{m: float(c.mean()) for m, c in correct.items()})
    cosine = {
        "student_fp32_vs_teacher": (embeddings["student_fp32"] * teacher_emb).sum(axis=1),
        "student_int8_vs_teacher": (embeddings["student_int8"] * teacher_emb).sum(axis=1),
        "int8_vs_fp32": (embeddings["student_int8"] * embeddings["student_fp32"]).sum(axis=1),
    }
    report = EvalReport(
        folder=str(folder),
        images=len(paths),
        chance=1 / len(classes),
        top1=top1,
        retention=Retention(
            student_fp32=_ratio(top1.student_fp32, top1.teacher),
            student_int8=_ratio(top1.student_int8, top1.teacher),
            int8_vs_fp32=_ratio(top1.student_int8, top1.student_fp32),
        ),
        cosine=Cosines(**{name: _stats(values) for name, values in cosine.items()}),
        classes=classes,
        templates=list(templates),
        per_class={
            c: Top1(**{m: float(correct[m][labels == i].mean()) for m in MODELS})
            for i, c in enumerate(classes)
            if (labels == i).any()
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(out_dir / EVAL_REPORT, report)
    plot(report, cosine, out_dir / "eval.png")
    return report


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def plot(report: EvalReport, cosine: dict[str, np.ndarray], path: Path) -> None:
    classes = list(report.per_class)
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(max(10, 0.5 * len(classes) + 6), 4.5))
    x = np.arange(len(classes))
    for i, model in enumerate(MODELS):
        values = [getattr(report.per_class[c], model) for c in classes]
        label = f"{model} ({getattr(report.top1, model):.1%})"
        bars.bar(x + (i - 1) * 0.27, values, width=0.27, label=label)
    bars.set_xticks(x, classes, rotation=60, ha="right", fontsize=7)
    bars.set_ylabel("zero-shot top-1")
    bars.set_ylim(0, 1.05)
    bars.axhline(report.chance, color="grey", linestyle=":", label="chance")
    bars.legend(fontsize=7)
    bars.set_title("per-class accuracy")
    for name, values in cosine.items():
        hist.hist(
            values, bins=30, range=(min(0.0, float(values.min())), 1.0), alpha=0.5, label=name
        )
    hist.set_xlabel("cosine similarity")
    hist.set_title("embedding agreement")
    hist.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
