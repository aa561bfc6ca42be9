"""LoRA on a tiny random Gemma-3 model: training lowers the loss, the adapter changes the outputs, only the
adapter is saved, merging keeps the logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from vlm_tiny import make_tiny_medgemma  # noqa: E402

from vlm_torch.config import LoraSettings  # noqa: E402
from vlm_torch.families import get_family  # noqa: E402
from vlm_torch.lora import add_lora, language_model_linear_names  # noqa: E402
from vlm_torch.prompts import target_answer  # noqa: E402

SETTINGS = LoraSettings(rank=4, alpha=8, dropout=0.0)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_medgemma(tmp_path_factory.mktemp("medgemma"))


@pytest.fixture(scope="module")
def batch(tiny_path):
    family = get_family("medgemma")
    _, processor = family.load(str(tiny_path), quantization="float32")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(2)]
    return family.training_batch(processor, images, [target_answer(1), target_answer(0)])


def _load(tiny_path):
    family = get_family("medgemma")
    model, _ = family.load(str(tiny_path), quantization="float32")
    return family, model


def _train(model, batch, steps=4, lr=1e-2):
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@pytest.fixture(scope="module")
def trained(tiny_path, batch):
    family, model = _load(tiny_path)
    model = add_lora(model, family, SETTINGS, gradient_checkpointing=True)
    losses = _train(model, batch)
    return model, losses


def test_only_the_adapters_train_and_checkpointing_is_on(trained):
    model, _ = trained
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert all("language_model" in name for name in trainable)
    assert len(trainable) == 2 * 7 * 2  # A and B for 7 projections in each of 2 layers
    assert model.get_base_model().is_gradient_checkpointing


def test_a_few_lora_steps_lower_the_loss_on_a_fixed_batch(trained, batch):
    model, losses = trained
    with torch.no_grad():
        after = float(model(**batch).loss)
    assert after < 0.8 * losses[0], (losses, after)


def test_the_adapter_changes_the_outputs(trained, batch):
    model, _ = trained
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
    assert float((adapted - base).abs().max()) > 1e-2


def test_a_fresh_adapter_is_the_identity(tiny_path, batch):
    family, model = _load(tiny_path)
    with torch.no_grad():
        before = model(**batch).logits
    model = add_lora(model, family, SETTINGS, gradient_checkpointing=False)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before)  # LoRA's B starts at zero


def test_only_the_adapter_is_saved(trained, tiny_path, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert files - {"README.md"} == {"adapter_model.safetensors", "adapter_config.json"}
    weights = load_file(tmp_path / "adapter_model.safetensors")
    assert len(weights) == 2 * 7 * 2 and all(".lora_A." in key or ".lora_B." in key for key in weights)
    base_size = (tiny_path / "model.safetensors").stat().st_size
    assert (tmp_path / "adapter_model.safetensors").stat().st_size < 0.25 * base_size
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    base = model.get_base_model()
    assert sorted(config["target_modules"]) == sorted(get_family("medgemma").lora_target_modules(base))


def test_a_saved_adapter_reloads_to_the_same_outputs(trained, tiny_path, batch, tmp_path):
    from peft import PeftModel

    model, _ = trained
    model.save_pretrained(tmp_path)
    _, base = _load(tiny_path)
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_merging_gives_the_same_logits(tiny_path, batch, trained, tmp_path):
    from peft import PeftModel

    model, _ = trained
    model.save_pretrained(tmp_path)
    _, base = _load(tiny_path)
    adapted = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        expected = adapted(**batch).logits
        merged = adapted.merge_and_unload()
        assert not any("lora" in name for name, _ in merged.named_parameters())
        logits = merged(**batch).logits
    scale = float(expected.abs().max())
    torch.testing.assert_close(logits, expected, atol=1e-5 * scale, rtol=1e-5)


def test_linear_names_need_prefixes_that_fit_the_model(tiny_path):
    _, model = _load(tiny_path)
    with pytest.raises(ValueError, match="no linear layer under"):
        language_model_linear_names(model, ["language_model"])  # module paths start at the top: model.language_model
    names = language_model_linear_names(model, ["model"])
    assert not any("lm_head" in name for name in names)
