"""``tf-fracture explain``: overlays of the model's own CAM and of Grad-CAM over images, or
over a dataset split's positives with each heatmap's box hit rate beside chance.

    tf-fracture explain runs/demo a.png b.dcm --out heatmaps/
    tf-fracture explain runs/fracatlas --dataset fracatlas --split test --limit 100
"""

from __future__ import annotations

import argparse
import sys

from tf_fracture import cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture explain",
        description=(
            "Heatmaps over the radiograph: the classifier's own class activation map (CAM, whose mean is the "
            "logit) and Grad-CAM, one per backbone (one per member of a fusion model, which has no CAM). "
            "Give image files for one PNG each, or --dataset for the first positives of a split with their "
            "fracture boxes and each heatmap's box hit rate (how often its peak falls inside a box) beside "
            "chance (the boxes' area share)."
        ),
    )
    parser.add_argument("run", help="a training run folder (its model.keras) or a .keras file")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG or DICOM); unreadable ones are skipped")
    parser.add_argument("--out", help="output folder (default: RUN/explain, or RUN/explain/<dataset>-<split>)")
    parser.add_argument("--dataset", help="explain a dataset split instead of files, e.g. fracatlas")
    parser.add_argument("--builder-config", help="the dataset's TFDS config (default: the run's, else the dataset's)")
    parser.add_argument("--split", default="test", help="the split to explain (default: test)")
    parser.add_argument("--limit", type=int, default=50, help="how many positives to explain (default: 50)")
    parser.add_argument("--data-dir", help="TFDS data dir (default: the run's, else TFDS' default)")
    parser.add_argument("--manual-dir", help="where the manually downloaded data lies (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per Grad-CAM batch (default: 8)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    import tf_fracture.datasets  # noqa: F401  (registers the TFDS builders: an entry point's job)

    if bool(args.images) == bool(args.dataset):
        parser.error("give either image files or --dataset (not both, not neither)")
    if args.limit < 1 or args.batch_size < 1:
        parser.error("--limit and --batch-size must be positive integers")

    try:
        return _explain(parser, args)
    except cli.USER_ERRORS as error:
        return cli.user_error(parser.prog, error, args.verbose)


def _explain(parser, args) -> int:
    from pathlib import Path

    from tf_fracture.explain import report

    explainer = report.load_for_explanation(args.run)
    out = Path(args.out) if args.out else report.default_out_dir(args.run)
    own = ""
    if explainer.own_cam is not None:
        own = "the model's own CAM and " if len(explainer.own_cam.names) == 1 else "each member's own CAM and "
    print(f"explaining {explainer.source}: {own}Grad-CAM of {', '.join(explainer.names)}")
    if args.images:
        from tf_fracture.data.io import list_skipped

        result = report.explain_files(explainer, args.images, out, batch_size=args.batch_size)
        for path, probability in result.probabilities.items():
            print(f"  {path}: P(fracture) = {probability:.3f}")
        list_skipped("explain", "image(s) unreadable, skipped", result.skipped)
        skipped = f", {len(result.skipped)} skipped (listed above)" if result.skipped else ""
        print(f"{len(result.written)} overlay(s) in {out}{skipped}")
        return 0 if result.written or not result.skipped else 1

    from tf_fracture.configs.datasets import get_dataset_spec
    from tf_fracture.data.sources import load_split

    spec = get_dataset_spec(args.dataset)
    if not spec.boxes_feature:
        parser.error(f"dataset {args.dataset!r} has no fracture boxes: the box hit rate needs e.g. fracatlas")
    data = _run_data_config(args.run)
    same = data.get("dataset") == args.dataset
    builder_config = args.builder_config or (data.get("builder_config") if same else None)
    data_dir = args.data_dir or data.get("data_dir")
    manual_dir = args.manual_dir or (data.get("manual_dir") if same else None)
    split = load_split(
        args.dataset, args.split, builder_config=builder_config, data_dir=data_dir, manual_dir=manual_dir
    )
    name = f"{args.dataset}-{args.split}"
    out = Path(args.out) if args.out else out / name
    description = {"dataset": args.dataset, "builder_config": builder_config, "split": args.split, "limit": args.limit}
    result = report.explain_examples(
        explainer,
        split.as_numpy_iterator(),
        out,
        limit=args.limit,
        boxes_feature=spec.boxes_feature,
        batch_size=args.batch_size,
        description=description,
    )
    print(f"{name}: {result['positives']} positive(s) explained, overlays and {report.HIT_RATE_FILE} in {out}")
    for line in report.summary_lines(result):
        print(f"  {line}")
    return 0


def _run_data_config(run) -> dict:
    """The run's ``config.json`` data section, or {} for a bare ``.keras`` file."""
    from pathlib import Path

    from tf_fracture.run_folder import RunFolder

    folder = RunFolder(run)
    if not Path(run).is_dir() or not folder.config.is_file():
        return {}
    return folder.read_config().get("data", {})


if __name__ == "__main__":
    sys.exit(main())
