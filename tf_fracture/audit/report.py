"""The audit itself (`audit`) and what it returns: an `AuditReport`, rendered as text or JSON.

The report names every flagged file and, wherever it shows a label, the class's name with its
number ("Fractured (1)"), so that a reader can check that the positive class is the right one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tf_fracture.audit.duplicates import MIN_CORRELATION, DuplicateGroup, find_duplicates
from tf_fracture.audit.records import AuditRecord
from tf_fracture.data.hashing import HASH_BITS

__all__ = ["AuditReport", "ClassBalance", "PatientOverlap", "audit"]

NO_SPLIT = "(no split)"  # how a record without a split is shown in text


@dataclass(frozen=True)
class ClassBalance:
    """Label counts of one split (or of all records without a split).

    `counts` maps each label to its number of records, corrupt ones included; `fraction_positive` is
    the share of `positive_label` among labelled records (None without a positive class).
    """

    split: str | None
    total: int
    counts: dict[int, int]
    unlabelled: int = 0
    corrupt: int = 0
    positive_label: int | None = 1

    @property
    def fraction_positive(self) -> float | None:
        labelled = sum(self.counts.values())
        if not labelled or self.positive_label is None:
            return None
        return self.counts.get(self.positive_label, 0) / labelled

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "total": self.total,
            "counts": {str(label): n for label, n in sorted(self.counts.items())},
            "unlabelled": self.unlabelled,
            "corrupt": self.corrupt,
            "fraction_positive": self.fraction_positive,
        }


@dataclass(frozen=True)
class PatientOverlap:
    """A patient whose images lie in more than one split: split -> the patient's files there."""

    patient_id: str
    files: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "files": {s: list(keys) for s, keys in self.files.items()}}


