"""The offline web app (`tf_fracture_export.web`, `export/web/`): the site it builds, and the app in a real browser.

The browser tests load the built site from a local static server in headless Chromium (Debian's, driven
by chromedriver), pick files through the page's own file input, and compare what the page computed
(its model input, its probability) with the Python predictor on the same files. The model is
MobileNetV3-Small + CBAM at 96 px with its BatchNorm statistics spread over test radiographs (so its
answers differ from image to image), exported float32 and int8 with float32 input and outputs (LiteRT.js
has no int8 tensors).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from export_helpers import radiograph, spread_batchnorm
from selenium.webdriver.support.ui import Select
from web_browser import PHONE, StaticServer, browser, open_app, requests_sent, wait_for

from tf_fracture.data.io import read_image
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.models import build_classifier
from tf_fracture_export import web
from tf_fracture_export.convert import convert
from tf_fracture_export.metadata import ModelMetadata, metadata_path, read_metadata, write_metadata
from tf_fracture_export.predictor import Predictor

SIZE = 96
# Unsharp masking on (the demo preset turns it off) so that the port of every step is compared.
PREPROCESSING = PreprocessConfig(SIZE, clahe_clip_limit=2.5, clahe_grid=4, unsharp_kernel=5, unsharp_amount=2.0)
# Far apart, so that an answer between them is labelled differently under each (the page's choice).
THRESHOLDS = {"youden": 0.5, "target_sensitivity": 0.01, "fixed": 0.99}
FRACATLAS = os.environ.get("TF_FRACTURE_FRACATLAS")
SCREENSHOTS = Path(
    os.environ.get("TF_FRACTURE_SCREENSHOTS", Path(__file__).resolve().parents[1] / "build" / "screenshots")
)


def _write_model(model, folder: Path, quantization: str, calibration=None) -> Path:
    path = folder / f"model_{quantization}.tflite"
    int8_io = "float32" if quantization == "int8" else "int8"
    path.write_bytes(convert(model, quantization, calibration_images=calibration, int8_io=int8_io))
    metadata = ModelMetadata(
        model_file=path.name,
        quantization=quantization,
        labels=("normal", "fracture"),
        preprocessing=PREPROCESSING,
        thresholds=THRESHOLDS,
        default_threshold="youden",
        source_run=str(folder / "runs" / "tiny"),
        cam_size=(3, 3),
        int8_io=int8_io,
    )
    write_metadata(metadata, metadata_path(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    model = build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE, feature_dim=32)
    rng = np.random.default_rng(0)
    images = np.stack([preprocess(radiograph(rng, 140, 120), PREPROCESSING) for _ in range(24)])[..., None]
    spread_batchnorm(model, images.astype(np.float32))
    return {
        "float32": _write_model(model, folder, "float32"),
        "int8": _write_model(model, folder, "int8", calibration=images.astype(np.float32)),
    }


@pytest.fixture(scope="module")
def site(models, tmp_path_factory):
    return web.build_site([models["float32"], models["int8"]], tmp_path_factory.mktemp("public") / "site")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real FracAtlas JPEGs where CI has them (10 fractured, 10 not), else test radiographs as JPEG and PNG."""
    folder = tmp_path_factory.mktemp("images")
    if FRACATLAS:
        root = Path(FRACATLAS) / "images"
        chosen = sorted((root / "Fractured").glob("*.jpg"))[:10] + sorted((root / "Non_fractured").glob("*.jpg"))[:10]
        assert len(chosen) == 20, f"{root} lacks the FracAtlas images"
        return chosen
    rng = np.random.default_rng(1)
    paths = []
    for i in range(20):
        path = folder / (f"r{i}.jpg" if i % 2 else f"r{i}.png")
        cv2.imwrite(str(path), radiograph(rng, 300 + 7 * i, 250 + 5 * i))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def server(site):
    server = StaticServer(site.folder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def driver():
    driver = browser()
    yield driver
    driver.quit()


def _upload(driver, paths, previous: int) -> list[dict]:
    driver.find_element("id", "files").send_keys("\n".join(str(p) for p in paths))
    wait_for(
        driver,
        f"tfFracture.results.length >= {previous + len(paths)} && document.body.dataset.state === 'ready'",
        what=f"{len(paths)} results",
    )
    return driver.execute_script(f"return tfFracture.results.slice({previous})")


def _pixels(result) -> np.ndarray:
    return np.frombuffer(base64.b64decode(result["input"]), np.uint8).reshape(SIZE, SIZE)


# --- the site, without a browser -------------------------------------------------------------------------------


def test_the_site_holds_the_app_the_runtimes_and_the_models_and_its_worker_caches_every_file(site, models):
    files = sorted(p.relative_to(site.folder).as_posix() for p in site.folder.rglob("*") if p.is_file())
    assert sorted(site.files) == files
    for name in (
        *web.APP_FILES,
        *web.ICONS,
        "sw.js",
        "models.json",
        "vendor/opencv.js",
        "vendor/litertjs/core.js",
        "wasm/litert_wasm_internal.wasm",
        "wasm/litert_wasm_threaded_internal.wasm",
    ):
        assert name in files
    for name, size in web.ICONS.items():  # PNG icons of their stated size (install prompts, iOS' home screen)
        assert cv2.imread(str(site.folder / name)).shape == (size, size, 3)
    manifest = json.loads((site.folder / "manifest.webmanifest").read_text())
    assert all((site.folder / icon["src"]).is_file() for icon in manifest["icons"])
    assert {"192x192", "512x512"} <= {icon["sizes"] for icon in manifest["icons"]}
    worker = (site.folder / "sw.js").read_text()
    assert "__FILES__" not in worker and "__VERSION__" not in worker and site.version in worker
    cached = json.loads(worker.split("const FILES = ", 1)[1].split(";\n", 1)[0])
    assert sorted(cached) == sorted(["./", *(f for f in files if f != "sw.js")])  # everything but itself
    listed = json.loads((site.folder / "models.json").read_text())["models"]
    assert [m["quantization"] for m in listed] == ["float32", "int8"] == list(site.models)
    for entry in listed:
        assert (site.folder / entry["model"]).read_bytes() == models[entry["quantization"]].read_bytes()
        metadata = read_metadata(site.folder / entry["metadata"])
        assert metadata.source_run == "tiny"  # the run's name only, no path of the machine that built it
        assert metadata.io_dtype == "float32"
    # No address outside the site: the page and its code load nothing from a CDN.
    for name in ("index.html", "app.js", "runtime.js", "preprocess.js", "heatmap.js", "sw.js"):
        text = (site.folder / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_a_rebuild_changes_the_version_and_replaces_the_site_whole(site, models, tmp_path):
    out = tmp_path / "site"
    first = web.build_site([models["float32"]], out)
    (out / "stale.txt").write_text("from an old build")
    second = web.build_site([models["float32"], models["int8"]], out)
    assert first.version != second.version and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging folder left behind


def test_bad_builds_are_refused_and_leave_nothing(models, tmp_path):
    int8_io = tmp_path / "model_int8.tflite"
    shutil.copyfile(models["int8"], int8_io)
    data = json.loads(metadata_path(models["int8"]).read_text())
    data["input"]["dtype"] = "int8"
    metadata_path(int8_io).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"LiteRT\.js cannot feed.*--int8-io float32"):
        web.build_site([int8_io], tmp_path / "a")
    with pytest.raises(ValueError, match="Two float32 models"):
        web.build_site([models["float32"], models["float32"]], tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="No model at"):
        web.build_site([tmp_path / "missing.tflite"], tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a site built by tf-fracture"):
        web.build_site([models["float32"]], tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="make web"):
        web.build_site([models["float32"]], tmp_path / "e", modules=tmp_path / "no_node_modules")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "model_int8.json", "model_int8.tflite"]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["notes.txt"]


def test_the_int8_model_for_the_web_takes_float32_and_runs_int8_inside(models):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(models["int8"]))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert all(d["dtype"] == np.float32 for d in interpreter.get_output_details())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"QUANTIZE", "DEQUANTIZE"} <= ops
    weights = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    assert len(weights) > 50  # every layer's weights and activations
    assert read_metadata(models["int8"]).to_dict()["input"]["dtype"] == "float32"
    Predictor(models["int8"])  # the metadata fits the model: the Python predictor loads it


