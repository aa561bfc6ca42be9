"""Writes the tiny fake MURA v1.1 tree in dummy_data/ used by the builder's test.

    .venv/bin/python datasets/mura/dummy_data_generation.py

Two body parts (XR_ELBOW, XR_WRIST), both labels, 13 train and 4 valid patients; patient00001 has
studies of both body parts, patient00003 two elbow studies. Planted problems:
- XR_WRIST/patient00006/study1_positive/image1.png is truncated (unreadable: skipped and listed);
- XR_WRIST/patient00009/study1_negative/ is labelled 1 in train_labeled_studies.csv (the CSV wins,
  the disagreement is reported);
- XR_WRIST/patient00013/study1_negative/ has no row in train_labeled_studies.csv (skipped, reported).
XR_ELBOW/patient00011/study1_negative/image1.png is an RGB PNG (reduced to grey).
"""

import os
import shutil

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "dummy_data", "MURA-v1.1")

# (split, body part, patient, study, folder label, images)
STUDIES = [
    ("train", "XR_ELBOW", 1, 1, "positive", 2),
    ("train", "XR_ELBOW", 2, 1, "negative", 1),
    ("train", "XR_ELBOW", 3, 1, "positive", 1),
    ("train", "XR_ELBOW", 3, 2, "negative", 1),
    ("train", "XR_WRIST", 1, 1, "negative", 1),
    ("train", "XR_WRIST", 4, 1, "negative", 3),
    ("train", "XR_WRIST", 5, 1, "positive", 1),
    ("train", "XR_WRIST", 6, 1, "positive", 1),
    ("train", "XR_ELBOW", 7, 1, "negative", 1),
    ("train", "XR_ELBOW", 8, 1, "positive", 2),
    ("train", "XR_WRIST", 9, 1, "negative", 1),
    ("train", "XR_WRIST", 10, 1, "positive", 1),
    ("train", "XR_ELBOW", 11, 1, "negative", 1),
    ("train", "XR_ELBOW", 12, 1, "negative", 2),
    ("train", "XR_WRIST", 13, 1, "negative", 1),
    ("valid", "XR_ELBOW", 11185, 1, "positive", 1),
    ("valid", "XR_ELBOW", 11186, 1, "negative", 2),
    ("valid", "XR_WRIST", 11187, 1, "positive", 1),
    ("valid", "XR_WRIST", 11188, 1, "negative", 1),
]
CORRUPT = "train/XR_WRIST/patient00006/study1_positive/image1.png"
RGB = "train/XR_ELBOW/patient00011/study1_negative/image1.png"
RELABELLED = {"train/XR_WRIST/patient00009/study1_negative/": 1}
UNLABELLED = {"train/XR_WRIST/patient00013/study1_negative/"}


def image(index):
    rng = np.random.default_rng(index)
    height, width = rng.integers(16, 33, 2)
    small = rng.integers(0, 256, (4, 4)).astype(np.uint8)
    return cv2.resize(small, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    image_rows = {"train": [], "valid": []}
    study_rows = {"train": [], "valid": []}
    index = 0
    for split, body_part, patient, study, label, count in STUDIES:
        study_dir = f"{split}/{body_part}/patient{patient:05d}/study{study}_{label}/"
        os.makedirs(os.path.join(ROOT, study_dir))
        for n in range(1, count + 1):
            rel = f"{study_dir}image{n}.png"
            pixels = image(index)
            index += 1
            if rel == RGB:
                pixels = np.stack([pixels, pixels // 2, 255 - pixels], axis=-1)
            ok, data = cv2.imencode(".png", pixels)
            assert ok
            data = data.tobytes()
            if rel == CORRUPT:
                data = data[:40]
            with open(os.path.join(ROOT, rel), "wb") as f:
                f.write(data)
            image_rows[split].append(f"MURA-v1.1/{rel}")
        if study_dir not in UNLABELLED:
            value = RELABELLED.get(study_dir, int(label == "positive"))
            study_rows[split].append(f"MURA-v1.1/{study_dir},{value}")
    for split in ("train", "valid"):
        with open(os.path.join(ROOT, f"{split}_image_paths.csv"), "w") as f:
            f.write("".join(row + "\n" for row in image_rows[split]))
        with open(os.path.join(ROOT, f"{split}_labeled_studies.csv"), "w") as f:
            f.write("".join(row + "\n" for row in study_rows[split]))


if __name__ == "__main__":
    main()
