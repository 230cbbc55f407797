"""Import a MedMNIST v2 set (.npz) as DICOM (2D) or NIfTI (3D) files plus labels.csv with the official split.

Why convert instead of reading the .npz directly: the rest of medtl reads what hospitals have (DICOM, NIfTI and a
labels spreadsheet), so a public benchmark goes through exactly the same ingest, QC and training path.

MedMNIST has no patient identifiers. Each image is treated as its own patient, with the id
`<name>-<split>-<index>` (index = position in the official split array, from 0). Whether several images come from
one person in the source datasets cannot be known from the .npz, so patient-level leakage inside MedMNIST's own
splits cannot be checked; the official split is kept in labels.csv (`split`), and `test` is for final reporting only.

Output:
    DIR/<patient_id>/<patient_id>.dcm      2D sets: one 8-bit DICOM per image (MONOCHROME2, or RGB for colour sets);
                                           US / DX where the modality is known, Secondary Capture (OT) otherwise.
                                           No PixelSpacing: MedMNIST images have no physical pixel size.
    DIR/<patient_id>/<patient_id>.nii.gz   3D sets: the uint8 volume as stored (axis order as in the .npz) with a
                                           nominal 1 mm identity affine (real voxel sizes differ per set).
    DIR/labels.csv                         patient_id, label (the integer class; for multi-label sets the findings
                                           present, separated by "|", or "none"), split
    DIR/task.json                          the task declaration (contracts/task.py): binary (positive class "1"),
                                           multiclass, ordinal (retinamnist: grades in order) or multilabel; pass
                                           it to `medtl ingest --task-json` so the dataset keeps it
    DIR/dataset.json                       set description, class names, counts, source file hash
UIDs are derived from (name, split, index), so re-importing gives identical files.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage, UltrasoundImageStorage
from rich.console import Console
from rich.progress import Progress

from medtl.contracts import write_json as write_contract
from medtl.contracts.task import NO_FINDING, TaskDeclaration, TaskKind
from medtl.datasets.writing import (
    check_empty_dir,
    derived_uid,
    new_dicom,
    save_dicom,
    staged_output,
    write_csv,
    write_json,
    write_nifti,
)
from medtl.errors import ConfigError, ReadError
from medtl.hashing import sha256_file
from medtl.registry import Registry

SPLITS = ("train", "val", "test")
PROGRESS_THRESHOLD = 2000  # images; smaller imports finish before a progress bar is worth drawing
NOMINAL_AFFINE = np.eye(4)


@dataclass(frozen=True)
class MedMNISTSet:
    """What medtl knows about one MedMNIST set (from the MedMNIST v2 paper and its INFO table)."""

    base: str
    dims: Literal[2, 3]
    channels: int
    modality: str  # DICOM Modality for 2D files; the source imaging for 3D sets (recorded, not written)
    sop_class_uid: str | None
    source: str
    classes: tuple[str, ...]  # class name by label value (multi-label: finding name by label column)
    task: str = "multi-class"  # MedMNIST's word: binary, multi-class, ordinal or multi-label

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"

    def label_values(self) -> list[str]:
        """What labels.csv can hold, in index order: the class index (0, 1, ...), or the finding names."""
        return list(self.classes) if self.multilabel else [str(index) for index in range(len(self.classes))]

    def declaration(self, present: set[str] | None = None) -> TaskDeclaration:
        """task.json: the classes in index order (grade order for an ordinal set). `present`: the label values an
        import holds; a class no image has (a --limit import) is left out, since ingest refuses a declared class
        that no label uses, unless too few would remain to make the task."""
        kind: TaskKind = TASK_KINDS[self.task]
        classes = self.label_values()
        kept = [name for name in classes if present is None or name in present]
        if len(kept) >= (3 if kind == "ordinal" else 2):
            classes = kept
        positive = classes[1] if kind == "binary" else None
        return TaskDeclaration(kind=kind, classes=classes, positive_class=positive)


MEDMNIST_SETS: Registry[MedMNISTSet] = Registry("MedMNIST set")
TASK_KINDS: dict[str, TaskKind] = {
    "binary": "binary",
    "multi-class": "multiclass",
    "ordinal": "ordinal",
    "multi-label": "multilabel",
}
# ChestX-ray14's findings in MedMNIST's column order, lower-case with '_' for spaces (labels.csv names); MedMNIST
# shortens pleural thickening to "pleural", spelled out here so that a report reads as a finding.
_CHEST_FINDINGS = (
    "atelectasis",
    "cardiomegaly",
    "effusion",
    "infiltration",
    "mass",
    "nodule",
    "pneumonia",
    "pneumothorax",
    "consolidation",
    "edema",
    "emphysema",
    "fibrosis",
    "pleural_thickening",
    "hernia",
)
_ORGANS_2D = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)
_ORGANS_3D = (
    "liver",
    "kidney-right",
    "kidney-left",
    "femur-right",
    "femur-left",
    "bladder",
    "heart",
    "lung-right",
    "lung-left",
    "spleen",
    "pancreas",
)
_SC, _US, _DX = SecondaryCaptureImageStorage, UltrasoundImageStorage, DigitalXRayImageStorageForPresentation
_KNOWN = (
    MedMNISTSet(
        "breastmnist", 2, 1, "US", _US, "breast ultrasound (BUSI)", ("malignant", "normal or benign"), "binary"
    ),
    MedMNISTSet("pneumoniamnist", 2, 1, "DX", _DX, "paediatric chest X-ray", ("normal", "pneumonia"), "binary"),
    MedMNISTSet("chestmnist", 2, 1, "DX", _DX, "chest X-ray (NIH ChestX-ray14)", _CHEST_FINDINGS, "multi-label"),
    MedMNISTSet(
        "pathmnist",
        2,
        3,
        "OT",
        _SC,
        "colon histology patches (H&E)",
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
    ),
    MedMNISTSet(
        "dermamnist",
        2,
        3,
        "OT",
        _SC,
        "dermatoscopy (HAM10000)",
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
    ),
    MedMNISTSet(
        "octmnist",
        2,
        1,
        "OT",
        _SC,
        "retinal OCT",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    ),
    MedMNISTSet(
        "retinamnist",
        2,
        3,
        "OT",
        _SC,
        "retinal fundus photography",
        ("DR grade 0", "DR grade 1", "DR grade 2", "DR grade 3", "DR grade 4"),
        "ordinal",
    ),
    MedMNISTSet(
        "bloodmnist",
        2,
        3,
        "OT",
        _SC,
        "blood cell microscopy",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
    ),
    MedMNISTSet(
        "tissuemnist",
        2,
        1,
        "OT",
        _SC,
        "kidney cortex cell microscopy (BBBC051)",
        (
            "collecting duct, connecting tubule",
            "distal convoluted tubule",
            "glomerular endothelial cells",
            "interstitial endothelial cells",
            "leukocytes",
            "podocytes",
            "proximal tubule segments",
            "thick ascending limb",
        ),
    ),
    MedMNISTSet("organamnist", 2, 1, "OT", _SC, "abdominal CT, axial organ crops (windowed, 8-bit)", _ORGANS_2D),
    MedMNISTSet("organcmnist", 2, 1, "OT", _SC, "abdominal CT, coronal organ crops (windowed, 8-bit)", _ORGANS_2D),
    MedMNISTSet("organsmnist", 2, 1, "OT", _SC, "abdominal CT, sagittal organ crops (windowed, 8-bit)", _ORGANS_2D),
    MedMNISTSet("organmnist3d", 3, 1, "CT", None, "abdominal CT organ crops", _ORGANS_3D),
    MedMNISTSet(
        "nodulemnist3d", 3, 1, "CT", None, "chest CT lung nodules (LIDC-IDRI)", ("benign", "malignant"), "binary"
    ),
    MedMNISTSet(
        "adrenalmnist3d",
        3,
        1,
        "CT",
        None,
        "adrenal gland shape masks from abdominal CT",
        ("normal", "hyperplasia"),
        "binary",
    ),
    MedMNISTSet(
        "fracturemnist3d",
        3,
        1,
        "CT",
        None,
        "rib fractures from chest CT (RibFrac)",
        ("buckle", "nondisplaced", "displaced"),
    ),
    MedMNISTSet(
        "vesselmnist3d",
        3,
        1,
        "MR",
        None,
        "brain vessel segments voxelised from MRA meshes (IntrA)",
        ("vessel", "aneurysm"),
        "binary",
    ),
    MedMNISTSet(
        "synapsemnist3d", 3, 1, "EM", None, "synapses in electron microscopy", ("inhibitory", "excitatory"), "binary"
    ),
)
SIZE_SUFFIXES = {2: ("", "_64", "_128", "_224"), 3: ("", "_64")}
for _set in _KNOWN:
    for _suffix in SIZE_SUFFIXES[_set.dims]:
        MEDMNIST_SETS.register(_set.base + _suffix, _set)


def image_size(name: str) -> int:
    """The edge length in pixels that a registered name promises (28 unless it ends in _64, _128 or _224)."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if "_" in name and tail.isdigit() else 28


