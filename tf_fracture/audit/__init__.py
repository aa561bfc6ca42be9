"""Data audit: class balance, corrupt files, exact and near duplicates, label conflicts, patient leaks.

A test score means little when the same radiograph (or a resized copy of it) sits in both the
training and the test split, when one image carries two labels, or when a patient's images are on
both sides of the split. The audit finds these, names every flagged file, and reports; it never
changes the data.

One module per job, and imports point one way (records <- duplicates <- report; sources reads
records; only the command line knows the dataset registry):

- `records`: `AuditRecord`, one image as the audit sees it, and the fingerprints of its pixels.
- `duplicates`: `find_duplicates`, the exact and near duplicate search. Dataset builders use it
  (with `records`) to exclude what must not be trusted before they split; neither imports
  TensorFlow, TFDS or the dataset registry.
- `labels`: which class is the positive one, named by the user or recognised by its name.
- `report`: `audit`, and the `AuditReport` it returns, as text or JSON.
- `sources`: records from a folder of images or from a prepared TFDS dataset.
- `__main__`: the command line (exit code 0 whatever the audit finds, 2 for bad arguments)::

    # a TFDS dataset registered by tf-fracture, every split
    tf-fracture audit fracatlas --data-dir ~/tensorflow_datasets --json audit.json
    # a folder of images, the label of each being its parent folder's name
    tf-fracture audit --folder FracAtlas/images --labels-from-parent --json audit.json

Example:
    >>> records = [AuditRecord("a.png", 0, "train", image=image), AuditRecord("b.png", 1, "test", image=image)]
    >>> report = audit(records, label_names=["normal", "fractured"])
    >>> print(report.to_text())
"""

from tf_fracture.audit.duplicates import DuplicateGroup, find_duplicates
from tf_fracture.audit.records import AuditRecord
from tf_fracture.audit.report import AuditReport, ClassBalance, PatientOverlap, audit
from tf_fracture.audit.sources import AuditSource, records_from_folder, records_from_tfds

__all__ = [
    "AuditRecord",
    "AuditReport",
    "AuditSource",
    "ClassBalance",
    "DuplicateGroup",
    "PatientOverlap",
    "audit",
    "find_duplicates",
    "records_from_folder",
    "records_from_tfds",
]