@dataclass(frozen=True)
class AuditReport:
    """What `audit` found. `to_text()` for people, `to_dict()` (JSON-serialisable) for programs.

    Args:
        source: what was audited (a dataset name or a folder).
        num_records: how many records (files) were audited.
        near_threshold: the pHash Hamming distance up to which images count as near duplicates.
        class_balance: one entry per split, in the order splits first appear.
        corrupt: `(key, split, error)` of every record that could not be read.
        duplicate_groups: exact groups first, then near groups.
        patient_overlap: patients with images in more than one split.
        label_names: the name of each label index, where known.
        ignored_files: files that were not audited (not images by their extension).
        min_correlation: the thumbnail correlation that confirmed near duplicates (None: unconfirmed).
        positive_label: the label counted by the positive fraction (None: no positive class).
    """

    source: str
    num_records: int
    near_threshold: int
    class_balance: tuple[ClassBalance, ...]
    corrupt: tuple[tuple[str, str | None, str], ...]
    duplicate_groups: tuple[DuplicateGroup, ...]
    patient_overlap: tuple[PatientOverlap, ...]
    label_names: tuple[str, ...] | None = None
    ignored_files: tuple[str, ...] = ()
    min_correlation: float | None = None
    positive_label: int | None = 1

    @property
    def exact_groups(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicate_groups if g.kind == "exact")

    @property
    def near_groups(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicate_groups if g.kind == "near")

    @property
    def conflicting_groups(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicate_groups if g.labels_conflict)

    @property
    def flagged_keys(self) -> tuple[str, ...]:
        """Every file named by a finding (corrupt, duplicate, or a patient in several splits), sorted."""
        keys = {key for key, _, _ in self.corrupt}
        keys.update(k for g in self.duplicate_groups for k in g.keys)
        keys.update(k for p in self.patient_overlap for ks in p.files.values() for k in ks)
        return tuple(sorted(keys))

    @property
    def positive_class(self) -> str | None:
        """The positive class as the report shows it, e.g. `"Fractured (1)"`; None without one."""
        return None if self.positive_label is None else self.label_name(self.positive_label)

    def label_name(self, label: int | None) -> str:
        """A label as the report shows it: `"Fractured (1)"` where the name is known, else `"1"`."""
        if label is None:
            return "unlabelled"
        if self.label_names is not None and 0 <= label < len(self.label_names):
            return f"{self.label_names[label]} ({label})"
        return str(label)

    def summary(self) -> dict[str, int]:
        exact, near = self.exact_groups, self.near_groups
        return {
            "records": self.num_records,
            "corrupt_files": len(self.corrupt),
            "exact_duplicate_groups": len(exact),
            "exact_duplicate_groups_across_splits": sum(g.spans_splits for g in exact),
            "exact_duplicate_files": sum(len(g.keys) for g in exact),
            "near_duplicate_groups": len(near),
            "near_duplicate_groups_across_splits": sum(g.spans_splits for g in near),
            "near_duplicate_files": sum(len(g.keys) for g in near),
            "label_conflict_groups": len(self.conflicting_groups),
            "patients_in_several_splits": len(self.patient_overlap),
            "flagged_files": len(self.flagged_keys),
            "ignored_files": len(self.ignored_files),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "near_threshold": self.near_threshold,
            "min_correlation": self.min_correlation,
            "label_names": list(self.label_names) if self.label_names is not None else None,
            "positive_label": self.positive_label,
            "positive_class": (
                self.label_names[self.positive_label]
                if self.positive_label is not None and self.label_names is not None
                else None
            ),
            "summary": self.summary(),
            "class_balance": [b.to_dict() for b in self.class_balance],
            "corrupt_files": [{"key": k, "split": s, "error": e} for k, s, e in self.corrupt],
            "duplicates": {
                "exact": [g.to_dict() for g in self.exact_groups],
                "near": [g.to_dict() for g in self.near_groups],
            },
            "label_conflicts": [g.to_dict() for g in self.conflicting_groups],
            "patient_overlap": [p.to_dict() for p in self.patient_overlap],
            "flagged_files": list(self.flagged_keys),
            "ignored_files": list(self.ignored_files),
        }

    def to_text(self) -> str:
        s = self.summary()
        lines = [
            f"Data audit of {self.source}: {self.num_records} files, near duplicates up to "
            f"{self.near_threshold} of {HASH_BITS} pHash bits apart"
            + (f", confirmed by thumbnail correlation >= {self.min_correlation}" if self.min_correlation else ""),
            "",
            "Summary",
            f"  corrupt files                       {s['corrupt_files']}",
            f"  exact duplicate groups              {s['exact_duplicate_groups']} "
            f"({s['exact_duplicate_files']} files, {s['exact_duplicate_groups_across_splits']} groups across splits)",
            f"  near duplicate groups               {s['near_duplicate_groups']} "
            f"({s['near_duplicate_files']} files, {s['near_duplicate_groups_across_splits']} groups across splits)",
            f"  duplicate groups with label clashes {s['label_conflict_groups']}",
            f"  patients in several splits          {s['patients_in_several_splits']}",
            f"  flagged files                       {s['flagged_files']}",
        ]
        if self.ignored_files:
            lines.append(f"  ignored (not image) files           {s['ignored_files']}")
        lines += ["", *self._balance_lines()]
        if self.corrupt:
            lines += ["", f"Corrupt files ({len(self.corrupt)})"]
            lines += [f"  {_split_name(split):<12} {key}: {error}" for key, split, error in self.corrupt]
        numbers = {id(g): i for i, g in enumerate(self.duplicate_groups, 1)}
        for kind, groups in (("Exact", self.exact_groups), ("Near", self.near_groups)):
            if groups:
                lines += ["", f"{kind} duplicates ({len(groups)} groups)"]
                for g in groups:
                    lines += self._group_lines(numbers[id(g)], g)
        if self.conflicting_groups:
            lines += ["", f"Duplicate groups with label clashes ({len(self.conflicting_groups)})"]
            lines += [
                f"  #{numbers[id(g)]} ({g.kind}): "
                + ", ".join(f"{k} [{self.label_name(lab)}]" for k, lab in zip(g.keys, g.labels, strict=True))
                for g in self.conflicting_groups
            ]
        if self.patient_overlap:
            lines += ["", f"Patients in several splits ({len(self.patient_overlap)})"]
            for p in self.patient_overlap:
                lines.append(f"  patient {p.patient_id}")
                lines += [f"    {split:<12} {', '.join(keys)}" for split, keys in p.files.items()]
        if self.ignored_files:
            lines += ["", f"Ignored files, not images by their extension ({len(self.ignored_files)})"]
            lines += [f"  {key}" for key in self.ignored_files]
        return "\n".join(lines) + "\n"

    def _balance_lines(self) -> list[str]:
        labels = sorted({label for b in self.class_balance for label in b.counts})
        names = [self.label_name(label) for label in labels]
        widths = [max(len(n), 6) for n in names]
        header = "  split        total  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
        header += "  unlabelled  corrupt  positive fraction"
        lines = ["Class balance (counts include corrupt files)"]
        if labels:
            if self.positive_label is None:
                positive = "none (no positive fraction)"
            elif self.label_names is None:
                positive = f"label {self.positive_label}"
            else:
                positive = self.positive_class
            lines.append(f"  positive class: {positive}")
        lines.append(header)
        for b in self.class_balance:
            counts = "  ".join(f"{b.counts.get(label, 0):>{w}}" for label, w in zip(labels, widths, strict=True))
            fraction = "-" if b.fraction_positive is None else f"{b.fraction_positive:.3f}"
            split = _split_name(b.split)
            lines.append(f"  {split:<12} {b.total:>5}  {counts}  {b.unlabelled:>10}  {b.corrupt:>7}  {fraction:>17}")
        return lines

    def _group_lines(self, number: int, group: DuplicateGroup) -> list[str]:
        flags = [f"max distance {group.max_distance}"] if group.kind == "near" else []
        flags += ["ACROSS SPLITS"] * group.spans_splits + ["LABEL CLASH"] * group.labels_conflict
        lines = [f"  #{number} {len(group.keys)} files" + (f" ({', '.join(flags)})" if flags else "")]
        shown = [*group.labels, *range(len(self.label_names or ()))]  # one width for every group
        width = max(16, *(len(self.label_name(label)) + 1 for label in shown))
        for key, label, split, patient in zip(group.keys, group.labels, group.splits, group.patients, strict=True):
            who = f"  patient {patient}" if patient is not None else ""
            lines.append(f"     {_split_name(split):<12} {self.label_name(label):<{width}} {key}{who}")
        return lines


