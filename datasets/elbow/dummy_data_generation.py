"""Writes the tiny fake elbow set in dummy_data/ used by the builder's test.

    .venv/bin/python datasets/elbow/dummy_data_generation.py

File names as a hospital might write them (see NAMES for what each must become). Planted problems:
`scan_0042.png` matches no rule (reported, left out), `P31_AP_fracture.jpg` is truncated
(unreadable: skipped and listed), `notes.txt` is not an image (ignored).
"""

import os
import shutil

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")

# name -> (label, view, patient id); label None: no rule matches.
NAMES = {
    "P0012_AP_supracondylar_fracture.png": ("injury", "ap", "12"),
    "P0012_lateral_supracondylar_fracture.png": ("injury", "lateral", "12"),
    "P3_fracture_cast.png": ("normal", "unknown", "3"),
    "P3_lateral_fracture_cast.png": ("normal", "lateral", "3"),
    "P7_contusion.png": ("normal", "unknown", "7"),
    "P7_AP_contusion.jpg": ("normal", "ap", "7"),
    "patient_21_AP_dislocation.png": ("injury", "ap", "21"),
    "patient_21_lat_dislocation.png": ("injury", "lateral", "21"),
    "Patient-4 AP K-wires.png": ("normal", "ap", "4"),
    "P5_AP_lateral_condyle_fracture.png": ("injury", "ap", "5"),
    "P5_lat_lateral_condyle_fracture.png": ("injury", "lateral", "5"),
    "P8_AP_no_fracture.png": ("normal", "ap", "8"),
    "P9_ORIF_plate_screws.png": ("normal", "unknown", "9"),
    "lateral dislocation 3.jpg": ("injury", "lateral", None),
    "lateral dislocation 4.jpg": ("injury", "lateral", None),
    "normal_12.png": ("normal", "unknown", None),
    "normal_13.png": ("normal", "unknown", None),
    "normal_14.png": ("normal", "unknown", None),
    "normal_15.png": ("normal", "unknown", None),
    "AP normal 16.png": ("normal", "ap", None),
    "fracture_olecranon_17.png": ("injury", "unknown", None),
    "Fracture radial head 18.jpg": ("injury", "unknown", None),
    "ward2/P30_AP_normal.png": ("normal", "ap", "30"),
    "ward2/P30_lateral_normal.png": ("normal", "lateral", "30"),
    "P31_AP_fracture.jpg": ("injury", "ap", "31"),  # truncated
    "scan_0042.png": (None, "unknown", None),
}
CORRUPT = "P31_AP_fracture.jpg"


def image(index):
    rng = np.random.default_rng(100 + index)
    height, width = rng.integers(16, 33, 2)
    small = rng.integers(0, 256, (4, 4)).astype(np.uint8)
    return cv2.resize(small, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "ward2"))
    for index, name in enumerate(NAMES):
        ok, data = cv2.imencode(os.path.splitext(name)[1], image(index))
        assert ok
        data = data.tobytes()
        if name == CORRUPT:
            data = data[: len(data) // 2]
        with open(os.path.join(ROOT, name), "wb") as f:
            f.write(data)
    with open(os.path.join(ROOT, "notes.txt"), "w") as f:
        f.write("Not an image: the builder ignores it.\n")


if __name__ == "__main__":
    main()