# --- the app in Chromium ---------------------------------------------------------------------------------------


def test_the_browser_gives_the_python_predictors_pixels_and_probability(driver, server, site, images):
    open_app(driver, server.url + "?model=float32")
    loaded = driver.execute_script("return tfFracture.loaded()")
    assert loaded["quantization"] == "float32" and loaded["accelerator"] == "wasm"
    results = _upload(driver, images, driver.execute_script("return tfFracture.results.length"))
    predictor = Predictor(site.folder / "models" / "model_float32.tflite")  # the file the browser ran
    raw = [read_image(p) for p in images]
    expected = predictor.probabilities(raw)
    assert expected.std() > 0.01  # the answers differ from image to image: the comparison can fail
    for path, image, result, probability in zip(images, raw, results, expected, strict=True):
        assert result["name"] == Path(path).name and "error" not in result
        difference = np.abs(_pixels(result).astype(int) - preprocess(image, PREPROCESSING).astype(int))
        assert difference.max() <= 1, path  # the bound; measured: 0 on every image
        assert abs(result["probability"] - probability) <= 1e-4, path
        assert result["label"] == ("fracture" if result["probability"] >= THRESHOLDS["youden"] else "normal")
        assert len(result["cam"]) == 9 and result["ms"] > 0


@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(96, unsharp_kernel=5),  # both axes shrink
        PreprocessConfig(360, unsharp_kernel=7),  # one axis shrinks, the other grows: two passes
        PreprocessConfig(128, unsharp_kernel=5, resize_mode="pad", clahe_clip_limit=4.0, clahe_grid=8),
        PreprocessConfig(600, unsharp_kernel=3, unsharp_amount=0.0),  # both grow
    ],
    ids=["shrink", "two-pass", "pad", "grow"],
)
def test_the_ported_preprocessing_is_opencvs_to_the_grey_level(driver, server, tmp_path, config):
    open_app(driver, server.url)
    rng = np.random.default_rng(config.image_size)
    grey = radiograph(rng, 333, 287)
    colour = np.dstack([grey, np.roll(grey, 5, axis=0), 255 - grey])  # BGR, unequal channels: OpenCV's luma
    files = {"grey.png": grey, "colour.png": colour, "grey.jpg": grey, "colour.jpg": colour, "rotated.jpg": grey}
    for name, pixels in files.items():
        path = tmp_path / name
        if name == "rotated.jpg":  # EXIF orientation 6 (a phone's portrait photo): tf-fracture ignores it
            from PIL import Image

            exif = Image.Image.getexif(Image.fromarray(pixels))
            exif[0x0112] = 6
            Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
        else:
            cv2.imwrite(str(path), pixels)
        encoded = base64.b64encode(path.read_bytes()).decode()
        got = driver.execute_script(
            "return tfFracture.preprocessBytes(arguments[0], arguments[1], arguments[2])",
            encoded,
            name,
            {**config.__dict__},
        )
        ours = np.frombuffer(base64.b64decode(got), np.uint8).reshape(config.image_size, config.image_size)
        assert np.array_equal(ours, preprocess(read_image(path), config)), name


