"""Stratified (and optionally grouped) bootstrap resamples as per-score-level counts. NumPy only.

A resample is summarised by how many positives and negatives it holds at each distinct score
(``ScoreLevels``): that is all any metric in ``binary`` needs, and it lets thousands of resamples be
drawn and scored as one array operation.

- Without groups, positives and negatives are resampled separately (stratified by class), so every
  resample keeps the data's class counts and has both classes.
- With groups (studies, patients), whole groups are drawn with replacement, stratified by the group's
  composition (only negatives / only positives / both), so every resample again has both classes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tf_fracture.metrics.binary import ScoreLevels

# Largest number of drawn indices held at once: bounds memory (about 32 MB) whatever the data size.
_CHUNK_ELEMENTS = 4_000_000


def _counts_per_level(levels_of_draws: np.ndarray, n_levels: int) -> np.ndarray:
    rows = levels_of_draws.shape[0]
    flat = levels_of_draws + (np.arange(rows) * n_levels)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n_levels).reshape(rows, n_levels).astype(np.float64)


def resampled_level_counts(
    levels: ScoreLevels,
    labels: np.ndarray,
    n_resamples: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields chunks ``(positives, negatives)`` of shape (rows, n_levels), ``n_resamples`` rows in all."""
    n_levels = levels.values.size
    if groups is None:
        pos_levels = levels.level_of_item[labels == 1]
        neg_levels = levels.level_of_item[labels == 0]
        chunk = max(1, _CHUNK_ELEMENTS // max(labels.size, n_levels))
        for start in range(0, n_resamples, chunk):
            rows = min(chunk, n_resamples - start)
            pos = _counts_per_level(pos_levels[rng.integers(0, pos_levels.size, (rows, pos_levels.size))], n_levels)
            neg = _counts_per_level(neg_levels[rng.integers(0, neg_levels.size, (rows, neg_levels.size))], n_levels)
            yield pos, neg
        return

    _, group_of_item = np.unique(groups, return_inverse=True)
    group_of_item = group_of_item.reshape(-1)
    n_groups = int(group_of_item.max()) + 1
    size = np.bincount(group_of_item, minlength=n_groups)
    n_pos = np.bincount(group_of_item, weights=labels, minlength=n_groups)
    # Positives first, as the ungrouped draw: one item per group reproduces the ungrouped resamples.
    strata = [np.flatnonzero(n_pos == size), np.flatnonzero(n_pos == 0), np.flatnonzero((n_pos > 0) & (n_pos < size))]
    strata = [s for s in strata if s.size]
    # Items sorted by level, so that summing a resample's item weights per level is one reduceat.
    order = np.argsort(levels.level_of_item, kind="stable")
    starts = np.flatnonzero(np.diff(levels.level_of_item[order], prepend=-1))
    y_sorted = labels[order].astype(np.float64)
    group_sorted = group_of_item[order]
    chunk = max(1, _CHUNK_ELEMENTS // max(labels.size, n_levels, n_groups))
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        draws = np.concatenate([s[rng.integers(0, s.size, (rows, s.size))] for s in strata], axis=1)
        multiplicity = _counts_per_level(draws, n_groups)  # (rows, n_groups): times each group was drawn
        weights = multiplicity[:, group_sorted]
        pos = np.add.reduceat(weights * y_sorted, starts, axis=1)
        neg = np.add.reduceat(weights * (1.0 - y_sorted), starts, axis=1)
        yield pos, neg


def resampled_item_weights(
    size: int,
    n_resamples: int,
    rng: np.random.Generator,
    *,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Yields chunks ``(rows, size)``: how many times each item is drawn, ``n_resamples`` rows in all.

    The same resamples serve several score vectors of the same items (a paired bootstrap): any
    statistic of a resample is the weighted statistic with these multiplicities.

    - ``labels`` given: stratified by class as `resampled_level_counts` (every resample keeps the
      class counts); with ``groups`` too, whole groups stratified by their composition.
    - ``labels`` None: items (or whole ``groups``) drawn with replacement, unstratified.
    """
    if groups is None:
        unit_of_item, n_units = np.arange(size), size
    else:
        _, unit_of_item = np.unique(groups, return_inverse=True)
        unit_of_item = unit_of_item.reshape(-1)
        n_units = int(unit_of_item.max()) + 1
    if labels is None:
        strata = [np.arange(n_units)]
    else:
        unit_size = np.bincount(unit_of_item, minlength=n_units)
        n_pos = np.bincount(unit_of_item, weights=labels, minlength=n_units)
        strata = [np.flatnonzero(n_pos == unit_size), np.flatnonzero(n_pos == 0)]
        strata.append(np.flatnonzero((n_pos > 0) & (n_pos < unit_size)))
    strata = [s for s in strata if s.size]
    chunk = max(1, _CHUNK_ELEMENTS // max(size, n_units))
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        draws = np.concatenate([s[rng.integers(0, s.size, (rows, s.size))] for s in strata], axis=1)
        yield _counts_per_level(draws, n_units)[:, unit_of_item]