@dataclass(frozen=True)
class ImportSummary:
    name: str
    spec: MedMNISTSet
    out: Path
    counts: dict[str, int]
    label_counts: dict[str, dict[str, int]]
    limit: int | None
    task: TaskDeclaration | None = None

    def describe(self) -> str:
        kind = "DICOM files" if self.spec.dims == 2 else "NIfTI volumes"
        lines = [f"MedMNIST {self.name} ({self.spec.source}) written to {self.out}"]
        for split in SPLITS:
            labels = ", ".join(f"{label}: {n}" for label, n in sorted(self.label_counts[split].items()))
            lines.append(f"  {split}: {self.counts[split]} {kind} (labels {labels or 'none'})")
        if self.spec.multilabel:
            lines.append(f"  findings (multi-label, '|'-separated in labels.csv): {', '.join(self.spec.classes)}")
        else:
            lines.append("  classes: " + "; ".join(f"{i} = {c}" for i, c in enumerate(self.spec.classes)))
        declared = self.task or self.spec.declaration()
        missing = [name for name in self.spec.label_values() if name not in (declared.classes or [])]
        if missing:
            lines.append(f"  no image of class(es) {', '.join(missing)} in this import: task.json leaves them out")
        lines.append(
            f"  task.json: {declared.kind}; ingest with "
            f"`medtl ingest {self.out} --labels {self.out / 'labels.csv'} --task-json {self.out / 'task.json'} "
            "--out DATASET`"
        )
        lines.append("  MedMNIST has no patient ids: each image is its own patient (<name>-<split>-<index>).")
        if self.limit is not None:
            lines.append(f"  limited to the first {self.limit} images of each split")
        return "\n".join(lines)


