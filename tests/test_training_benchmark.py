"""benchmarks/training_benchmark.py: the table it prints, the PyTorch ConvNeXt it compares with, the GPU guard."""

import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "training_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("training_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _table_rows(table: str) -> list[list[str]]:
    lines = table.splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_torch_convnext_has_the_published_parameter_count(bench):
    pytest.importorskip("torch")
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    # Liu et al. 2022, Table 1 / the authors' README: ConvNeXt-T 28.59 M, ConvNeXt-S 50.22 M (1000 classes).
    assert count(bench.torch_convnext("tiny", num_classes=1000)) == 28_589_128
    assert count(bench.torch_convnext("small", num_classes=1000)) == 50_223_688


def test_measure_interleaves_and_takes_medians(bench, monkeypatch):
    clock, calls = [0.0], []

    def candidate(name, framework, xla, seconds, first):
        row = bench.Row("convnext-tiny", bench.PUBLIC, 32, xla, framework, 4, 1, [], 0.0)

        def step():
            clock[0] += seconds[len(calls_of(name))] if len(calls_of(name)) < len(seconds) else seconds[-1]
            clock[0] += first if not calls_of(name) else 0.0
            calls.append(name)

        return bench.Candidate(row, step)

    calls_of = lambda name: [c for c in calls if c == name]  # noqa: E731
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    keras_xla = candidate("xla", bench.KERAS, True, [9.0, 9.0, 0.5, 0.4, 2.0], first=10.0)
    torch_row = candidate("torch", bench.TORCH, None, [1.0, 1.0, 1.0, 0.8, 1.0], first=0.0)
    bench.measure([keras_xla, torch_row], steps=3, warmup=2, log=lambda message: None)
    # Both warm up first, then the timed steps alternate so that machine noise hits both alike.
    assert calls == ["xla", "xla", "torch", "torch", "xla", "torch", "xla", "torch", "xla", "torch"]
    assert keras_xla.row.step_seconds == pytest.approx([0.5, 0.4, 2.0])
    assert torch_row.row.step_seconds == pytest.approx([1.0, 0.8, 1.0])
    assert keras_xla.row.images_per_s == pytest.approx(4 / 0.5)  # the median, not the mean
    assert torch_row.row.images_per_s == pytest.approx(4 / 1.0)
    assert keras_xla.row.vs_torch == pytest.approx(2.0) and torch_row.row.vs_torch == pytest.approx(1.0)
    assert keras_xla.row.first_step_s == pytest.approx(19.0)
    assert keras_xla.row.compile_s == pytest.approx(19.0 - 0.5)  # first step minus a steady one
    assert torch_row.row.compile_s is None

    table = _table_rows(bench.format_table({"rows": [keras_xla.row, torch_row.row]}))
    assert table[0] == list(bench.COLUMNS)
    assert table[2] == ["convnext-tiny", bench.PUBLIC, "32", "on", bench.KERAS, "4", "0.00", "8.00", "2.00", "18.5"]
    assert table[3][3:] == ["—", bench.TORCH, "4", "0.00", "4.00", "1.00", "—"]


@pytest.mark.large
def test_tiny_run_gives_the_table_and_like_for_like_pair(bench):
    pytest.importorskip("torch")
    settings = bench.BenchmarkSettings(
        backbones=("convnext",), sizes=(32,), batch={32: 2}, steps=1, warmup=1, xla=(False,), peak_tflops=1.0
    )
    result = bench.run_benchmark(settings, log=lambda message: None)
    rows = result["rows"]
    assert [(r.model, r.framework, r.xla) for r in rows] == [
        (bench.PUBLIC, bench.KERAS, False),
        (bench.METHOD, bench.KERAS, False),
        (bench.PUBLIC, bench.TORCH, None),
    ]
    keras_public, keras_method, torch_row = rows
    # The same architecture on both sides: ConvNeXt-Tiny with a 1-logit head (28.59 M - 999 x 769).
    assert keras_public.params == torch_row.params == 28_589_128 - 999 * 769
    assert keras_method.params > keras_public.params  # CBAM adds parameters
    for row in rows:
        assert row.batch == 2 and row.size == 32 and len(row.step_seconds) == 1
        assert row.images_per_s == pytest.approx(2 / row.step_seconds[0])
        assert row.vs_torch == pytest.approx(row.images_per_s / torch_row.images_per_s)
        assert row.compile_s is None  # XLA off
        assert row.peak_fraction == pytest.approx(row.tflops / 1.0)
    # FLOPs: TF's profiler (3x forward) and PyTorch's counter (forward + backward) agree on the architecture.
    assert keras_public.train_gflops_per_image == pytest.approx(torch_row.train_gflops_per_image, rel=0.05)

    table = _table_rows(bench.format_table(result))
    assert table[0] == [*bench.COLUMNS, "train GFLOPs/image", "TFLOP/s", "% of peak"]
    assert len(table) == 2 + len(rows)
    assert table[4][:6] == ["convnext-tiny", bench.PUBLIC, "32", "—", bench.TORCH, "2"]
    assert table[4][bench.COLUMNS.index("vs PyTorch eager")] == "1.00"
    assert f"{result['environment']['threads']} threads (TensorFlow and PyTorch)" in bench.format_report(result)


