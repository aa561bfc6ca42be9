"""``tf-fracture train``: train an experiment into a run folder, then evaluate it.

    tf-fracture train                                   # the demo: synthetic_xray, then its evaluation
    tf-fracture train --preset paper --stage pretrain --backbone convnext --weights imagenet
    tf-fracture train --preset paper --stage finetune --backbone convnext \
        --init-from runs/paper-pretrain-convnext
    tf-fracture train --set train.epochs=3 --set data.image_size=128 --run-dir runs/short
    tf-fracture train --config runs/demo/config.json --run-dir runs/demo-again   # repeat a run

The run folder defaults to ``runs/<experiment name>``: running the same command again resumes an
interrupted run exactly where its last completed epoch left it (and does not retrain a finished one).
"""

from __future__ import annotations

import argparse
import os
import sys

from tf_fracture import cli
from tf_fracture.run_folder import RunFolder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture train",
        description="Train a fracture classifier (or the fusion ensemble) into a run folder, then evaluate it. "
        "With no arguments: the built-in demo on synthetic_xray.",
        epilog="The same command again resumes an interrupted run from its last completed epoch.",
    )
    parser.add_argument("--preset", default=None, help="a named experiment: demo (default) or paper")
    parser.add_argument("--stage", default=None, help="the preset's stage (paper: pretrain, finetune, ensemble)")
    parser.add_argument("--backbone", default=None, help="backbone family (convnext, efficientnetv2, mobilenetv3)")
    parser.add_argument("--dataset", default=None, help="train on another dataset with the stage's hyper-parameters")
    parser.add_argument("--config", default=None, help="a config.json (e.g. RUN/config.json): repeat that run")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one field, e.g. --set train.epochs=3 --set data.image_size=128 (repeatable)",
    )
    parser.add_argument("--run-dir", default=None, help="the run folder (default runs/<experiment name>)")
    parser.add_argument("--weights", choices=["imagenet"], default=None, help="start from ImageNet weights")
    parser.add_argument("--init-from", default=None, metavar="RUN", help="start from an earlier run's weights")
    parser.add_argument("--mixed-precision", choices=["bf16", "fp16"], default=None, help="mixed precision")
    parser.add_argument("--xla", action="store_true", help="compile the training step with XLA")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluation after training")
    return parser


def resolve_experiment(args: argparse.Namespace):
    """The `ExperimentConfig` of the command line: a preset or a config file, then the flags and ``--set``."""
    from tf_fracture.configs import ExperimentConfig, get_experiment

    if args.config:
        chosen = [flag for flag in ("preset", "stage", "backbone", "dataset") if getattr(args, flag)]
        if chosen:
            raise ValueError(
                f"--config gives the whole experiment: drop --{', --'.join(chosen)} (or change fields with --set)."
            )
        experiment = ExperimentConfig.from_json(args.config)
    else:
        experiment = get_experiment(
            args.preset or "demo", stage=args.stage, backbone=args.backbone, dataset=args.dataset
        )
    flags = []
    if args.weights:
        flags.append(f"model.weights={args.weights}")
    if args.init_from:
        flags.append(f"model.init_from={args.init_from}")
    if args.mixed_precision:
        flags.append(f"train.mixed_precision={args.mixed_precision}")
    if args.xla:
        flags.append("train.xla=true")
    return experiment.override([*flags, *args.assignments])


def main(argv=None) -> int:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    import tf_fracture.datasets  # noqa: F401  (registers the TFDS builders: an entry point's job)

    cli.progress_bars_on_terminal_only()

    try:
        experiment = resolve_experiment(args)
    except cli.USER_ERRORS as error:
        return cli.user_error(parser.prog, error, args.verbose)
    run_dir = args.run_dir or os.path.join("runs", experiment.name)

    from tf_fracture.train.loop import train

    print(f"Training {experiment.name!r} ({experiment.model.backbone}) into {run_dir}", flush=True)
    try:
        summary = train(experiment, run_dir)
    except cli.USER_ERRORS as error:
        return cli.user_error(parser.prog, error, args.verbose)
    best = summary.get("best_val_auroc")
    print(
        f"Best model: {RunFolder(run_dir).path_of(summary['model'])} (epoch {summary['best_epoch']}, validation AUROC "
        f"{'n/a' if best is None else f'{best:.4f}'})",
        flush=True,
    )
    if not args.no_evaluate:
        from tf_fracture import metrics
        from tf_fracture.evaluate import evaluate_run

        evaluation = evaluate_run(run_dir)
        level = evaluation.levels[evaluation.primary]
        out = os.path.join(run_dir, "evaluation", f"{evaluation.dataset}-{evaluation.split}")
        print(
            f"{evaluation.dataset} {evaluation.split} AUROC {metrics.roc_auc(level.labels, level.scores):.4f}"
            f"{shortcut_summary(evaluation.shortcuts)}; report: {os.path.join(out, 'report.md')}",
            flush=True,
        )
    logs = os.path.join(run_dir, "logs")
    board = f", TensorBoard: tensorboard --logdir {logs}" if os.path.isdir(logs) else ""
    print(f"Results in {run_dir}: config.json, model.keras, history.csv, summary.json{board}", flush=True)
    warning = sanity_warning(experiment, best)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return 0


def shortcut_summary(shortcuts) -> str:
    """``", CAM box hit rate 0.91 (chance 0.01), ..."``: the evaluation's headline shortcut figures, or ""."""
    if shortcuts is None:
        return ""
    parts = []
    localisation = getattr(shortcuts, "localisation", None)
    if getattr(localisation, "hit_rate", None) and "cam" in localisation.hit_rate:
        chance = localisation.rates["cam"].chance_rate
        parts.append(f"CAM box hit rate {localisation.hit_rate['cam'].value:.3f} (chance {chance:.3f})")
    counterfactual = getattr(shortcuts, "counterfactual", None)
    if getattr(counterfactual, "logit", None) is not None:
        parts.append(f"fractured copy scores higher in {counterfactual.logit.share_higher.value:.1%} of pairs")
    return "".join(f", {part}" for part in parts)


# On the built-in synthetic radiographs a working model separates the classes almost perfectly.
SYNTHETIC_SANITY_AUROC = 0.95


def sanity_warning(experiment, best_val_auroc) -> str | None:
    """A warning when a run on synthetic_xray ends below the sanity bar (something is broken or too short)."""
    if experiment.data.dataset != "synthetic_xray" or best_val_auroc is None:
        return None
    if best_val_auroc >= SYNTHETIC_SANITY_AUROC:
        return None
    return (
        f"warning: validation AUROC {best_val_auroc:.3f} on synthetic_xray is below {SYNTHETIC_SANITY_AUROC}: "
        "on these synthetic radiographs that means the model did not learn the fracture (see the README, "
        "Training: how the demo learns)."
    )


if __name__ == "__main__":
    sys.exit(main())