def download(url: str, directory: Path, *, timeout_s: float = 60.0) -> Path:
    """Fetch `url` into `directory` with urllib (no extra dependency); a clear error when offline."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ConfigError(
            f"--source {url!r} is neither a local file nor an http(s) URL",
            fix="pass the path of a MedMNIST .npz file or its https download URL",
        )
    target = Path(directory) / (Path(parsed.path).name or "medmnist.npz")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(target, "wb") as sink:  # noqa: S310 (scheme checked above)
            while block := response.read(1 << 20):
                sink.write(block)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ReadError(
            f"could not download the MedMNIST file ({reason})",
            where=url,
            fix="check the network connection, or download the .npz on a machine with internet access "
            "(https://zenodo.org/records/10519652) and pass its local path as --source",
        ) from None
    return target


@contextmanager
def _local_source(source: str) -> Iterator[Path]:
    if source.startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory(prefix="medtl-medmnist-") as tmp:
            yield download(source, Path(tmp))
        return
    path = Path(source)
    if not path.is_file():
        raise ReadError(
            "the MedMNIST source file does not exist",
            where=str(path),
            fix="pass the path of the .npz file (or an https URL to download it)",
        )
    yield path


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an .npz, read from the .npy headers without loading the data."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(stream)
                headers[member[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ReadError(
            f"not a readable .npz file ({error})",
            where=path.name,
            fix="download the MedMNIST .npz again; the file may be truncated or of another format",
        ) from None
    return headers


def _check_npz(path: Path, name: str, spec: MedMNISTSet) -> dict[str, np.ndarray]:
    """Check keys, shapes and dtypes against the set's description; return the labels (small) by split."""
    headers = _npz_headers(path)
    expected = [f"{split}_{part}" for split in SPLITS for part in ("images", "labels")]
    missing = [key for key in expected if key not in headers]
    if missing:
        raise ReadError(
            f"the .npz lacks the key(s) {', '.join(missing)}; found: {', '.join(sorted(headers))}",
            where=path.name,
            fix="pass an unmodified MedMNIST v2 .npz file",
        )
    size = image_size(name)
    image_shape = (size,) * spec.dims + ((3,) if spec.channels == 3 else ())
    problems = []
    for split in SPLITS:
        shape, dtype = headers[f"{split}_images"]
        if shape[1:] != image_shape or dtype != np.uint8:
            wanted = ", ".join(map(str, ("N", *image_shape)))
            problems.append(f"{split}_images is {dtype} {shape}; {name} needs uint8 ({wanted})")
        label_shape, label_dtype = headers[f"{split}_labels"]
        columns = len(spec.classes) if spec.multilabel else 1
        if label_shape[:1] != shape[:1]:
            problems.append(
                f"{split}_labels has {label_shape[0] if label_shape else 0} rows but {split}_images has "
                f"{shape[0]} images"
            )
        elif spec.multilabel and label_shape[1:] != (columns,):
            problems.append(
                f"{split}_labels has shape {label_shape}: {name} is multi-label, one 0/1 column per finding "
                f"(N, {columns}) is needed"
            )
        elif not spec.multilabel and ((len(label_shape) == 2 and label_shape[1] != 1) or len(label_shape) > 2):
            problems.append(
                f"{split}_labels has shape {label_shape}: one label per image (N, 1) is needed "
                f"({name} is single-label; only multi-label sets such as chestmnist have one column per finding)"
            )
        elif label_dtype.kind not in "iu":
            problems.append(f"{split}_labels has dtype {label_dtype}; integer class labels are needed")
    if problems:
        raise ReadError(
            "the .npz does not match " + name + ": " + "; ".join(problems),
            where=path.name,
            fix="check that --source is the file for this set and size (e.g. breastmnist_64 for 64 px)",
        )
    labels = {}
    with np.load(path, allow_pickle=False) as npz:
        for split in SPLITS:
            values = np.asarray(npz[f"{split}_labels"]).astype(np.int64)
            values = values if spec.multilabel else values.reshape(-1)
            top = 1 if spec.multilabel else len(spec.classes) - 1
            bad = values[(values < 0) | (values > top)]
            if bad.size:
                raise ReadError(
                    f"{split}_labels holds {bad.size} value(s) outside 0..{top}, e.g. {int(bad[0])}",
                    where=path.name,
                    fix=f"pass the .npz file of {name}",
                )
            labels[split] = values
    return labels


