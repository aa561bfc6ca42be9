"""LoRA fine-tuning of a VLM (MedGemma, LLaVA-Rad) on an exported split: ``python -m vlm_torch.train``.

::

    python -m vlm_torch.train --model medgemma --model-path google/medgemma-4b-it --data splits --run-dir runs/medgemma
    python -m vlm_torch.train --model llava_rad --model-path llava-rad-hf --data splits --run-dir runs/llava-rad
    python -m vlm_torch.train ... --epochs 1 --limit 64 --quantization float32    # a quick trial

The run starts from the model's preset (`vlm_torch.config.get_preset`: the method's hyper-parameters); each
flag overrides one field. LoRA (PEFT) on every linear layer of the language model, base weights in 4 bits
where bitsandbytes supports the device, AdamW with weight decay, linear decay to 0, gradient accumulation,
gradient clipping and gradient checkpointing. Each epoch visits the training split in a new order drawn from
(seed, epoch), and ends with the validation loss when the data has a validation split.

The run folder::

    RUN/
      config.json   the resolved VLMConfig, the model path, the data, the quantisation used (written first)
      history.csv   one row per epoch: epoch, step, train_loss, val_loss, learning_rate
      checkpoint/   the resumable state (vlm_torch.checkpoint), every --checkpoint-every steps and at epoch ends;
                    removed when the run finishes
      adapter/      written last: the adapter's weights and adapter_config.json (PEFT ``save_pretrained``), never
                    the base weights; load it with ``PeftModel.from_pretrained(base_model, RUN/adapter)``

Running the same command again after an interruption continues from the checkpoint and ends with the same
adapter as a run that was never stopped. A finished run (RUN/adapter exists) is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from tf_fracture.run_folder import write_json
from vlm_torch.checkpoint import find_checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from vlm_torch.config import PRESETS, QUANTIZATIONS, VLMConfig, get_preset
from vlm_torch.families import get_family
from vlm_torch.prompts import target_answer

CONFIG = "config.json"
HISTORY = "history.csv"
ADAPTER = "adapter"
VALIDATION = "validation"  # the split whose loss is reported after each epoch, when the export has it
HISTORY_FIELDS = ("epoch", "step", "train_loss", "val_loss", "learning_rate")
# What must not change between an interrupted run and its resumption (config.json keys).
_RESUME_KEYS = ("config", "model_path", "data", "limit")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    history: list[dict[str, Any]]
    resumed_from_step: int | None  # the checkpoint's optimizer step when the run continued one, else None


def epoch_order(num_records: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the records: a permutation drawn from (seed, epoch) alone, so
    that a resumed run visits them in the same order as one that never stopped."""
    return np.random.default_rng([seed, epoch]).permutation(num_records)


def steps_per_epoch(num_records: int, batch_size: int, grad_accumulation: int) -> int:
    """Optimizer steps per epoch: every ``grad_accumulation`` batches, the epoch's last (shorter) group included."""
    return math.ceil(math.ceil(num_records / batch_size) / grad_accumulation)


