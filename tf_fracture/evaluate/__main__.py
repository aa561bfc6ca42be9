"""``tf-fracture evaluate RUN [RUN ...]``: each run's report, and a comparison for several.

tf-fracture evaluate runs/demo
tf-fracture evaluate runs/cbam runs/no-cbam --dataset fracatlas --split test --out runs/ablation
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tf_fracture import cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture evaluate",
        description=(
            "Evaluate trained runs: thresholds (0.5, Youden, target sensitivity) chosen on the validation split, "
            "metrics with 95%% bootstrap CIs on the scored split, per study (MURA) and per body part, and the "
            "shortcut tests the data allow (AUROC within body regions and without hardware, a metadata-only "
            "baseline, box hit rates of the CAM and Grad-CAM, occlusion of the fracture box, counterfactual pairs "
            "on synthetic_xray); writes metrics.json, report.md and PNG figures. Several runs also get a "
            "side-by-side comparison with paired bootstrap AUROC differences."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (config.json + model.keras)")
    parser.add_argument("--dataset", help="dataset to score (default: each run's config.json)")
    parser.add_argument("--builder-config", help="TFDS builder config (default: the run's, or the dataset's default)")
    parser.add_argument("--split", help="the split scored (default: the run's test split)")
    parser.add_argument(
        "--validation-split", help="the split the thresholds are chosen on (default: the run's validation split)"
    )
    parser.add_argument(
        "--target-sensitivity", type=float, help="screening target (default: the run's train.target_sensitivity)"
    )
    parser.add_argument(
        "--out",
        help="report folder for one run (default RUN/evaluation/<dataset>-<split>); for several runs each report "
        "goes to OUT/<run name>/ and the comparison to OUT (default: each run's folder, and "
        "<their common parent>/comparison-<dataset>-<split>)",
    )
    parser.add_argument("--data-dir", help="TFDS data dir (default: the run's)")
    parser.add_argument("--manual-dir", help="manually downloaded data (FracAtlas, MURA, elbow; default: the run's)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000; 0: no CIs)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's batch size)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--no-shortcut-tests",
        dest="shortcut_tests",
        action="store_false",
        help="skip the shortcut tests (strata, metadata baseline, box hit rates, occlusion, counterfactual pairs)",
    )
    parser.add_argument(
        "--counterfactual-pairs",
        type=int,
        default=300,
        metavar="N",
        help="synthetic_xray: at most N scenes of the scored split rendered with and without their fracture "
        "(default 300; 0: none)",
    )
    parser.add_argument(
        "--allow-same-split",
        action="store_true",
        help="allow scoring the split the thresholds are chosen on (optimistic threshold metrics)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    import tf_fracture.datasets  # noqa: F401  (registers the TFDS builders: an entry point's job)

    cli.progress_bars_on_terminal_only()
    from tf_fracture.evaluate.compare import write_comparison
    from tf_fracture.evaluate.evaluation import default_out_dir, evaluate_run

    if args.counterfactual_pairs < 0:
        parser.error(f"--counterfactual-pairs must be 0 or more, but got {args.counterfactual_pairs}")
    runs = [Path(r) for r in args.runs]
    names = [r.resolve().name for r in runs]
    if len(set(names)) != len(names):
        parser.error(f"runs are named by their folders, which must differ, but got {names}")
    several = len(runs) > 1
    evaluations = []
    for run, name in zip(runs, names, strict=True):
        out = None
        if args.out:
            out = Path(args.out) / name if several else Path(args.out)
        try:
            evaluation = evaluate_run(
                run,
                dataset=args.dataset,
                split=args.split,
                validation_split=args.validation_split,
                target_sensitivity=args.target_sensitivity,
                out_dir=out,
                n_resamples=args.resamples,
                builder_config=args.builder_config,
                data_dir=args.data_dir,
                manual_dir=args.manual_dir,
                batch_size=args.batch_size,
                seed=args.seed,
                allow_same_split=args.allow_same_split,
                shortcut_tests=args.shortcut_tests,
                counterfactual_pairs=args.counterfactual_pairs,
            )
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {run}: {error}", file=sys.stderr)
            return 2
        out = out or default_out_dir(run, evaluation.dataset, evaluation.split)
        print(f"{name}: report in {out / 'report.md'}")
        evaluations.append(evaluation)
    print()
    print(summary_table(evaluations))
    if several:
        first = evaluations[0]
        out = Path(args.out) if args.out else _common_parent(runs) / f"comparison-{first.dataset}-{first.split}"
        write_comparison(evaluations, out)
        print(f"\ncomparison in {out / 'comparison.md'}")
    return 0


def summary_table(evaluations) -> str:
    """A short plain-text table: each run's AUROC, AP and the Youden operating point, with 95% CIs."""
    from tf_fracture.evaluate.report import fmt

    rows = [("run", "level", "n", "AUROC [95% CI]", "AP [95% CI]", "sens @Youden", "spec @Youden")]
    for e in evaluations:
        r = e.levels[e.primary].result
        youden = r.at_thresholds["youden"].metrics
        rows.append(
            (
                e.name,
                e.primary,
                str(r.n),
                fmt(r.ranking["auroc"]),
                fmt(r.ranking["average_precision"]),
                fmt(youden["recall"], 2),
                fmt(youden["specificity"], 2),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _common_parent(runs: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(r.resolve().parent) for r in runs]))


if __name__ == "__main__":
    sys.exit(main())