def _label_cell(spec: MedMNISTSet, value: np.ndarray) -> str | int:
    """labels.csv's cell: the class index, or the findings present ('none' for none) of a multi-label set."""
    if spec.multilabel:
        return "|".join(name for name, present in zip(spec.classes, value, strict=True) if present) or NO_FINDING
    return int(value)


def _label_counts(spec: MedMNISTSet, rows: list[dict[str, Any]], split: str) -> dict[str, int]:
    """Images per class, or per finding (and 'none') for a multi-label set."""
    cells = [row["label"] for row in rows if row["split"] == split]
    if spec.multilabel:
        counts = Counter(name for cell in cells for name in str(cell).split("|"))
        return {name: counts[name] for name in (*spec.classes, NO_FINDING) if counts[name]}
    return {str(k): v for k, v in sorted(Counter(cells).items())}


def _dicom_2d(spec: MedMNISTSet, name: str, split: str, index: int, patient_id: str, pixels: np.ndarray) -> Dataset:
    assert spec.sop_class_uid is not None
    ds = new_dicom(spec.sop_class_uid, derived_uid("medmnist", name, split, index, "instance"))
    ds.PatientID = patient_id
    ds.PatientName = ""  # MedMNIST images carry no names; an id in the name field would read as a name
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = derived_uid("medmnist", name, split, index, "study")
    ds.SeriesInstanceUID = derived_uid("medmnist", name, split, index, "series")
    ds.StudyID = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"MedMNIST {name}"
    ds.SeriesDescription = f"{split} split"
    ds.Modality = spec.modality
    ds.Manufacturer = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "MedMNIST v2 image converted by medtl: no patient identity, no physical pixel size"
    if spec.modality == "OT":
        ds.ConversionType = "WSD"
    if spec.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    rgb = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


_SOP_BY_MODALITY = {"US": _US, "DX": _DX, "OT": _SC}


