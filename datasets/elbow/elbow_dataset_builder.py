"""A hospital's elbow radiographs (AP or lateral), labelled from their file names.

Manual download: `manual_dir` holds the images (PNG, JPEG or DICOM, in any sub-folders) and
optionally `manifest.csv` and `label_rules.json`. Classes: *injury* (untreated fracture and/or
dislocation) and *normal* (everything else, treated and healed injuries included), read from the
file names by `label_rules.py` (negation, uncertainty, treatment before/after; vocabulary changed
by `label_rules.json` or `ElbowConfig.label_rules`). A manifest row (`path,label[,patient_id][,view]`)
overrides what the file name says. Names the rules cannot label (no rule, uncertain, contradictory),
manifest rows without a file and unreadable images are left out, logged and listed in
`builder.info.metadata`.

The split is deterministic 80/10/10 (`train`/`validation`/`test`), grouped by patient where a
patient id is known and stratified by class and view.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import posixpath
import re

import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tf_fracture.data.builders import radiograph_info
from tf_fracture.data.io import list_skipped, read_each, read_image
from tf_fracture.data.splits import grouped_stratified_split
from tf_fracture_datasets.elbow.labels import (
    CLASS_NAMES,
    DEFAULT_LABEL_RULES,
    DEFAULT_PATIENT_ID_PATTERN,
    VIEW_NAMES,
    LabelRules,
    explain_label,
    label_from_filename,
    parse_label,
    parse_view,
    patient_id_from_filename,
    view_from_filename,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
_SPLITS = ("train", "validation", "test")

log = logging.getLogger(__name__)

__all__ = ["Builder", "ElbowConfig", "ElbowItem", "label_from_filename", "scan_manual_dir"]


@dataclasses.dataclass
class ElbowConfig(tfds.core.BuilderConfig):
    """How file names become labels, and how the set is split.

    Args:
        label_rules: the file-name rules (see `label_rules.DEFAULT_LABEL_RULES`).
        rules_file: name of the optional JSON rule file in `manual_dir` that changes `label_rules`
            (see the README); a bad file stops the build with the file and the problem named.
        patient_id_pattern: regular expression whose first group is the patient id, searched in
            the file name.
        train, validation, test: split fractions, summing to 1.
        seed: seed of the split.
        manifest: name of the optional manifest in `manual_dir`.
    """

    label_rules: LabelRules = DEFAULT_LABEL_RULES
    patient_id_pattern: str = DEFAULT_PATIENT_ID_PATTERN
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0
    manifest: str = "manifest.csv"
    rules_file: str = "label_rules.json"

    def __post_init__(self):
        if not isinstance(self.label_rules, LabelRules):
            raise ValueError(
                f"Expected `label_rules` to be a label_rules.LabelRules (e.g. LabelRules.from_file(path)), "
                f"but got {type(self.label_rules).__name__}."
            )
        try:
            groups = re.compile(self.patient_id_pattern).groups
        except re.error as error:
            raise ValueError(
                f"`patient_id_pattern={self.patient_id_pattern!r}` is not a valid regex: {error}."
            ) from None
        if groups < 1:
            raise ValueError(f"`patient_id_pattern={self.patient_id_pattern!r}` needs a group that captures the id.")
        total = self.train + self.validation + self.test
        if min(self.train, self.validation, self.test) < 0 or abs(total - 1) > 1e-6:
            raise ValueError(
                f"Expected split fractions >= 0 summing to 1, but got train={self.train}, "
                f"validation={self.validation}, test={self.test} (sum {total:.6g})."
            )


@dataclasses.dataclass(frozen=True)
class ElbowItem:
    """One labelled image: `key` is its path relative to `manual_dir`."""

    key: str
    label: int
    view: str
    patient_id: str | None
    source: str  # "filename" or "manifest"


@dataclasses.dataclass
class ElbowScan:
    items: list[ElbowItem]
    unmatched: dict[str, str]  # images the name rules cannot label and no manifest row labels: path -> reason
    missing: dict[str, str]  # manifest rows without an image: path -> reason
    rules: LabelRules  # the rules used: config.label_rules, changed by manual_dir's rule file
    rules_file: str  # that rule file's path, "" when there is none


class Builder(tfds.core.GeneratorBasedBuilder):
    """Elbow radiographs, normal vs injury, split 80/10/10 by patient."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ElbowConfig(name="default", description="Default keyword table; 80/10/10 split grouped by patient.")
    ]
    # TFDS finds this file, README.md and CITATIONS.bib through importlib.resources, which fails on
    # the namespace package `tf_fracture_datasets` of an editable install: give the paths directly.
    code_path = epath.Path(__file__)
    pkg_dir_path = code_path.parent
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put the hospital's elbow radiographs (PNG, JPEG or DICOM; sub-folders allowed) in `manual_dir`.
    File names say the finding, e.g. `P0012_AP_supracondylar_fracture.png`, `P7_contusion.png`,
    `P3_fracture_cast.png`, `normal_12.png`. Optionally add `manifest.csv` with the columns
    `path,label[,patient_id][,view]` (path relative to manual_dir; label normal/injury) to label
    or correct files whose names do not say it, and `label_rules.json` to add your own words to the
    file-name rules (see the dataset's README).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return radiograph_info(self, CLASS_NAMES, {"view": tfds.features.ClassLabel(names=list(VIEW_NAMES))})

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        root = str(dl_manager.manual_dir)
        scan = scan_manual_dir(root, config)
        list_skipped(
            "Elbow",
            f"file(s) match no labelling rule, or are uncertain or contradictory, and are left out (label them in "
            f"{config.manifest} or change the rules in {config.rules_file})",
            scan.unmatched,
        )
        list_skipped("Elbow", "file(s) listed in the manifest are missing", scan.missing)
        anonymous = sum(1 for item in scan.items if item.patient_id is None)
        if anonymous:
            log.warning(
                "Elbow: %d image(s) have no patient id and are split one by one; give their patient ids in "
                "manifest.csv to keep each patient in one split.",
                anonymous,
            )
        self.info.metadata.update(
            {
                "unmatched": scan.unmatched,
                "missing": scan.missing,
                "unreadable": {},
                "label_rules_file": scan.rules_file,
                "label_rules": scan.rules.to_dict(),
            }
        )

        items = scan.items
        split_of = grouped_stratified_split(
            [item.key for item in items],
            [f"{item.label}:{item.view}" for item in items],
            [item.patient_id for item in items],
            {"train": config.train, "validation": config.validation, "test": config.test},
            seed=config.seed,
        )
        by_split = {split: [item for item in items if split_of[item.key] == split] for split in _SPLITS}
        empty = [split for split, members in by_split.items() if not members and getattr(config, split) > 0]
        if empty:
            raise ValueError(
                f"The {', '.join(empty)} split(s) would be empty: {len(items)} labelled image(s) are too few for "
                f"train/validation/test = {config.train}/{config.validation}/{config.test}."
            )
        return {split: self._generate_examples(root, members) for split, members in by_split.items()}

    def _generate_examples(self, root: str, items: list[ElbowItem]):
        unreadable: dict[str, str] = {}

        def read(item: ElbowItem):
            return read_image(posixpath.join(root, item.key))

        for item, image in read_each(items, read, unreadable, key=lambda item: item.key):
            yield (
                item.key,
                {
                    "image": image[:, :, None],
                    "label": item.label,
                    "view": item.view,
                    "patient_id": item.patient_id or "",
                    "filename": item.key,
                },
            )
        list_skipped("Elbow", "file(s) are unreadable and were skipped", unreadable)
        self.info.metadata["unreadable"].update(unreadable)


def scan_manual_dir(root: str, config: ElbowConfig) -> ElbowScan:
    """Lists the images under `root` and labels each from the manifest or its file name.

    The builder's split starts from this list; call it to check a folder and a table before a build.
    """
    files = _list_images(root)
    manifest = _read_manifest(posixpath.join(root, config.manifest))
    rules, rules_file = _read_rules(posixpath.join(root, config.rules_file), config.label_rules)
    missing = {path: "no such PNG, JPEG or DICOM file under manual_dir" for path in sorted(set(manifest) - set(files))}
    items, unmatched = [], {}
    for key in files:
        row = manifest.get(key, {})
        label = row.get("label")
        if label is None:
            decision = explain_label(key, rules)
            label = decision.label
        if label is None:
            unmatched[key] = decision.reason
            continue
        patient_id = row.get("patient_id") or patient_id_from_filename(key, config.patient_id_pattern)
        items.append(
            ElbowItem(
                key=key,
                label=label,
                view=row.get("view") or view_from_filename(key),
                patient_id=patient_id,
                source="manifest" if row.get("label") is not None else "filename",
            )
        )
    return ElbowScan(items=items, unmatched=unmatched, missing=missing, rules=rules, rules_file=rules_file)


def _list_images(root: str) -> list[str]:
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"manual_dir {root!r} does not exist. Put the elbow radiographs there.")
    root = root.rstrip("/")
    keys = []
    for folder, _, names in tf.io.gfile.walk(root):
        rel_folder = str(folder)[len(root) :].strip("/")
        if any(part.startswith(".") or part == "__MACOSX" for part in rel_folder.split("/")):
            continue  # hidden folders and macOS archive debris
        for name in names:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            keys.append(f"{rel_folder}/{name}" if rel_folder else name)
    if not keys:
        raise FileNotFoundError(f"No {'/'.join(IMAGE_SUFFIXES)} images under manual_dir {root!r}.")
    return sorted(keys)


