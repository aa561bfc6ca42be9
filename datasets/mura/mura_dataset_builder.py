"""MURA v1.1 (Rajpurkar et al. 2017): upper-extremity radiographs, studies labelled normal/abnormal.

Manual download (Stanford AIMI registration). ``manual_dir`` holds ``MURA-v1.1/`` or
``MURA-v1.1.zip``; the zip is read in place, member by member, without extracting it. Labels are
per study and come from ``{train,valid}_labeled_studies.csv``; a study folder whose
``_positive``/``_negative`` suffix disagrees with the CSV keeps the CSV's label and is reported.
Images listed in ``{train,valid}_image_paths.csv`` that cannot be used (unparseable path, study
without a label, unreadable file) are left out, logged and listed in ``builder.info.metadata``.

Configs:
- ``official`` (default): MURA's ``train`` and ``valid`` splits as published.
- ``grouped_val``: ``train`` and ``validation`` carved from MURA's train (10% of the images,
  grouped by patient, stratified by body part and label), and ``test`` = MURA's valid.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import posixpath
import re
import zipfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tf_fracture.data.builders import radiograph_info
from tf_fracture.data.io import ImageReadError, decode_image, list_skipped, read_each, read_image
from tf_fracture.data.splits import grouped_stratified_split
from tf_fracture.validation import check_rate

BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
_MURA_SPLITS = ("train", "valid")
_FOLDER = "MURA-v1.1"
_STUDY = re.compile(r"^study(\d+)_(positive|negative)$")
_PATIENT = re.compile(r"^patient\d+$")

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MuraConfig(tfds.core.BuilderConfig):
    """`validation_fraction` > 0 carves a patient-grouped `validation` split out of MURA's train."""

    validation_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self):
        check_rate("validation_fraction", self.validation_fraction)


@dataclasses.dataclass(frozen=True)
class MuraImage:
    """One row of `{train,valid}_image_paths.csv`, parsed."""

    filename: str  # relative to the MURA-v1.1 folder: "train/XR_WRIST/patient00001/study1_positive/image1.png"
    body_part: str
    patient_id: str  # "patient00001"
    study_id: str  # "XR_WRIST/patient00001/study1": unique, without the label suffix
    label: int


