"""Counterfactual pairs on synthetic_xray: the same scene with and without its fracture.

`tf_fracture.data.synthetic.generate_radiograph` draws the scene, the fracture and the noise from
independent random streams, so ``fracture=True`` and ``fracture=False`` render one radiograph that
differs only near the fractured bone. A model that scores the fractured copy higher in (nearly)
every pair responds to the fracture itself; one that ranks the pairs at chance (0.5) scores
something else, however good its AUROC (on synthetic_xray nothing else carries the label by
construction, so this is the control the other datasets cannot have).

The pairs are the scored split's own scenes: each image's index is read back from its patient id
(``synthetic-s<seed>-p<index>``, `tf_fracture.data.synthetic.patient_id_for_index`), rendered at the
builder's image size and seed in both versions, then preprocessed with the model's preprocessing,
as the dataset's images are (the builder stores them losslessly as PNG). At most ``max_pairs``
(300 by default) pairs, the split's first.

Statistics (`tf_fracture.metrics.paired_change` of ``fractured - clean``): the share of pairs whose
fractured copy scores higher (ties count half) and the mean logit and probability differences, each
with a bootstrap interval over pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.synthetic import generate_radiograph, patient_id_for_index
from tf_fracture.metrics._checks import to_jsonable

MAX_PAIRS = 300
_PATIENT = re.compile(r"p(\d+)$")


def split_indices(patient_ids: Sequence[str], seed: int) -> list[int] | str:
    """The synthetic_xray index of each image of a split, from its patient id, or why they cannot be read.

    Example:
        >>> split_indices(["synthetic-s0-p200000003"], seed=0)
        [200000003]
    """
    indices = []
    for patient in patient_ids:
        patient = patient.decode() if isinstance(patient, bytes) else str(patient)
        match = _PATIENT.search(patient)
        index = int(match.group(1)) if match else None
        if index is None or patient_id_for_index(index, seed) != patient:
            return (
                f"patient id {patient!r} does not name a synthetic_xray scene of seed {seed} "
                f"(expected the form {patient_id_for_index(0, seed)!r} with the scene's index)"
            )
        indices.append(index)
    return indices


def pair_inputs(
    index: int,
    *,
    image_size: int,
    seed: int,
    config: PreprocessConfig,
    render: Callable[..., Any] = generate_radiograph,
) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, fractured)`` model inputs of one scene, ``(S, S)`` float32: rendered, then preprocessed."""
    clean = render(index, size=image_size, seed=seed, fracture=False).image
    fractured = render(index, size=image_size, seed=seed, fracture=True).image
    return preprocess(clean, config).astype(np.float32), preprocess(fractured, config).astype(np.float32)


@dataclass(frozen=True)
class CounterfactualTest:
    """The paired scores of the scenes with and without their fracture.

    Attributes:
        n_pairs: scenes scored in both versions.
        logit, probability: `PairedChange` of ``fractured - clean``; ``share_higher`` is the share of
            pairs whose fractured copy scores higher (ties half).
        image_size, seed: how the scenes were rendered (the builder config's).
        indices: the scenes' indices, in the split's order, for reproducing them.
    """

    n_pairs: int
    logit: metrics.PairedChange
    probability: metrics.PairedChange
    image_size: int
    seed: int
    indices: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "skipped": None,
                "n_pairs": self.n_pairs,
                "share_fractured_higher": self.logit.share_higher,
                "logit": self.logit,
                "probability": self.probability,
                "rendering": {"image_size": self.image_size, "seed": self.seed, "indices": list(self.indices)},
                "definition": (
                    "per scene of the scored split: generate_radiograph(index, fracture=True) and "
                    "(fracture=False), preprocessed like the model's data; share_fractured_higher = share of "
                    "pairs whose fractured copy has the higher score (ties half); changes are fractured - clean"
                ),
            }
        )


def counterfactual_test(
    logits_of: Callable[[np.ndarray], np.ndarray],
    indices: Sequence[int],
    *,
    image_size: int,
    seed: int,
    config: PreprocessConfig,
    batch_size: int = 32,
    n_resamples: int = 2000,
    bootstrap_seed: int = 0,
    render: Callable[..., Any] = generate_radiograph,
) -> CounterfactualTest:
    """Renders each scene in both versions, scores them and compares the pairs.

    Args:
        logits_of: model inputs ``(B, S, S)`` float32 -> logits ``(B,)`` (the model's forward pass).
        indices: the scenes (e.g. `split_indices` of the scored split, at most `MAX_PAIRS`).
        image_size, seed: the builder config's rendering size and seed.
        config: the model's preprocessing.
        batch_size: pairs per forward pass (two images each).
        n_resamples, bootstrap_seed: the bootstrap of the intervals.
        render: the renderer (`generate_radiograph`; tests give a fake one).
    """
    if not len(indices):
        raise ValueError("The counterfactual test needs at least one scene index.")
    clean, fractured = [], []
    for start in range(0, len(indices), batch_size):
        pairs = [
            pair_inputs(i, image_size=image_size, seed=seed, config=config, render=render)
            for i in indices[start : start + batch_size]
        ]
        logits = np.asarray(logits_of(np.stack([p for pair in pairs for p in pair])), np.float64).reshape(-1)
        clean.append(logits[0::2])
        fractured.append(logits[1::2])
    clean, fractured = np.concatenate(clean), np.concatenate(fractured)
    options = {"n_resamples": n_resamples, "seed": bootstrap_seed}
    return CounterfactualTest(
        n_pairs=int(clean.size),
        logit=metrics.paired_change(clean, fractured, **options),
        probability=metrics.paired_change(_sigmoid(clean), _sigmoid(fractured), **options),
        image_size=int(image_size),
        seed=int(seed),
        indices=tuple(int(i) for i in indices),
    )


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -logits))
