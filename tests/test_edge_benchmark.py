"""benchmarks/edge_benchmark.py: the table it prints in ``--quick`` mode (4 conversions: about 40 s on 2 CPU cores)."""

import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "edge_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("edge_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_markdown_table_has_one_row_per_model_and_a_column_per_thread_count(bench):
    rows = [
        bench.Row("method: m", "int8", 3.8, 22, False, {"HARD_SWISH": 21}, {1: 15.5, 4: 20.0}),
        bench.Row("edge: e", "int8", 2.5, 1, True, {}, {1: 7.25, 4: 8.0}),
    ]
    lines = bench.markdown(rows, 224).splitlines()
    assert lines[2].split(" | ")[-2:] == ["ms/image @1 thread", "ms/image @4 threads |"]
    assert lines[4] == "| method: m | int8 | 3.80 | 22 | no | HARD_SWISH x21 | 15.50 | 20.00 |"
    assert lines[5] == "| edge: e | int8 | 2.50 | 1 | yes | none | 7.25 | 8.00 |"


def test_to_tflite_refuses_an_unknown_quantization_and_int8_without_calibration(bench):
    with pytest.raises(ValueError, match="float16"):
        bench.to_tflite(None, "float16")
    with pytest.raises(ValueError, match="calibration images"):
        bench.to_tflite(None, "int8")


@pytest.mark.large
def test_quick_run_shows_the_edge_int8_model_as_one_partition(bench, capsys):
    rows = bench.main(["--quick"])
    by_name = {(row.model.split(":")[0], row.quantization): row for row in rows}
    assert set(by_name) == {(m, q) for m in ("method", "edge") for q in ("float32", "int8")}
    assert by_name["edge", "int8"].partitions == 1 and by_name["edge", "int8"].fully_accelerated
    assert by_name["method", "int8"].partitions > 1 and not by_name["method", "int8"].fully_accelerated
    assert by_name["edge", "int8"].undelegated == {} and "HARD_SWISH" in by_name["method", "int8"].undelegated
    assert by_name["edge", "int8"].size_mb < by_name["edge", "float32"].size_mb / 3  # int8 weights: ~1/4 the size
    assert all(row.latency_ms[1] > 0 for row in rows)
    assert "| edge: mobilenetv3 small_minimal + CBAM | int8 |" in capsys.readouterr().out