def test_bad_files_get_a_clear_message_and_the_good_ones_still_run(driver, server, images, tmp_path):
    open_app(driver, server.url)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(Path(images[0]).read_bytes()[:3000])
    before = driver.execute_script("return tfFracture.results.length")
    results = _upload(driver, [text, truncated, images[1]], before)
    assert results[0]["error"] == "notes.png: not a PNG or JPEG image (the app reads PNG and JPEG radiographs)"
    assert results[1]["error"].startswith("cut.jpg: truncated JPEG")
    assert "error" not in results[2] and 0 <= results[2]["probability"] <= 1
    shown = driver.find_element("id", "errors").text
    assert "notes.png: not a PNG or JPEG image" in shown and "cut.jpg: truncated JPEG" in shown
    assert "1 image analysed, 2 skipped" in driver.find_element("id", "status").text


def test_nothing_is_requested_after_load_and_it_reloads_offline(site, images):
    server = StaticServer(site.folder)
    driver = browser()
    try:
        open_app(driver, server.url)
        # The service worker has cached the site and controls the page (it reloaded once, cross-origin isolated).
        wait_for(driver, "navigator.serviceWorker.controller !== null && crossOriginIsolated", what="the worker")
        requests_sent(driver)  # drain the log up to here
        results = _upload(driver, images[:3], driver.execute_script("return tfFracture.results.length"))
        assert all("error" not in r for r in results)
        driver.find_element("id", "model").send_keys("int8")  # switching models reads the cached files only
        wait_for(driver, "tfFracture.loaded().quantization === 'int8' && document.body.dataset.state === 'ready'")
        sent = [u for u in requests_sent(driver) if u.startswith(server.url)]
        assert all(u.startswith(server.url + "models/") for u in sent), sent  # the site's own model files only
        assert not [u for u in requests_sent(driver) if not u.startswith(server.url)]
        server.stop()  # offline from here on
        open_app(driver, server.url)
        assert driver.execute_script("return tfFracture.loaded().threads") == 2  # isolated: LiteRT.js' threads
        again = _upload(driver, images[:1], driver.execute_script("return tfFracture.results.length"))
        assert "error" not in again[0]
    finally:
        driver.quit()
        server.httpd.server_close()


