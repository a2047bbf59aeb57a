"""Accuracy on real Fashion-MNIST: train a recipe per seed, report the test split once.

Recipes are tuned on the validation split (10% of train); the test split (the original
10,000 test images) is evaluated once per run, on the model `export` would publish
(`best.keras`, the epoch with the best validation accuracy). Each run is a fresh process.

- `cpu`: the `cpu` preset (mini AlexNet), the CPU target: >= 0.93 in <= 15 min of training.
- `d2l-chapter` / `d2l-improved`: the chapter's network with the chapter's recipe and with
  the `gpu` preset's recipe, side by side on the same reduced budget (input size, training
  subset and epochs below), because the full 224 px run needs a GPU.

    python -m benchmarks.accuracy --configs cpu --seeds 1 2 3       # about 45 min on 2 cores
    python -m benchmarks.accuracy --configs d2l-chapter d2l-improved  # the reduced d2l budget
    python -m benchmarks.accuracy --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import tempfile
from typing import Any

from benchmarks import common

CONFIGS = {
    "cpu": ("cpu", {}),
    "d2l-chapter": ("chapter", {}),
    "d2l-improved": ("gpu", {"mixed_precision": "off"}),
}
TARGET_ACCURACY, TARGET_MINUTES = 0.93, 15.0


def worker(args: argparse.Namespace) -> dict[str, Any]:
    from tf_alexnet import config as config_lib
    from tf_alexnet.evaluate import evaluate
    from tf_alexnet.run_dir import RunDir
    from tf_alexnet.train import train

    overrides = json.loads(args.overrides)
    config = config_lib.resolve(args.preset, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(pathlib.Path(tmp) / "run")
        metrics = train(config, run.root)
        history = run.read_history()
        report = evaluate(run.best_model, config, pathlib.Path(tmp) / "eval")
    return {
        "config": config.to_dict(),
        "test_accuracy": report["accuracy"],
        "best_val_accuracy": metrics["best_val_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs"],
        "fit_seconds": metrics["wall_seconds_last_session"],
        "train_seconds": sum(row.get("train_seconds", 0.0) for row in history),
        "train_images_per_second_median": metrics["train_images_per_second_median"],
        "val_accuracy_by_epoch": [row.get("val_accuracy") for row in history],
    }


def overrides_for(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    overrides = {**CONFIGS[name][1], "seed": seed, "manual_dir": str(common.MANUAL_DIR)}
    if name.startswith("d2l"):
        overrides |= {
            "image_size": args.d2l_image_size,
            "train_examples": args.d2l_train_examples,
            "epochs": args.d2l_epochs,
        }
    if args.smoke:
        overrides |= {"train_examples": 512, "epochs": 1, "image_size": 67 if "d2l" in name else 28}
    return overrides


def run(args: argparse.Namespace) -> None:
    runs = []
    for name in args.configs:
        preset = CONFIGS[name][0]
        for seed in args.seeds:
            overrides = overrides_for(name, seed, args)
            result = common.run_json(
                [
                    "-m",
                    __spec__.name,
                    "--worker",
                    f"--preset={preset}",
                    f"--overrides={json.dumps(overrides)}",
                ],
                timeout=4 * 3600,
            )
            runs.append({"name": name, "preset": preset, "seed": seed, **result})
            print(
                f"  {name} seed {seed}: test accuracy {result['test_accuracy']:.4f}, "
                f"fit {result['fit_seconds'] / 60:.1f} min",
                flush=True,
            )
    summary = summarize(runs)
    result = {"settings": vars(args), "summary": summary, "runs": runs}
    common.write_results(args.name, result, markdown(summary, runs), args.out)
    plot(runs, args.out / f"{args.name}.png")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["name"] for r in runs):
        mine = [r for r in runs if r["name"] == name]
        accuracy = [r["test_accuracy"] for r in mine]
        minutes = [r["fit_seconds"] / 60 for r in mine]
        row = {
            "name": name,
            "preset": mine[0]["preset"],
            "seeds": [r["seed"] for r in mine],
            "input": f"{mine[0]['config']['variant']} {mine[0]['config']['image_size']}px",
            "train_examples": mine[0]["config"]["train_examples"] or "all (54,000)",
            "epochs": mine[0]["epochs"],
            "test_accuracy_mean": statistics.fmean(accuracy),
            "test_accuracy_min": min(accuracy),
            "test_accuracy_max": max(accuracy),
            "test_accuracy_stdev": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
            "fit_minutes_median": common.median(minutes),
            "fit_minutes_max": max(minutes),
        }
        if name == "cpu":
            row["target_met"] = min(accuracy) >= TARGET_ACCURACY and max(minutes) <= TARGET_MINUTES
        rows.append(row)
    return rows


def markdown(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    table = common.markdown_table(
        [
            "configuration",
            "model",
            "training images",
            "epochs",
            "seeds",
            "test acc. mean",
            "min-max",
            "std",
            "training min (median / max)",
        ],
        [
            [
                r["name"],
                r["input"],
                r["train_examples"],
                r["epochs"],
                len(r["seeds"]),
                f"{r['test_accuracy_mean']:.4f}",
                f"{r['test_accuracy_min']:.4f}-{r['test_accuracy_max']:.4f}",
                f"{r['test_accuracy_stdev']:.4f}",
                f"{r['fit_minutes_median']:.1f} / {r['fit_minutes_max']:.1f}",
            ]
            for r in summary
        ],
    )
    recipes = "\n".join(
        f"- `{r['name']}` (preset `{r['preset']}`): "
        + ", ".join(
            f"{k}={v}"
            for k, v in r["config"].items()
            if k
            in (
                "learning_rate",
                "momentum",
                "weight_decay",
                "schedule",
                "warmup_epochs",
                "label_smoothing",
                "batch_size",
                "dropout",
            )
        )
        + f", augment={ {k: v for k, v in r['config']['augment'].items() if v} }"
        for r in {r["name"]: r for r in runs}.values()
    )
    target = next((r for r in summary if r["name"] == "cpu"), None)
    verdict = ""
    if target is not None:
        verdict = (
            f"CPU target (every seed >= {TARGET_ACCURACY} test accuracy in <= "
            f"{TARGET_MINUTES:.0f} min of training): "
            f"**{'met' if target['target_met'] else 'missed'}**.\n\n"
        )
    return (
        "# Accuracy on Fashion-MNIST (test split, 10,000 images)\n\n"
        "Tuned on the validation split; the test split is evaluated once per run on "
        "`best.keras`. Training minutes are `model.fit` wall time (validation included).\n\n"
        f"{table}\n\n{verdict}Recipes:\n{recipes}\n"
    )


def plot(runs: list[dict[str, Any]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in runs:
        curve = [v for v in r["val_accuracy_by_epoch"] if v is not None]
        ax.plot(range(1, len(curve) + 1), curve, marker=".", label=f"{r['name']} seed {r['seed']}")
    ax.axhline(TARGET_ACCURACY, color="grey", ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy per epoch")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--configs", nargs="+", default=["cpu"], choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--d2l-image-size", type=int, default=112)
    parser.add_argument("--d2l-train-examples", type=int, default=12_000)
    parser.add_argument("--d2l-epochs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    parser.add_argument("--out", type=pathlib.Path, default=common.RESULTS)
    parser.add_argument("--name", default="accuracy")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = [1]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(args), default=str))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(args)


if __name__ == "__main__":
    main()