def _is_label_index(label, label_names: Sequence[str] | None) -> bool:
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        return False
    return label_names is None or label < len(label_names)


def _split_name(split: str | None) -> str:
    return NO_SPLIT if split is None else split


def audit(
    records: Iterable[AuditRecord],
    near_threshold: int = 4,
    *,
    min_correlation: float | None = MIN_CORRELATION,
    source: str = "records",
    label_names: Sequence[str] | None = None,
    positive_label: int | None = 1,
    ignored_files: Sequence[str] = (),
) -> AuditReport:
    """Audits a dataset: class balance, corrupt files, duplicates, label clashes, patient overlap.

    Args:
        records: one `AuditRecord` per file, across all splits.
        near_threshold: the largest pHash Hamming distance that counts as a near duplicate.
        min_correlation: thumbnail correlation that confirms a pHash candidate (see `find_duplicates`).
        source: what is audited, for the report's title.
        label_names: the name of each label index, for the report.
        positive_label: the label whose share is the positive fraction; None when no class is
            the positive one (see `tf_fracture.audit.labels.positive_index`).
        ignored_files: files left out of the audit, listed in the report.

    Returns:
        An `AuditReport`; `to_text()` and `to_dict()` name every flagged file.

    Raises:
        ValueError: `positive_label` is not a label index of `label_names`.

    Example:
        >>> report = audit(records, near_threshold=4, source="fracatlas", label_names=["normal", "fractured"])
        >>> print(report.to_text())
    """
    if positive_label is not None and not _is_label_index(positive_label, label_names):
        of_names = f" of {list(label_names)}" if label_names is not None else ""
        raise ValueError(
            f"Expected `positive_label` to be None or a label index{of_names}, "
            f"but got positive_label={positive_label!r}."
        )
    records = list(records)
    splits = list(dict.fromkeys(r.split for r in records))
    balance = []
    for split in splits:
        members = [r for r in records if r.split == split]
        balance.append(
            ClassBalance(
                split=split,
                total=len(members),
                counts=dict(sorted(Counter(r.label for r in members if r.label is not None).items())),
                unlabelled=sum(r.label is None for r in members),
                corrupt=sum(r.error is not None for r in members),
                positive_label=positive_label,
            )
        )
    corrupt = tuple(sorted((r.key, r.split, r.error) for r in records if r.error is not None))

    patients: dict[str, dict[str, list[str]]] = {}
    for r in records:
        if r.patient_id is not None and r.split is not None:
            patients.setdefault(r.patient_id, {}).setdefault(r.split, []).append(r.key)
    overlap = tuple(
        PatientOverlap(pid, {s: tuple(sorted(keys)) for s, keys in by_split.items()})
        for pid, by_split in sorted(patients.items())
        if len(by_split) > 1
    )
    return AuditReport(
        source=source,
        num_records=len(records),
        near_threshold=int(near_threshold),
        class_balance=tuple(balance),
        corrupt=corrupt,
        duplicate_groups=tuple(find_duplicates(records, near_threshold, min_correlation)),
        patient_overlap=overlap,
        label_names=tuple(label_names) if label_names is not None else None,
        ignored_files=tuple(ignored_files),
        min_correlation=None if min_correlation is None else float(min_correlation),
        positive_label=positive_label,
    )