def test_without_torch_the_tensorflow_rows_run_with_a_note(bench, monkeypatch):
    monkeypatch.setattr(bench, "_import_torch", lambda: None)
    built = []

    def fake_keras_candidate(settings, name, model_kind, size, xla, images, labels):
        built.append((name, model_kind, xla, images.shape, labels.shape))
        row = bench.Row(f"{name}-tiny", model_kind, size, xla, bench.KERAS, len(labels), 1, [], 0.0)
        return bench.Candidate(row, lambda: None)

    monkeypatch.setattr(bench, "keras_candidate", fake_keras_candidate)
    settings = bench.BenchmarkSettings(backbones=("convnext",), sizes=(32,), batch={32: 2}, steps=1, warmup=1)
    result = bench.run_benchmark(settings, log=lambda message: None)
    assert built == [
        ("convnext", kind, xla, (2, 32, 32, 3), (2,)) for kind in (bench.PUBLIC, bench.METHOD) for xla in (False, True)
    ]
    assert [row.framework for row in result["rows"]] == [bench.KERAS] * 4
    assert all(row.vs_torch is None for row in result["rows"])
    assert any("PyTorch is not installed" in note for note in result["notes"])
    assert "Note: PyTorch is not installed" in bench.format_report(result)


def test_gpu_asked_for_without_one_fails_clearly(bench, monkeypatch):
    monkeypatch.setattr(bench.tf.config, "list_physical_devices", lambda kind=None: [])
    settings = bench.BenchmarkSettings(device="gpu", precision="bf16")
    with pytest.raises(bench.DeviceUnavailableError, match="--device gpu: TensorFlow sees no GPU"):
        bench.run_benchmark(settings, log=lambda message: None)
    assert bench.main(["--device", "gpu", "--precision", "bf16"]) == 2


def test_peak_table_and_argument_checks(bench):
    gpu = bench.BenchmarkSettings(device="gpu", precision="bf16")
    assert bench.peak_tflops(gpu, "NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops(gpu, "NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops(gpu, "NVIDIA H200") == 989.0
    assert bench.peak_tflops(gpu, "NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops(gpu, "Some Future GPU") is None
    assert bench.peak_tflops(bench.BenchmarkSettings(device="gpu", peak_tflops=500.0), "NVIDIA H100") == 500.0
    assert bench.peak_tflops(bench.BenchmarkSettings(device="gpu"), "NVIDIA H100") is None  # fp32: not the bf16 peak
    with pytest.raises(ValueError, match="Unknown backbone"):
        bench.BenchmarkSettings(backbones=("resnet",))
    with pytest.raises(ValueError, match="Unknown variant convnext=huge"):
        bench.BenchmarkSettings(variants={"convnext": "huge"})
    settings, path = bench.settings_from_args(["--quick", "--variant", "small", "--batch", "3", "--json", "x.json"])
    assert settings.backbones == ("convnext",) and settings.variants == {"convnext": "small"}
    assert settings.batch == {64: 3} and settings.xla == (False, True) and path == "x.json"


@pytest.mark.large
def test_bf16_and_xla_paths_run_on_the_cpu(bench):
    pytest.importorskip("torch")
    import keras

    settings = bench.BenchmarkSettings(
        backbones=("convnext",), sizes=(32,), batch={32: 2}, steps=1, warmup=1, xla=(True,), precision="bf16"
    )
    result = bench.run_benchmark(settings, log=lambda message: None)
    assert [row.xla for row in result["rows"]] == [True, True, None]
    assert all(row.compile_s is not None and row.compile_s > 0 for row in result["rows"][:2])
    assert keras.config.dtype_policy().name == "float32"  # the bf16 policy was restored
