"""Model latency in the browser (LiteRT.js, WebAssembly + XNNPACK, 1 and 2 threads) beside native LiteRT.

The same .tflite files, the same machine, one run: each model is timed natively (ai-edge-litert, XNNPACK)
and in headless Chromium on the web app built from it (``tf-fracture export --web``), at 1 and 2 threads
(the page is cross-origin isolated by its service worker, so LiteRT.js may use its threaded build). Each
figure is the median of ``--runs`` calls on one fixed input after 5 warm-up calls, output read back
included. Prints the CPU it ran on and a markdown table with the browser/native ratio.

Run (after `make web browser`):
    .venv/bin/python benchmarks/web_benchmark.py runs/demo/export/model_float32.tflite \
        runs/demo/export/model_int8.tflite

The int8 file must take float32 in and out (``tf-fracture export --quantize int8 --web DIR`` or ``--int8-io float32``).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from edge_benchmark import cpu_name
from web_browser import StaticServer, browser, open_app

from tf_fracture_export import litert, web
from tf_fracture_export.metadata import read_metadata


def native_ms(path: pathlib.Path, threads: int, runs: int) -> float:
    interpreter = litert.load_interpreter(path, num_threads=threads)
    size = read_metadata(path).image_size
    image = (np.arange(size * size) * 7919 % 256).astype(np.uint8).reshape(1, size, size, 1)
    for _ in range(5):
        litert.run_model(interpreter, image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        litert.run_model(interpreter, image)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def browser_ms(driver, url: str, quantization: str, threads: int, runs: int) -> tuple[float, dict]:
    open_app(driver, f"{url}?model={quantization}&threads={threads}&accelerator=wasm")
    result = driver.execute_script(f"return tfFracture.benchmark({runs})")
    return statistics.median(result["times"]), result


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=pathlib.Path, help="exported .tflite files (JSON beside each)")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per model and thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        site = web.build_site(args.models, pathlib.Path(folder) / "site")
        server = StaticServer(site.folder)
        driver = browser()
        rows = []
        try:
            for path in args.models:
                metadata = read_metadata(path)
                for threads in args.threads:
                    native = native_ms(path, threads, args.runs)
                    ms, info = browser_ms(driver, server.url, metadata.quantization, threads, args.runs)
                    if info["threads"] != threads:
                        raise RuntimeError(f"The page ran {info['threads']} thread(s), not {threads}: {info}")
                    rows.append((metadata.quantization, metadata.image_size, path.stat().st_size, threads, native, ms))
        finally:
            driver.quit()
            server.stop()
    version = driver.capabilities.get("browserVersion", "?")
    lines = [
        f"CPU: {cpu_name()}; Chromium {version} (headless); median of {args.runs} calls",
        "",
        "| model | px | size (KiB) | threads | native LiteRT (ms) | browser LiteRT.js wasm (ms) | browser / native |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for quantization, size, nbytes, threads, native, ms in rows:
        lines.append(
            f"| {quantization} | {size} | {nbytes / 1024:.0f} | {threads} | {native:.2f} | {ms:.2f} "
            f"| {ms / native:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
