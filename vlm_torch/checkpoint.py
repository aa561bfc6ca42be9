"""The resumable training state of a VLM run, written atomically.

::

    RUN/checkpoint/
      trainable.safetensors   every trainable parameter (the LoRA adapter, and the projector's if adapted), by name
      optimizer.pt            the optimizer's and the LR scheduler's state dicts and the torch RNG states
      state.json              the optimizer step, the running epoch loss, the history so far, Python's RNG state

A checkpoint is written to ``checkpoint.tmp/`` and swapped in by renames, so that a run stopped at any moment
leaves either the previous checkpoint or the new one, never half of one. Restoring puts the adapter, the
optimizer, the schedule and the random generators (torch's CPU and CUDA ones, which LoRA dropout
draws from, and Python's) back where they were: training continued from a
checkpoint takes the same steps as training that never stopped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tf_fracture.run_folder import write_json

CHECKPOINT = "checkpoint"
_TMP = CHECKPOINT + ".tmp"
_OLD = CHECKPOINT + ".old"
_WEIGHTS = "trainable.safetensors"
_OPTIMIZER = "optimizer.pt"
_STATE = "state.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by their full names (what training changes; the frozen base is not saved)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir: str | os.PathLike, model, optimizer, scheduler, state: dict[str, Any]) -> Path:
    """Write ``RUN/checkpoint/`` atomically; ``state`` must be JSON-serialisable (step, losses, history)."""
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / _TMP, run_dir / CHECKPOINT, run_dir / _OLD
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / _WEIGHTS))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        tmp / _OPTIMIZER,
    )
    full_state = dict(state)
    full_state["python_rng"] = _to_json(random.getstate())
    write_json(tmp / _STATE, full_state)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run's last complete checkpoint, or None. A run stopped between the two renames of
    `save_checkpoint` left only ``checkpoint.old``, which is then the last complete one."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / CHECKPOINT, run_dir / _OLD):
        if (candidate / _STATE).is_file():
            return candidate
    return None


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore the trainable parameters, optimizer, scheduler and RNG states from ``path``; return the state."""
    path = Path(path)
    weights = load_file(str(path / _WEIGHTS))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint in {path} does not fit this model's trainable parameters (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): was the run started with other LoRA settings or another model? "
            "Rerun with --overwrite to start again, or use another --run-dir."
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    saved = torch.load(path / _OPTIMIZER, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state = json.loads((path / _STATE).read_text())
    random.setstate(_to_tuple(state.pop("python_rng")))
    return state


def remove_checkpoint(run_dir: str | os.PathLike) -> None:
    for name in (CHECKPOINT, _TMP, _OLD):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)


def _to_json(value):
    return [_to_json(v) for v in value] if isinstance(value, tuple | list) else value


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