def _read_rules(path: str, base: LabelRules) -> tuple[LabelRules, str]:
    """`base` changed by the JSON rule file at `path` (read through gfile), if there is one."""
    if not tf.io.gfile.exists(path):
        return base, ""
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read().decode("utf-8-sig")
    rules = LabelRules.from_json(text, base=base, source=path)
    log.info("Elbow: label rules changed by %s.", path)
    return rules, path


def _read_manifest(path: str) -> dict[str, dict]:
    """`{relative path: {"label": int | None, "patient_id": str | None, "view": str | None}}`."""
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path, "rb") as f:
        reader = csv.DictReader(io.StringIO(f.read().decode("utf-8-sig")))
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise ValueError(f"{path} needs a header with the columns path,label[,patient_id][,view]; got {columns}.")
        rows, errors = {}, []
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            key = posixpath.normpath(row["path"].replace("\\", "/")).lstrip("/")
            try:
                entry = {
                    "label": parse_label(row["label"]),
                    "patient_id": row.get("patient_id") or None,
                    "view": parse_view(row.get("view", "")),
                }
            except ValueError as error:
                errors.append(f"line {line} ({row['path']}): {error}")
                continue
            if key in rows:
                errors.append(f"line {line}: {row['path']} is listed twice")
            rows[key] = entry
    if errors:
        raise ValueError(f"{path} has {len(errors)} bad row(s):\n  " + "\n  ".join(errors))
    return rows