def test_int8_in_the_browser_is_the_native_int8_model(driver, server, site, images):
    open_app(driver, server.url + "?model=int8")
    assert driver.execute_script("return tfFracture.loaded().quantization") == "int8"
    results = _upload(driver, images[:6], driver.execute_script("return tfFracture.results.length"))
    expected = Predictor(site.folder / "models" / "model_int8.tflite").probabilities(
        [read_image(p) for p in images[:6]]
    )
    got = np.array([r["probability"] for r in results])
    # The same int8 graph; XNNPACK's WebAssembly and x86 int8 kernels may round an activation differently.
    assert np.abs(got - expected).max() <= 0.02


def test_a_phone_sized_screenshot_of_a_result(driver, server, images):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        open_app(driver, server.url + "?model=float32")
        (result,) = _upload(driver, images[:1], driver.execute_script("return tfFracture.results.length"))
        # The label follows the threshold the user picks from the metadata's.
        assert 0.01 < result["probability"] < 0.99
        for name in ("target_sensitivity", "fixed", "youden"):  # the screenshot shows the default
            value = THRESHOLDS[name]
            Select(driver.find_element("id", "threshold")).select_by_value(name)
            expected = "fracture" if result["probability"] >= value else "normal"
            assert driver.find_element("id", "label").text == expected
            assert driver.find_element("css selector", "#history tbody tr td:nth-child(3)").text == expected
            assert f"{value:.3f}" in driver.find_element("id", "details").text
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # nothing wider than the phone: no sideways scrolling
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / "web_app_phone.png"
        driver.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# --- the command line ------------------------------------------------------------------------------------------


def test_the_export_command_builds_the_site_from_what_it_exported(models, tmp_path, monkeypatch, capsys):
    from tf_fracture_export import exporter
    from tf_fracture_export.__main__ import main

    asked = {}

    def export_run(run, variants, **options):  # the conversions are tested in test_export_convert.py
        asked.update(options, variants=variants)
        return [exporter.ExportedVariant(q, models[q], metadata_path(models[q])) for q in variants]

    monkeypatch.setattr(exporter, "export_run", export_run)
    out = tmp_path / "site"
    assert main(["runs/tiny", "--quantize", "float32", "int8", "--web", str(out), "--no-verify"]) == 0
    assert asked["variants"] == ["float32", "int8"] and asked["int8_io"] == "float32"  # what LiteRT.js can feed
    assert json.loads((out / "models.json").read_text())["models"][1]["quantization"] == "int8"
    assert f"web app: {out}/index.html (float32, int8;" in capsys.readouterr().out
    # Without --web the int8 variant keeps its int8 input and outputs.
    assert main(["runs/tiny", "--quantize", "int8", "--no-verify"]) == 0 and asked["int8_io"] == "int8"


def test_the_export_command_refuses_a_site_it_could_not_build_before_converting(tmp_path, monkeypatch, capsys):
    from tf_fracture_export import exporter
    from tf_fracture_export.__main__ import main

    monkeypatch.setattr(exporter, "export_run", lambda *a, **k: pytest.fail("converted before checking the runtimes"))
    with pytest.raises(SystemExit) as exit_:
        main(["runs/tiny", "--quantize", "int8", "--int8-io", "int8", "--web", str(tmp_path / "site")])
    assert exit_.value.code == 2 and "LiteRT.js" in capsys.readouterr().err
    monkeypatch.setenv(web.NODE_MODULES_ENV, str(tmp_path / "nothing"))
    assert main(["runs/tiny", "--web", str(tmp_path / "site")]) == 2
    assert "make web" in capsys.readouterr().err and not (tmp_path / "site").exists()
