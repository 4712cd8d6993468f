"""The label bank (labels.npz, built offline by the teacher's text tower) and embedding scoring.

Groups are `exclusive` (softmax over the group with the bundle's logit scale; the winner is a
label when its probability reaches its threshold) or `multi` (each label independently: cosine
similarity against its own threshold). The camera
never encodes text; it only takes dot products with these precomputed, L2-normalised rows.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrofit_agent.common.files import read_limited
from retrofit_agent.errors import BundleError, one_line, printable

KINDS = ("exclusive", "multi")
NORM_TOLERANCE = 1e-3
STRING_ARRAYS = ("names", "groups", "group_names", "group_kinds")
FLOAT_ARRAYS = ("embeddings", "thresholds")
REQUIRED = ("names", "groups", "embeddings", "thresholds", "group_names", "group_kinds")
MAX_BANK_BYTES = 64 << 20  # 16k labels of 1024 float32 dimensions


@dataclass(frozen=True)
class Score:
    group: str
    label: str
    score: float


@dataclass(frozen=True)
class Scored:
    """One frame's result: labels that passed their threshold and each group's best label."""

    labels: list[Score]
    top: dict[str, Score]


@dataclass(frozen=True)
class Group:
    name: str
    kind: str
    index: np.ndarray  # rows of the bank that belong to this group


class LabelBank:
    """Text embeddings [L, D] with per-label group and threshold."""

    def __init__(
        self,
        names: np.ndarray,
        groups: np.ndarray,
        embeddings: np.ndarray,
        thresholds: np.ndarray,
        group_names: np.ndarray,
        group_kinds: np.ndarray,
    ) -> None:
        self.names = [str(n) for n in names]
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        label_groups = np.asarray([str(g) for g in groups])
        self.groups = [
            Group(str(name), str(kind), np.flatnonzero(label_groups == str(name)))
            for name, kind in zip(group_names, group_kinds, strict=True)
        ]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.names)

    def score(self, embedding: np.ndarray, logit_scale: float) -> Scored:
        """Score one L2-normalised embedding [D] against every label."""
        similarity = self.embeddings @ embedding
        labels: list[Score] = []
        top: dict[str, Score] = {}
        for group in self.groups:
            sims = similarity[group.index]
            if group.kind == "exclusive":
                logits = logit_scale * sims
                probs = np.exp(logits - logits.max())
                values = probs / probs.sum()
            else:
                values = sims
            best = int(values.argmax())
            top[group.name] = Score(group.name, self.names[group.index[best]], float(values[best]))
            if group.kind == "exclusive":
                passed = [best] if values[best] >= self.thresholds[group.index[best]] else []
            else:
                passed = np.flatnonzero(values >= self.thresholds[group.index])
            for i in passed:
                labels.append(Score(group.name, self.names[group.index[i]], float(values[i])))
        return Scored(labels, top)


def load_label_bank(path: Path) -> LabelBank:
    """Load and validate labels.npz; every inconsistency names the file and the array."""
    arrays = read_arrays(path)
    strings = [key for key in STRING_ARRAYS if arrays[key].dtype.kind != "U"]
    floats = [key for key in FLOAT_ARRAYS if arrays[key].dtype.kind != "f"]
    if strings or floats:
        key = (strings or floats)[0]
        kind = "strings" if strings else "floating-point numbers"
        raise BundleError(f"{path}: {key} must hold {kind}, not {arrays[key].dtype}")
    embeddings = arrays["embeddings"]
    if embeddings.ndim != 2 or 0 in embeddings.shape:
        raise BundleError(f"{path}: embeddings must be [labels, dim], got {embeddings.shape}")
    count = embeddings.shape[0]
    for key in ("names", "groups", "thresholds"):
        if arrays[key].shape != (count,):
            raise BundleError(f"{path}: {key} has shape {arrays[key].shape}, expected ({count},)")
    for key in ("group_names", "group_kinds"):
        if arrays[key].ndim != 1:
            raise BundleError(f"{path}: {key} must be a list, got shape {arrays[key].shape}")
    if not np.all(np.isfinite(arrays["thresholds"])):
        raise BundleError(f"{path}: thresholds must be finite numbers")
    if not np.all(np.isfinite(embeddings)):
        worst = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
        raise BundleError(f"{path}: embedding of {printable(arrays['names'][worst])} is not finite")
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    if np.any(np.abs(norms - 1.0) > NORM_TOLERANCE):
        worst = int(np.abs(norms - 1.0).argmax())
        name = printable(arrays["names"][worst])
        raise BundleError(
            f"{path}: embedding of {name} has norm {norms[worst]:.4f}, expected L2-normalised rows"
        )
    group_names = [str(g) for g in arrays["group_names"]]
    kinds = [str(k) for k in arrays["group_kinds"]]
    if len(group_names) != len(kinds):
        raise BundleError(f"{path}: group_names and group_kinds differ in length")
    if len(set(group_names)) != len(group_names):
        raise BundleError(f"{path}: group_names has duplicates")
    for name, kind in zip(group_names, kinds, strict=True):
        if kind not in KINDS:
            raise BundleError(
                f"{path}: group {printable(name)} has kind {kind!r}, expected one of {KINDS}"
            )
    used = {str(g) for g in arrays["groups"]}
    unknown = sorted(used - set(group_names))
    if unknown:
        names = ", ".join(map(printable, unknown))
        raise BundleError(f"{path}: labels refer to undeclared groups {names}")
    empty = [name for name in group_names if name not in used]
    if empty:
        raise BundleError(f"{path}: group {printable(empty[0])} has no labels")
    return LabelBank(**{key: arrays[key] for key in REQUIRED})


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of REQUIRED from the .npz at `path`, read within MAX_BANK_BYTES.

    Only plain arrays are loaded: a member holding Python objects (which NumPy would unpickle)
    is refused before it is read, so no message suggests loading it "unsafely".
    """
    data = read_limited(path, MAX_BANK_BYTES, BundleError, "label bank")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError):
        raise BundleError(f"{path}: not a readable label bank (not an .npz archive)") from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        missing = [key for key in REQUIRED if key not in members]
        if missing:
            raise BundleError(f"{path}: missing arrays {', '.join(missing)}")
        return {key: _read_member(path, archive, key, members[key]) for key in REQUIRED}


def _read_member(
    path: Path, archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo
) -> np.ndarray:
    where = f"{path}: {key}"
    if info.file_size > MAX_BANK_BYTES:
        raise BundleError(f"{where}: larger than {MAX_BANK_BYTES} bytes")
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(member)
        if dtype.hasobject:
            raise BundleError(f"{where}: holds Python objects, which are never loaded")
        if math.prod(shape) * dtype.itemsize > info.file_size:  # before it is allocated
            raise BundleError(f"{where}: its header promises more data than it holds")
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
        raise BundleError(f"{where}: not readable ({one_line(exc)})") from None
    except ValueError:  # NumPy's own text here advises loading the file unsafely
        raise BundleError(f"{where}: not a NumPy array (.npy)") from None


def save_label_bank(
    path: Path,
    names: list[str],
    groups: list[str],
    embeddings: np.ndarray,
    thresholds: list[float],
    group_kinds: dict[str, str],
) -> None:
    """Write labels.npz in the layout load_label_bank reads (used by the offline tools)."""
    np.savez(
        path,
        names=np.asarray(names),
        groups=np.asarray(groups),
        embeddings=np.asarray(embeddings, dtype=np.float32),
        thresholds=np.asarray(thresholds, dtype=np.float32),
        group_names=np.asarray(list(group_kinds)),
        group_kinds=np.asarray(list(group_kinds.values())),
    )