class Builder(tfds.core.GeneratorBasedBuilder):
    """MURA v1.1 for abnormality classification, optionally with a patient-grouped validation split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        MuraConfig(name="official", description="MURA's train and valid splits as published."),
        MuraConfig(
            name="grouped_val",
            description="train/validation (10%, patient-grouped, stratified) from MURA's train; test = MURA's valid.",
            validation_fraction=0.1,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "official"
    # TFDS finds this file, README.md and CITATIONS.bib through importlib.resources, which fails on
    # the namespace package `tf_fracture_datasets` of an editable install: give the paths directly.
    code_path = epath.Path(__file__)
    pkg_dir_path = code_path.parent
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Register at https://aimi.stanford.edu/datasets/mura-msk-xrays (Stanford AIMI shared datasets),
    download MURA-v1.1 and place either the extracted `MURA-v1.1/` folder (with `train/`, `valid/`
    and the four CSVs) or `MURA-v1.1.zip` in `manual_dir` (default ~/tensorflow_datasets/downloads/manual/).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        extra = {"body_part": tfds.features.ClassLabel(names=list(BODY_PARTS)), "study_id": tfds.features.Text()}
        return radiograph_info(
            self, ["negative", "positive"], extra, homepage="https://stanfordmlgroup.github.io/competitions/mura/"
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source = MuraSource.find(dl_manager.manual_dir)
        records, problems, disagreements = {}, {}, {}
        for split in _MURA_SPLITS:
            records[split], split_problems, split_disagreements = scan_split(source, split)
            problems.update(split_problems)
            disagreements.update(split_disagreements)
        list_skipped("MURA", "image(s) left out", problems)
        list_skipped(
            "MURA",
            "stud(ies) whose folder name contradicts labeled_studies.csv (the CSV's label is used)",
            disagreements,
        )
        overlap = {r.patient_id for r in records["train"]} & {r.patient_id for r in records["valid"]}
        if overlap:
            log.warning("MURA: %d patient(s) are in both train and valid: %s", len(overlap), sorted(overlap))
        self.info.metadata.update({"left_out": problems, "label_disagreements": disagreements, "unreadable": {}})

        fraction = self.builder_config.validation_fraction
        if fraction == 0:
            return {split: self._generate_examples(source, records[split]) for split in _MURA_SPLITS}
        train = records["train"]
        split_of = grouped_stratified_split(
            [r.filename for r in train],
            # Stratified by body part and label: each body part's abnormality rate differs.
            [f"{r.body_part}:{r.label}" for r in train],
            [r.patient_id for r in train],
            {"train": 1.0 - fraction, "validation": fraction},
            seed=self.builder_config.seed,
        )
        carved = {name: [r for r in train if split_of[r.filename] == name] for name in ("train", "validation")}
        if not carved["validation"]:
            raise ValueError(
                f"validation_fraction={fraction} of {len(train)} train images leaves the validation split empty."
            )
        return {
            "train": self._generate_examples(source, carved["train"]),
            "validation": self._generate_examples(source, carved["validation"]),
            "test": self._generate_examples(source, records["valid"]),
        }

    def _generate_examples(self, source: MuraSource, records: list[MuraImage]):
        unreadable: dict[str, str] = {}
        with source.open() as reader:

            def read(record: MuraImage):
                return reader.read_image(record.filename)

            for record, image in read_each(records, read, unreadable, key=lambda record: record.filename):
                yield (
                    record.filename,
                    {
                        "image": image[:, :, None],
                        "label": record.label,
                        "body_part": record.body_part,
                        "patient_id": record.patient_id,
                        "study_id": record.study_id,
                        "filename": record.filename,
                    },
                )
        list_skipped("MURA", "image(s) unreadable, skipped", unreadable)
        self.info.metadata["unreadable"].update(unreadable)


def scan_split(source: MuraSource, split: str) -> tuple[list[MuraImage], dict[str, str], dict[str, str]]:
    """Joins a split's image list with its study labels.

    Returns:
        `(images, left_out, disagreements)`: the usable images sorted by file name; `{csv row: reason}`
        for the rows left out; `{study: explanation}` where the CSV label contradicts the folder name.
    """
    study_labels, left_out, disagreements = {}, {}, {}
    for row in csv.reader(io.StringIO(source.read_text(f"{split}_labeled_studies.csv"))):
        if not row:
            continue
        rel = _relative(row[0])
        if rel is None or len(row) != 2 or row[1].strip() not in ("0", "1"):
            left_out[",".join(row)] = f"unparseable row in {split}_labeled_studies.csv"
            continue
        study_labels[rel.rstrip("/")] = int(row[1])

    images = {}
    for line in source.read_text(f"{split}_image_paths.csv").splitlines():
        path = line.strip()
        if not path:
            continue
        rel = _relative(path)
        parts = rel.split("/") if rel else []
        if len(parts) != 5 or parts[0] != split:
            left_out[path] = f"not a {split}/XR_<BODYPART>/patientNNNNN/studyN_<label>/imageN path"
            continue
        _, body_part, patient_id, study_dir, _ = parts
        study = _STUDY.match(study_dir)
        if body_part not in BODY_PARTS or not _PATIENT.match(patient_id) or not study:
            left_out[path] = f"unknown body part, patient or study folder (body parts: {', '.join(BODY_PARTS)})"
            continue
        study_rel = posixpath.dirname(rel)
        if study_rel not in study_labels:
            left_out[path] = f"its study has no label in {split}_labeled_studies.csv"
            continue
        label = study_labels[study_rel]
        if label != int(study.group(2) == "positive"):
            disagreements[study_rel] = f"labeled_studies.csv says {label}, the folder says {study.group(2)}"
        if rel in images:
            left_out[path] = f"listed twice in {split}_image_paths.csv (kept once)"
        images[rel] = MuraImage(
            filename=rel,
            body_part=body_part,
            patient_id=patient_id,
            study_id=f"{body_part}/{patient_id}/study{study.group(1)}",
            label=label,
        )
    return [images[p] for p in sorted(images)], left_out, disagreements


def _relative(path: str) -> str | None:
    """'MURA-v1.1/train/XR_X/...' (any top folder name, or none) -> 'train/XR_X/...'."""
    parts = path.strip().replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        if part in _MURA_SPLITS:
            return "/".join(parts[i:])
    return None


@dataclasses.dataclass(frozen=True)
class MuraSource:
    """The MURA root: a folder, or a folder inside a zip (`member_prefix`, read without extracting)."""

    path: str
    member_prefix: str | None = None  # set for a zip: "MURA-v1.1/"

    @classmethod
    def find(cls, manual_dir) -> MuraSource:
        manual_dir = str(manual_dir)
        for folder in (posixpath.join(manual_dir, _FOLDER), manual_dir):
            if tf.io.gfile.exists(posixpath.join(folder, "train_image_paths.csv")):
                return cls(folder)
        archive = posixpath.join(manual_dir, f"{_FOLDER}.zip")
        if tf.io.gfile.exists(archive):
            with tf.io.gfile.GFile(archive, "rb") as f, zipfile.ZipFile(f) as z:
                for name in sorted(z.namelist()):
                    if posixpath.basename(name) == "train_image_paths.csv" and not name.startswith("__MACOSX"):
                        return cls(archive, posixpath.dirname(name) + "/" if "/" in name else "")
            raise FileNotFoundError(f"{archive} holds no train_image_paths.csv: is it the MURA-v1.1 archive?")
        raise FileNotFoundError(
            f"Found neither {_FOLDER}/ (with train_image_paths.csv) nor {_FOLDER}.zip in manual_dir {manual_dir!r}. "
            "Download MURA-v1.1 from https://aimi.stanford.edu/datasets/mura-msk-xrays and put it there."
        )

    def describe(self) -> str:
        return self.path if self.member_prefix is None else f"{self.path}:{self.member_prefix}"

    def read_text(self, rel: str) -> str:
        try:
            with self.open() as reader:
                return reader.read_bytes(rel).decode("utf-8-sig")
        except (KeyError, tf.errors.NotFoundError):
            raise FileNotFoundError(f"MURA's {rel} is missing from {self.describe()}.") from None

    def open(self) -> _Reader:
        return _Reader(self)


class _Reader:
    """Reads members of a source; keeps a zip open for the life of one split's generator."""

    def __init__(self, source: MuraSource):
        self.source = source
        self._file = self._zip = None

    def __enter__(self):
        if self.source.member_prefix is not None:
            self._file = tf.io.gfile.GFile(self.source.path, "rb")
            self._zip = zipfile.ZipFile(self._file)
        return self

    def __exit__(self, *exc):
        if self._zip is not None:
            self._zip.close()
            self._file.close()

    def read_bytes(self, rel: str) -> bytes:
        if self._zip is None:
            with tf.io.gfile.GFile(posixpath.join(self.source.path, rel), "rb") as f:
                return f.read()
        return self._zip.read(self.source.member_prefix + rel)

    def read_image(self, rel: str) -> np.ndarray:
        if self._zip is None:
            return read_image(posixpath.join(self.source.path, rel))
        name = f"{self.source.path}:{self.source.member_prefix}{rel}"
        try:
            data = self._zip.read(self.source.member_prefix + rel)
        except KeyError:
            raise ImageReadError(name, "no such member in the zip") from None
        except (zipfile.BadZipFile, OSError) as error:
            raise ImageReadError(name, f"the zip member cannot be read ({error})") from None
        return decode_image(data, name)
