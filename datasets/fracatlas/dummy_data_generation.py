"""Writes the tiny fake FracAtlas tree in dummy_data/ used by the builder's test.

    .venv/bin/python datasets/fracatlas/dummy_data_generation.py

Planted problems (each must be excluded by the builder):
- IMG0000044.jpg (Fractured) has the same pixels as IMG0000001.jpg (Non_fractured): conflicting labels;
- IMG0000003.jpg is an exact copy of IMG0000002.jpg (same label): the copy is dropped;
- IMG0000004.jpg is truncated (unreadable);
- IMG0000050.jpg is in Fractured/ but dataset.csv says fractured=0;
- dataset.csv has a row (IMG0000099.jpg) without a file.
IMG0000007.jpg is a near duplicate (re-encoded) of IMG0000006.jpg: kept, in the same split.
"""

import csv
import os
import shutil

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data", "FracAtlas")
FRACTURED = [19, 25, 31, 33, 37, 44, 50]
NON_FRACTURED = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def name(i):
    return f"IMG{i:07d}.jpg"


def image(i):
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    return cv2.resize(small, (48, 40), interpolation=cv2.INTER_CUBIC)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    for folder in ("images/Fractured", "images/Non_fractured", "Annotations/YOLO"):
        os.makedirs(os.path.join(ROOT, folder))
    for i in FRACTURED + NON_FRACTURED:
        folder = "Fractured" if i in FRACTURED else "Non_fractured"
        cv2.imwrite(os.path.join(ROOT, "images", folder, name(i)), image(i), [cv2.IMWRITE_JPEG_QUALITY, 95])
    nf, fr = os.path.join(ROOT, "images", "Non_fractured"), os.path.join(ROOT, "images", "Fractured")
    shutil.copy(os.path.join(nf, name(1)), os.path.join(fr, name(44)))
    shutil.copy(os.path.join(nf, name(2)), os.path.join(nf, name(3)))
    cv2.imwrite(os.path.join(nf, name(7)), image(6), [cv2.IMWRITE_JPEG_QUALITY, 70])
    with open(os.path.join(nf, name(4)), "r+b") as f:
        f.truncate(200)
    with open(os.path.join(ROOT, "dataset.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        header = "image_id hand leg hip shoulder mixed hardware multiscan fractured fracture_count"
        writer.writerow([*header.split(), "frontal", "lateral", "oblique"])
        for i in sorted(FRACTURED + NON_FRACTURED + [99]):
            fractured = int(i in FRACTURED and i != 50)
            region = [i % 2, 1 - i % 2, 0, 0, 0]
            writer.writerow([name(i), *region, int(i == 25), 0, fractured, fractured, 1, int(i % 3 == 0), 0])
    for i in FRACTURED:
        with open(os.path.join(ROOT, "Annotations", "YOLO", name(i).replace(".jpg", ".txt")), "w") as f:
            f.write("0 0.5 0.4 0.2 0.3\n")


if __name__ == "__main__":
    main()