def with_modality(spec: MedMNISTSet, modality: str | None) -> MedMNISTSet:
    """The set written under another DICOM Modality (and the matching storage class).

    Why: an out-of-distribution test needs another dataset in the same format and with the same modality tag as the
    training data, so that metadata checks cannot tell them apart and only the image content can."""
    if modality is None or modality == spec.modality:
        return spec
    if spec.dims != 2:
        raise ConfigError(
            f"--modality applies to 2D sets only; {spec.base} is written as NIfTI, which has no modality tag",
            where=spec.base,
            fix="leave --modality out for 3D sets",
        )
    if modality not in _SOP_BY_MODALITY:
        raise ConfigError(
            f"unknown modality {modality!r} for a MedMNIST import",
            where=spec.base,
            fix=f"use one of {', '.join(sorted(_SOP_BY_MODALITY))}",
        )
    return replace(spec, modality=modality, sop_class_uid=_SOP_BY_MODALITY[modality])


def import_medmnist(
    name: str,
    *,
    source: str,
    out: Path,
    limit: int | None = None,
    progress: bool | None = None,
    modality: str | None = None,
) -> ImportSummary:
    """Convert a MedMNIST .npz (local path or http(s) URL) into files medtl ingests; see the module docstring.

    MODALITY writes 2D images under another DICOM Modality than the set's own (out-of-distribution tests)."""
    name = name.strip().lower()
    spec = MEDMNIST_SETS.get(name)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be 1 or more (got {limit})", fix="leave --limit out to convert everything")
    spec = with_modality(spec, modality)
    out = Path(out)
    check_empty_dir(out, what=f"MedMNIST {name}")
    with _local_source(str(source)) as path:
        labels = _check_npz(path, name, spec)
        counts = {split: len(values) if limit is None else min(limit, len(values)) for split, values in labels.items()}
        rows: list[dict[str, Any]] = []
        with (
            staged_output(out, what=f"MedMNIST {name}") as work,
            np.load(path, allow_pickle=False) as npz,
            _progress(sum(counts.values()), progress) as advance,
        ):
            for split in SPLITS:
                images = npz[f"{split}_images"]  # one split in memory at a time
                width = max(5, len(str(len(images) - 1)))
                for index in range(counts[split]):
                    patient_id = f"{name}-{split}-{index:0{width}d}"
                    if spec.dims == 2:
                        dataset = _dicom_2d(spec, name, split, index, patient_id, images[index])
                        save_dicom(dataset, work / patient_id / f"{patient_id}.dcm")
                    else:
                        write_nifti(work / patient_id / f"{patient_id}.nii.gz", images[index], NOMINAL_AFFINE)
                    label = _label_cell(spec, labels[split][index])
                    rows.append({"patient_id": patient_id, "label": label, "split": split})
                    advance()
                del images
            label_counts = {split: _label_counts(spec, rows, split) for split in SPLITS}
            write_csv(work / "labels.csv", ("patient_id", "label", "split"), rows)
            present = {name for counts in label_counts.values() for name in counts}
            declared = spec.declaration(present)
            write_contract(declared, work / "task.json")
            write_json(
                work / "dataset.json",
                {
                    "source": "MedMNIST v2 (Yang et al., Scientific Data 2023), CC BY 4.0",
                    "name": name,
                    "description": spec.source,
                    "dims": spec.dims,
                    "modality": spec.modality,
                    "task": spec.task,
                    "classes": {str(i): c for i, c in enumerate(spec.classes)},
                    "counts": counts,
                    "label_counts": label_counts,
                    "limit": limit,
                    "source_file": path.name,
                    "source_sha256": sha256_file(path),
                    "patient_ids": "none in MedMNIST: each image is its own patient, <name>-<split>-<index>",
                    "spacing": "none (2D: no PixelSpacing)" if spec.dims == 2 else "nominal 1 mm identity affine",
                },
            )
    return ImportSummary(
        name=name, spec=spec, out=out, counts=counts, label_counts=label_counts, limit=limit, task=declared
    )


@contextmanager
def _progress(total: int, show: bool | None) -> Iterator[Any]:
    """A rich progress bar on stderr for big imports; a no-op otherwise."""
    if not (show if show is not None else total >= PROGRESS_THRESHOLD):
        yield lambda: None
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("converting", total=total)
        yield lambda: bar.advance(task)
