"""Which precision VLM base weights load in: 4-bit NF4 where bitsandbytes supports the device, bf16 otherwise."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlm_tiny import make_tiny_medgemma  # noqa: E402

from vlm_torch.config import LoraSettings  # noqa: E402
from vlm_torch.families import get_family  # noqa: E402
from vlm_torch.lora import add_lora  # noqa: E402
from vlm_torch.precision import fit_cpu_4bit_kernels, load_kwargs, resolve_quantization  # noqa: E402
from vlm_torch.prompts import target_answer  # noqa: E402


def _bitsandbytes_on_cpu() -> bool:
    try:
        import bitsandbytes
    except Exception:
        return False
    return "cpu" in getattr(bitsandbytes, "supported_torch_devices", ())


needs_bnb_cpu = pytest.mark.skipif(not _bitsandbytes_on_cpu(), reason="bitsandbytes has no CPU backend here")


@needs_bnb_cpu
def test_auto_is_4bit_nf4_with_double_quantisation_where_supported():
    q = resolve_quantization("auto", "cpu")
    assert q.mode == "4bit" and q.device == "cpu"
    config = q.bnb_config
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16 and q.torch_dtype == torch.bfloat16
    assert "4-bit NF4 with double quantisation" in q.message and "cpu" in q.message
    assert load_kwargs(q) == {"dtype": torch.bfloat16, "device_map": {"": "cpu"}, "quantization_config": config}
    assert resolve_quantization("4bit", "cpu").mode == "4bit"


def _no_cpu_backend(monkeypatch):
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cuda"})


def test_auto_falls_back_to_bf16_and_says_why(monkeypatch):
    pytest.importorskip("bitsandbytes")
    _no_cpu_backend(monkeypatch)
    q = resolve_quantization("auto", "cpu")
    assert q.mode == "bf16" and q.bnb_config is None and q.torch_dtype == torch.bfloat16
    assert "NOT in 4 bits" in q.message and "no backend for 'cpu'" in q.message
    assert load_kwargs(q) == {"dtype": torch.bfloat16, "device_map": {"": "cpu"}}


def test_4bit_where_unsupported_is_an_error_that_names_the_way_out(monkeypatch):
    pytest.importorskip("bitsandbytes")
    _no_cpu_backend(monkeypatch)
    with pytest.raises(RuntimeError, match=r"no backend for 'cpu'.*--quantization bf16"):
        resolve_quantization("4bit", "cpu")


def test_without_bitsandbytes_auto_is_bf16(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes raises ImportError
    q = resolve_quantization("auto", "cpu")
    assert q.mode == "bf16" and "bitsandbytes cannot be imported" in q.message


def test_explicit_modes_and_unknown_ones():
    assert resolve_quantization("float32", "cpu").torch_dtype == torch.float32
    bf16 = resolve_quantization("bf16", "cpu")
    assert bf16.mode == "bf16" and bf16.bnb_config is None and "as asked" in bf16.message
    with pytest.raises(ValueError, match="Expected `quantization` to be one of"):
        resolve_quantization("8bit", "cpu")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_medgemma(tmp_path_factory.mktemp("medgemma"))


@needs_bnb_cpu
def test_4bit_loading_on_the_cpu_quantises_the_linear_layers_and_runs(tiny_path, capsys):
    import bitsandbytes

    family = get_family("medgemma")
    model, processor = family.load(str(tiny_path), quantization="auto", device="cpu")
    assert "4-bit NF4" in capsys.readouterr().out
    assert model.vlm_quantization.mode == "4bit" and model.is_loaded_in_4bit
    language = [m for n, m in model.named_modules() if n.startswith("model.language_model.layers.")]
    quantised = [m for m in language if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert len(quantised) == 7 * model.config.text_config.num_hidden_layers
    assert all(m.weight.quant_type == "nf4" for m in quantised)
    assert not isinstance(model.lm_head, bitsandbytes.nn.Linear4bit)

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(2)]
    batch = family.training_batch(processor, images, [target_answer(1), target_answer(0)])
    reference, _ = family.load(str(tiny_path), quantization="float32")
    with torch.no_grad():
        logits = model(**batch).logits.float()
        expected = reference(**batch).logits
    assert torch.isfinite(logits).all()
    # 4-bit weights and bf16 compute are not float32: the logits agree only roughly.
    correlation = np.corrcoef(logits.flatten().numpy(), expected.flatten().numpy())[0, 1]
    assert correlation > 0.9, correlation

    # QLoRA: float32 adapters over the 4-bit weights get gradients.
    model = add_lora(model, family, LoraSettings(rank=4, alpha=8, dropout=0.0), gradient_checkpointing=True)
    model.train()
    model(**batch).loss.backward()
    adapters = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert adapters and all(p.dtype == torch.float32 and p.grad is not None for _, p in adapters)
    assert any(float(p.grad.abs().max()) > 0 for _, p in adapters)


def test_bf16_loading_when_4bit_is_unsupported(tiny_path, monkeypatch, capsys):
    pytest.importorskip("bitsandbytes")
    _no_cpu_backend(monkeypatch)
    model, _ = get_family("medgemma").load(str(tiny_path), quantization="auto", device="cpu")
    assert "NOT in 4 bits" in capsys.readouterr().out
    assert model.vlm_quantization.mode == "bf16" and not getattr(model, "is_loaded_in_4bit", False)
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


@needs_bnb_cpu
def test_4bit_layers_too_narrow_for_the_avx512_bf16_kernel_run_on_the_generic_path(tiny_path):
    # On a CPU with AVX512-BF16 bitsandbytes repacks each 4-bit layer for its kernel on the first inference
    # call; that needs an output width that is a multiple of 32 and an input width that is a multiple of
    # the block (64). Simulated here on any CPU: the flag bitsandbytes sets from the CPU, set by hand.
    import bitsandbytes

    family = get_family("medgemma")
    model, processor = family.load(str(tiny_path), quantization="4bit", device="cpu")
    layers = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    fits = {id(m): m.out_features % 32 == 0 and m.in_features % m.weight.quant_state.blocksize == 0 for m in layers}
    assert not all(fits.values()) and any(fits.values())  # the tiny model has both kinds
    for layer in layers:  # only the narrow ones: the kernel itself needs the instructions
        layer.support_avx512bf16_for_cpu = not fits[id(layer)]
    rng = np.random.default_rng(3)
    batch = family.prompt_batch(processor, [rng.integers(0, 256, (32, 32), dtype=np.uint8)])
    model.eval()
    with pytest.raises(RuntimeError, match="is invalid for input of size"), torch.no_grad():
        model(**batch)  # what failed on such CPUs
    model, processor = family.load(str(tiny_path), quantization="4bit", device="cpu")
    layers = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = True
    assert fit_cpu_4bit_kernels(model) == sum(not f for f in fits.values())
    assert [m.support_avx512bf16_for_cpu for m in layers] == [
        m.out_features % 32 == 0 and m.in_features % m.weight.quant_state.blocksize == 0 for m in layers
    ]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False  # the kernel needs AVX512-BF16; the narrow ones stay generic
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


@needs_bnb_cpu
def test_a_model_repacked_for_the_avx512_bf16_kernel_is_unpacked_before_it_trains(tiny_path):
    # On an AVX512-BF16 CPU the first inference call (the training loop's validation pass) repacks each
    # 4-bit layer for a kernel with no backward pass; the next training step failed there. Simulated on
    # any CPU: the layers bitsandbytes would repack, repacked by its own function.
    import bitsandbytes
    from bitsandbytes import functional

    family = get_family("medgemma")
    model, processor = family.load(str(tiny_path), quantization="4bit", device="cpu")
    layers = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    packable = [m for m in layers if m.out_features % 32 == 0 and m.in_features % m.weight.quant_state.blocksize == 0]
    assert packable
    original = {id(m): (m.weight.data.clone(), _dequantised(m)) for m in packable}
    for m in packable:
        w = m.weight
        w.data, w.quant_state = functional._convert_weight_packed_for_cpu(w.data, w.quant_state)
        m.support_avx512bf16_for_cpu = True
    assert all(m.weight.quant_state.packing_format_for_cpu for m in packable)

    model = add_lora(model, family, LoraSettings(rank=4, alpha=8, dropout=0.0), gradient_checkpointing=True)
    for m in packable:  # the codes as loaded; the scales through bf16 and back (double quantisation)
        assert not m.weight.quant_state.packing_format_for_cpu and not m.support_avx512bf16_for_cpu
        codes, weight = original[id(m)]
        assert torch.equal(m.weight.data, codes)
        torch.testing.assert_close(_dequantised(m), weight, rtol=2e-2, atol=1e-3)
    assert not any(m.support_avx512bf16_for_cpu for m in layers)  # validation passes cannot repack them again

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(2)]
    batch = family.training_batch(processor, images, [target_answer(1), target_answer(0)])
    model.train()
    model(**batch).loss.backward()
    adapters = [p for p in model.parameters() if p.requires_grad]
    assert adapters and any(float(p.grad.abs().max()) > 0 for p in adapters if p.grad is not None)


def _dequantised(layer):
    from bitsandbytes import functional

    return functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
