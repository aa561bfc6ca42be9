"""The repository's datasets/ folder must never shadow Hugging Face's `datasets` package."""

import os
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_datasets_folder_is_not_a_package():
    assert not os.path.exists(os.path.join(ROOT, "datasets", "__init__.py"))


def test_hugging_face_datasets_and_our_builders_import_side_by_side():
    # Run from the repository root, where a folder named datasets/ sits on sys.path[0].
    code = (
        "import datasets, tf_fracture_datasets.fracatlas.fracatlas_dataset_builder as fa;"
        "print(datasets.__file__); print(hasattr(datasets, 'load_dataset')); print(fa.Builder.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    hf_file, has_load, name = out.stdout.split()
    assert "site-packages" in hf_file and not hf_file.startswith(os.path.join(ROOT, "datasets"))
    assert has_load == "True" and name == "fracatlas"


def test_every_dataset_folder_is_an_installed_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        packages = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    folders = {
        name
        for name in os.listdir(os.path.join(ROOT, "datasets"))
        if os.path.isfile(os.path.join(ROOT, "datasets", name, "__init__.py"))
    }
    assert folders == {"elbow", "fracatlas", "mura", "synthetic_xray"}
    assert {f"tf_fracture_datasets.{name}" for name in folders} <= packages
    on_disk = {
        ".".join(os.path.relpath(d, ROOT).split(os.sep))
        for d, _, files in os.walk(os.path.join(ROOT, "tf_fracture"))
        if "__init__.py" in files
    }
    assert on_disk <= packages


def test_tfds_build_command_works_on_a_dataset_folder(tmp_path):
    """`tfds build datasets/<name>` (the TFDS command line) builds our folder-style builders."""
    tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
    folder = os.path.join(ROOT, "datasets", "fracatlas")
    out = subprocess.run(
        [tfds_cli, "build", folder, "--data_dir", str(tmp_path), "--manual_dir", os.path.join(folder, "dummy_data")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    built = tmp_path / "fracatlas" / "default" / "1.0.0"
    assert (built / "dataset_info.json").is_file()
    assert sorted(p.name.split(".")[0] for p in built.glob("fracatlas-*.tfrecord*")) == [
        "fracatlas-test",
        "fracatlas-train",
        "fracatlas-validation",
    ]


def test_every_builder_is_registered_by_tf_fracture_datasets():
    import tensorflow_datasets as tfds

    import tf_fracture.datasets

    for name in ("mura", "elbow", "fracatlas", "synthetic_xray"):
        assert tfds.builder_cls(name) is tf_fracture.datasets.BUILDERS[name]