def train(
    config: VLMConfig,
    *,
    model_path: str,
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    limit: int | None = None,
    checkpoint_every: int = 50,
    overwrite: bool = False,
    device: str | None = None,
    family: Any = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``config.model`` with LoRA on ``data_dir``'s train split into ``run_dir`` (see the module docstring).

    Args:
        config: the resolved configuration (a preset with overrides).
        model_path: the base model's folder (or hub id) that the family's ``load`` reads.
        data_dir: an exported split folder (``tf-fracture export-split``): ``train/`` and
            optionally ``validation/``.
        limit: use only the first ``limit`` records of each split (a quick trial).
        checkpoint_every: write the resumable state every this many optimizer steps (and at each epoch's end).
        overwrite: start again even when ``run_dir`` holds a finished or an unfinished run.
        device: "cuda", "cpu", ...; the default is CUDA when available.
        family: the model family (default ``get_family(config.model)``).
    """
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of records, got {limit!r}")
    if checkpoint_every <= 0:
        raise ValueError(f"checkpoint_every must be a positive number of optimizer steps, got {checkpoint_every!r}")
    run = Path(run_dir)
    settings = config.train
    family = family if family is not None else get_family(config.model)
    identity = {
        "config": config.to_dict(),
        "model_path": _as_given_or_absolute(model_path),
        "data": os.path.abspath(data_dir),
        "limit": limit,
    }
    checkpoint = _prepare_run_dir(run, identity, overwrite)

    data = importlib.import_module("vlm_torch.data")
    train_records = data.take(data.read_split(data_dir, "train"), limit)
    if not train_records:
        raise ValueError(f"{data_dir} has no training records: export the splits with tf-fracture export-split")
    has_validation = VALIDATION in data.available_splits(data_dir)
    val_records = data.take(data.read_split(data_dir, VALIDATION), limit) if has_validation else []

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = importlib.import_module("vlm_torch.precision")
    quantization = precision.resolve_quantization(config.quantization, device)
    _seed_everything(settings.seed)
    model, processor = family.load(
        str(model_path), quantization=quantization.mode, image_size=config.image_size, device=str(device)
    )
    if getattr(model, "vlm_quantization", None) is not None:  # the family resolved (and printed) it itself
        quantization = model.vlm_quantization
    else:
        print(quantization.message, flush=True)
    if quantization.mode != "4bit":  # 4-bit weights are placed by from_pretrained and cannot be moved
        model.to(device)
    write_json(
        run / CONFIG,
        {
            **identity,
            "quantization": {
                "requested": config.quantization,
                "used": quantization.mode,
                "message": quantization.message,
            },
            "device": str(device),
            "checkpoint_every": checkpoint_every,
            "records": {"train": len(train_records), "validation": len(val_records)},
        },
    )

    lora = importlib.import_module("vlm_torch.lora")
    model = lora.add_lora(model, family, config.lora, gradient_checkpointing=settings.gradient_checkpointing)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("add_lora left no trainable parameter: check the family's lora_target_modules")
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    per_epoch = steps_per_epoch(len(train_records), settings.batch_size, settings.grad_accumulation)
    total_steps = settings.epochs * per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, total_steps)

    state: dict[str, Any] = {"step": 0, "epoch_loss_sum": 0.0, "epoch_loss_count": 0, "history": [], "skipped": {}}
    resumed_from = None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler)  # also restores every RNG
        resumed_from = state["step"]
        print(f"Resuming {run} at optimizer step {resumed_from} of {total_steps}", flush=True)

    def batch_loss(indices: Sequence[int], records) -> torch.Tensor | None:
        loaded = list(
            data.iter_images(
                [records[i] for i in indices],
                preprocess=config.preprocess,
                image_size=config.image_size,
                skipped=state["skipped"],  # unreadable images: skipped, logged, counted at the end
            )
        )
        if not loaded:
            return None
        chosen, images = zip(*loaded, strict=True)
        batch = family.training_batch(processor, images, [target_answer(r.label) for r in chosen])
        return model(**_to_model(batch, model)).loss

    input_device = model.get_input_embeddings().weight.device
    print(
        f"Training {config.model} on {len(train_records)} images ({len(val_records)} validation) for "
        f"{settings.epochs} epochs: {total_steps} optimizer steps of {settings.batch_size} x "
        f"{settings.grad_accumulation} images on {input_device}, "
        f"{sum(p.numel() for p in params):,} trainable parameters",
        flush=True,
    )
    step = state["step"]
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    for epoch in range(step // per_epoch, settings.epochs):
        order = epoch_order(len(train_records), settings.seed, epoch)
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        for group_index in range(step - epoch * per_epoch, per_epoch):
            group = batches[group_index * settings.grad_accumulation : (group_index + 1) * settings.grad_accumulation]
            model.train()
            for indices in group:
                loss = batch_loss(indices, train_records)
                if loss is None:
                    continue
                (loss / len(group)).backward()
                state["epoch_loss_sum"] += float(loss.detach())
                state["epoch_loss_count"] += 1
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state["step"] = step
            mean_loss = state["epoch_loss_sum"] / max(state["epoch_loss_count"], 1)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            end_of_epoch = group_index == per_epoch - 1
            if end_of_epoch:
                val_loss = _validation_loss(model, val_records, settings.batch_size, batch_loss, progress)
                state["history"].append(
                    {
                        "epoch": epoch + 1,
                        "step": step,
                        "train_loss": mean_loss,
                        "val_loss": val_loss,
                        "learning_rate": scheduler.get_last_lr()[0],
                    }
                )
                state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
                _write_history(run / HISTORY, state["history"])
                shown = "" if val_loss is None else f", validation loss {val_loss:.4f}"
                bar.write(f"epoch {epoch + 1}/{settings.epochs}: training loss {mean_loss:.4f}{shown}")
            if end_of_epoch or step % checkpoint_every == 0:
                save_checkpoint(run, model, optimizer, scheduler, state)
    bar.close()

    adapter_dir = _save_adapter(model, run)
    remove_checkpoint(run)
    if state["skipped"]:
        print(f"{len(state['skipped'])} unreadable image(s) were skipped (listed in the log above)", flush=True)
    print(f"Adapter in {adapter_dir}; history in {run / HISTORY}", flush=True)
    return TrainResult(run, adapter_dir, state["history"], resumed_from)


def _prepare_run_dir(run: Path, identity: dict[str, Any], overwrite: bool) -> Path | None:
    """Refuse a finished run, clear it with ``overwrite``, and return the checkpoint to continue from, if any."""
    if overwrite:
        for name in (CONFIG, HISTORY):
            (run / name).unlink(missing_ok=True)
        shutil.rmtree(run / ADAPTER, ignore_errors=True)
        remove_checkpoint(run)
    if (run / ADAPTER).exists():
        raise FileExistsError(
            f"{run} holds a finished run ({run / ADAPTER} exists): pass --overwrite to train again into it, "
            "or choose another --run-dir"
        )
    run.mkdir(parents=True, exist_ok=True)
    checkpoint = find_checkpoint(run)
    if checkpoint is None:
        return None
    saved = json.loads((run / CONFIG).read_text()) if (run / CONFIG).is_file() else {}
    changed = [key for key in _RESUME_KEYS if saved.get(key) != identity[key]]
    if changed:
        raise ValueError(
            f"{run} holds an unfinished run with another {', '.join(changed)} than this command's: rerun the "
            f"command that started it to resume it, pass --overwrite to start again, or choose another --run-dir"
        )
    return checkpoint


def _validation_loss(model, records, batch_size: int, batch_loss, progress: bool) -> float | None:
    if not records:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in tqdm(
            range(0, len(records), batch_size), desc="validation", leave=False, disable=not progress, dynamic_ncols=True
        ):
            indices = range(start, min(start + batch_size, len(records)))
            loss = batch_loss(indices, records)
            if loss is not None:
                total += float(loss) * len(indices)
                count += len(indices)
    model.train()
    return total / count if count else None


def _to_model(batch, model) -> dict[str, Any]:
    """The batch's tensors on the model's input device; floating tensors (pixel values) in the dtype of its
    input embeddings (bf16 for a bf16 model, float32 for a float32 or a k-bit-prepared one)."""
    weight = model.get_input_embeddings().weight
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            dtype = weight.dtype if value.is_floating_point() else None
            value = value.to(device=weight.device, dtype=dtype)
        moved[key] = value
    return moved


def _save_adapter(model, run: Path) -> Path:
    """PEFT's ``save_pretrained`` (adapter weights + adapter_config.json) into RUN/adapter, atomically."""
    final, tmp = run / ADAPTER, run / (ADAPTER + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tmp.rename(final)
    return final


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in HISTORY_FIELDS})
    os.replace(tmp, path)


def _as_given_or_absolute(model_path: str) -> str:
    # A local folder is recorded absolute (the run can be resumed from anywhere); a hub id as given.
    return os.path.abspath(model_path) if os.path.exists(model_path) else str(model_path)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture vlm-train",
        description="LoRA fine-tuning of a VLM on an exported split, from the model's preset (the method's values).",
    )
    parser.add_argument("--model", required=True, choices=sorted(PRESETS), help="the VLM family and its preset")
    parser.add_argument("--model-path", required=True, help="the base model's folder (or hub id)")
    parser.add_argument("--data", required=True, help="an exported split folder (tf-fracture export-split)")
    parser.add_argument("--run-dir", default=None, help="the run folder (default runs/vlm-<model>)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=None, help="base weights (default: preset's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (before accumulation)")
    parser.add_argument("--grad-accumulation", type=int, default=None, help="steps per optimizer step")
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--lora-alpha", type=int, default=None)
    parser.add_argument("--include-projector", action="store_true", help="also adapt the vision projector's layers")
    parser.add_argument("--preprocess", action="store_true", help="CLAHE + unsharp masking (the CNN side's) first")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N records of each split")
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, needs more memory")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between checkpoints")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--overwrite", action="store_true", help="train again into a run folder that holds a run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> VLMConfig:
    """The model's preset with the command line's overrides."""
    config = get_preset(args.model)
    train_changes = {
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "grad_accumulation": args.grad_accumulation,
        "seed": args.seed,
    }
    train_changes = {key: value for key, value in train_changes.items() if value is not None}
    if args.no_gradient_checkpointing:
        train_changes["gradient_checkpointing"] = False
    lora_changes = {"rank": args.lora_rank, "alpha": args.lora_alpha}
    lora_changes = {key: value for key, value in lora_changes.items() if value is not None}
    if args.include_projector:
        lora_changes["include_projector"] = True
    changes: dict[str, Any] = {"train": train_changes, "lora": lora_changes}
    if args.quantization is not None:
        changes["quantization"] = args.quantization
    if args.preprocess:
        changes["preprocess"] = True
    return config.replace(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        build_parser().error(str(error))
    run_dir = args.run_dir or os.path.join("runs", f"vlm-{args.model}")
    try:
        train(
            config,
            model_path=args.model_path,
            data_dir=args.data,
            run_dir=run_dir,
            limit=args.limit,
            checkpoint_every=args.checkpoint_every,
            overwrite=args.overwrite,
            device=args.device,
            progress=not args.no_progress,
        )
    except (ValueError, OSError) as error:  # what the user can fix (a path, a finished run, no hub): no traceback
        build_parser().error(str(error))
    except KeyboardInterrupt:
        checkpoint = os.path.join(run_dir, "checkpoint")
        saved = os.path.isdir(checkpoint)
        where = f"the last checkpoint is in {checkpoint}" if saved else "no checkpoint was written yet"
        print(f"\nInterrupted: {where}; run the same command again to continue.", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
