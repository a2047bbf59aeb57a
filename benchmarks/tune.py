"""Recipe tuning on the validation split only: named variations of a preset, side by side.

Each recipe is a preset plus JSON overrides, trained per seed in a fresh process; the result is
the best validation accuracy (the epoch `export` would publish), the epoch it came at and the
`model.fit` minutes. A recipe with `test_time_flip` also reports its best model's validation
accuracy without the flips (the same weights in a plain network): the flips' gain, paired.
The test split is never read, so recipes chosen here can be reported on it
once, with `python -m benchmarks.accuracy`, without having been fitted to it.

    python -m benchmarks.tune --preset cpu --seeds 1 --log-dir runs/logs \\
        --recipe 'base={}' --recipe 'pad={"augment": {"crop": "pad"}}'   # minutes per run
    python -m benchmarks.tune --smoke                                        # seconds
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
from typing import Any

from benchmarks import common

# Recipes are judged on this held-out share of the training split, even for a preset that
# trains on all of it (the `cpu` preset: chosen here, then fitted on every training image).
VALIDATION_FRACTION = 0.1


def worker(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: train `preset` + `overrides`, report validation figures only."""
    from tf_alexnet import config as config_lib
    from tf_alexnet.run_dir import RunDir
    from tf_alexnet.train import train

    overrides = {"validation_fraction": VALIDATION_FRACTION} | overrides
    config = config_lib.resolve(preset, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(pathlib.Path(tmp) / "run")
        metrics = train(config, run.root)
        history = run.read_history()
        without_flips = common.accuracy_without_flips(run.model_path(), config, "validation")
    return {
        "config": config.to_dict(),
        "best_val_accuracy": metrics["best_val_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs"],
        "fit_seconds": metrics["wall_seconds_last_session"],
        "train_images_per_second_median": metrics["train_images_per_second_median"],
        "precision": metrics["mixed_precision"] | {"policy": metrics["dtype_policy"]},
        "val_accuracy_by_epoch": [row.get("val_accuracy") for row in history],
        "best_val_accuracy_without_flips": without_flips,
    }


def parse_recipe(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME=JSON` -> (name, overrides)."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON. Received: {text!r}")
    try:
        parsed = json.loads(overrides)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{name}: overrides are not JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"{name}: overrides should be a JSON object")
    if parsed.get("validation_fraction", VALIDATION_FRACTION) == 0:
        raise argparse.ArgumentTypeError(f"{name}: tuning needs a validation split (not 0)")
    return name, parsed


def run(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:  # seeds outermost: a stopped run still compares every recipe
        for name, overrides in args.recipe:
            settings = {**overrides, "seed": seed, "manual_dir": str(common.MANUAL_DIR)}
            if args.smoke:
                settings |= {"train_examples": 512, "epochs": 1}
            log = args.log_dir / f"{args.name}-{name}-seed{seed}.log" if args.log_dir else None
            result = common.run_json(
                ["-c", "import json, sys; from benchmarks.tune import worker; "
                 f"print(json.dumps(worker({args.preset!r}, {settings!r}), default=str))"],
                timeout=4 * 3600,
                log=log,
            )  # fmt: skip
            runs.append({"recipe": name, "overrides": overrides, "seed": seed, **result})
            print(
                f"  {name} seed {seed}: best validation accuracy "
                f"{result['best_val_accuracy']:.4f} (epoch {result['best_epoch']}), "
                f"fit {result['fit_seconds'] / 60:.1f} min",
                flush=True,
            )
            write(args, runs)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = [r for r in runs if r["recipe"] == name]
        accuracy = [r["best_val_accuracy"] for r in mine]
        rows.append(
            {
                "recipe": name,
                "overrides": mine[0]["overrides"],
                "seeds": [r["seed"] for r in mine],
                "val_accuracy_mean": statistics.fmean(accuracy),
                "val_accuracy_min": min(accuracy),
                "val_accuracy_max": max(accuracy),
                "fit_minutes_median": common.median([r["fit_seconds"] / 60 for r in mine]),
                "fit_minutes_max": max(r["fit_seconds"] / 60 for r in mine),
                "policy": mine[0]["precision"]["policy"],
                "val_accuracy_without_flips_mean": common.mean_of(
                    mine, "best_val_accuracy_without_flips"
                ),
            }
        )
    return rows


def write(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    summary = summarize(runs)
    table = common.markdown_table(
        ["recipe", "overrides", "seeds", "val. acc. mean", "min-max", "fit min (median / max)",
         "policy", "same models without flips"],
        [
            [r["recipe"], f"`{json.dumps(r['overrides'])}`", len(r["seeds"]),
             f"{r['val_accuracy_mean']:.4f}",
             f"{r['val_accuracy_min']:.4f}-{r['val_accuracy_max']:.4f}",
             f"{r['fit_minutes_median']:.1f} / {r['fit_minutes_max']:.1f}", r["policy"],
             common.four_places(r["val_accuracy_without_flips_mean"])]
            for r in summary
        ],
    )  # fmt: skip
    page = (
        f"# Tuning the `{args.preset}` preset on the validation split\n\n"
        "Best validation accuracy (10% of the training split) per recipe; the test split is "
        "not read. Fit minutes are `model.fit` wall time, validation included.\n\n"
        f"{table}\n"
    )
    settings = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}
    result = {"settings": settings, "summary": summary, "runs": runs}
    common.write_results(args.name, result, page, args.out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument(
        "--recipe", type=parse_recipe, action="append", help="NAME=JSON overrides (repeat)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name", help="results file name (default: tune_<preset>)")
    parser.add_argument(
        "--log-dir", type=pathlib.Path, help="write each run's output there as it comes"
    )
    args = parser.parse_args(argv)
    common.prepare_out(parser, args)
    args.recipe = args.recipe or [("preset", {})]
    args.name = args.name or f"tune_{args.preset}"
    run(args)


if __name__ == "__main__":
    common.run_main(main)
