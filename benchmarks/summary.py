"""Builds docs/benchmarks/README.md: one headline row per committed benchmark result.

python -m benchmarks.summary
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Callable
from typing import Any

from benchmarks import accuracy, common, facade_cost


def _accuracy(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in result["summary"]:
        goal, status = "", ""
        if "target_met" in row:  # results before the bf16 target: >= 0.93 in <= 15 min
            bf16 = "policy" in row
            goal = (
                f">= {accuracy.TARGET_ACCURACY} mean in <= {accuracy.TARGET_MINUTES:.0f} min "
                "(2 cores with bf16 units)"
                if bf16
                else ">= 0.93 in <= 15 min (2-core CPU)"
            )
            status = "met" if row["target_met"] else "missed"
        chapter_run = (row["input"], row["epochs"], str(row["train_examples"])[:3]) == (
            "d2l 224px", 5, "all",
        )  # fmt: skip
        if row["name"] in accuracy.D2L_IMPROVED and chapter_run:
            goal = f">= {accuracy.D2L_GOAL} in the chapter's 5 epochs (the chapter: ~0.88)"
            status = "met" if row["test_accuracy_mean"] >= accuracy.D2L_GOAL else "missed"
        if "bf16_within_tolerance" in row:
            tolerance = f"bf16 at most {accuracy.BF16_TOLERANCE} below float32"
            goal += f"{'; ' if goal else ''}{tolerance}"
            status += f"{'; ' if status else ''}" + (
                f"{row['bf16_minus_float32']:+.4f}: "
                + ("met" if row["bf16_within_tolerance"] else "missed")
            )
        policy = f", {row['policy']}" if "policy" in row else ""
        rows.append(
            [
                f"accuracy: `{row['name']}` ({row['input']}, {row['epochs']} epochs, "
                f"{row['train_examples']} training images{policy})",
                f"test accuracy {row['test_accuracy_mean']:.4f} "
                f"(min {row['test_accuracy_min']:.4f}, max {row['test_accuracy_max']:.4f}, "
                f"{len(row['seeds'])} seed(s)); training {row['fit_minutes_median']:.1f} min "
                "(median)",
                goal,
                status,
            ]
        )
    return rows


def _throughput_model(settings: dict[str, Any]) -> str:
    """The model a throughput result trained: `d2l 224 px`, `mini x1.25 28 px` (results from
    before a setting was recorded: the d2l variant, width 1, 224 px)."""
    width = settings.get("width", 1.0)
    scaled = f" x{width:g}" if width != 1.0 else ""
    return f"{settings.get('variant', 'd2l')}{scaled} {settings.get('image_size', 224)} px"


def _throughput(result: dict[str, Any]) -> list[list[str]]:
    """One row per CPU kind: like for like (fp32, bf16) and default for default at the first
    batch size, like for like at the others."""
    machine = result["machine"]
    kind = machine.get("cpu_kind") or "amd-avx2"  # the first result predates the kinds
    batch = result["settings"]["batches"][0]
    model = _throughput_model(result["settings"])
    rows = {r["name"]: r for r in result["summary"] if r["batch"] == batch}
    figures = []
    for label, name in (("fp32", "tf"), ("bf16", "tf-bf16"), ("default", "tf-default")):
        if name not in rows or rows[name]["median_ratio_to_torch"] is None:
            continue
        row = rows[name]
        ratio = row["median_ratio_to_torch"]
        figures.append(f"{label} {row['median_images_per_second']:.1f} img/s = {ratio:.2f}x")
    for other in result["settings"]["batches"][1:]:
        ratios = [
            f"{label} {r['median_ratio_to_torch']:.2f}x"
            for label, name in (("fp32", "tf"), ("bf16", "tf-bf16"))
            for r in result["summary"]
            if r["batch"] == other and r["name"] == name and r["median_ratio_to_torch"]
        ]
        if ratios:
            figures.append(f"batch {other}: " + ", ".join(ratios))
    # like for like at every batch size measured; tf-default may compare two precisions
    like_for_like = [
        r["median_ratio_to_torch"]
        for r in result["summary"]
        if r["name"] in LIKE_FOR_LIKE and r["median_ratio_to_torch"] is not None
    ]
    settings = [r for r in result["summary"] if r["name"] not in PLAIN_RUNS]
    if settings:  # `tf` itself is no setting: named only when settings were measured
        best = max(settings, key=lambda r: r["median_ratio_to_torch"] or 0)
        figures.append(f"best TF setting `{best['name']}` {best['median_ratio_to_torch']:.2f}x")
    flags = " ".join(f for f in machine.get("cpu_features", []) if "bf16" in f or "amx" in f)
    status = "met" if like_for_like and min(like_for_like) >= 1.2 else "missed"
    pairs = _round_ratios(result.get("runs", []))
    settled = [common.median(r) for r in pairs.values() if max(r) - min(r) <= UNSETTLED_SPREAD]
    unsettled = [r for r in pairs.values() if max(r) - min(r) > UNSETTLED_SPREAD]
    if unsettled and all(ratio >= 1.2 for ratio in settled):
        # a pair's rounds disagree by more than the verdict's margin, and no settled pair
        # misses: not judged
        widest = max(unsettled, key=lambda r: max(r) - min(r))
        figures.append(f"rounds {min(widest):.2f}-{max(widest):.2f}x")
        status = "unsettled: rounds spread"
    return [
        [
            f"training throughput, {kind} ({machine['cpu']}; {flags or 'no bf16 flags'}): "
            f"{model}, batch {batch}, x PyTorch in the same precision (default: x PyTorch "
            "with no flags)",
            "; ".join(figures),
            ">= 1.2x PyTorch like for like (every batch size)",
            status,
        ]
    ]


LIKE_FOR_LIKE = ("tf", "tf-bf16")
"""TF's runs judged against PyTorch in the same precision (`torch`, `torch-bf16`)."""

PLAIN_RUNS = frozenset({*LIKE_FOR_LIKE, "tf-default", "torch", "torch-bf16"})
"""The runs without a TF setting (XLA, steps per execution, ...) measured beside them."""

UNSETTLED_SPREAD = 0.15
"""A like-for-like pair whose per-round ratios span more than this is not judged."""


def _round_ratios(runs: list[dict[str, Any]]) -> dict[tuple[int, str], list[float]]:
    """Per-round TF / PyTorch ratios of each like-for-like pair (batch size, TF's name)."""
    rates = {(r["round"], r["batch"], r["name"]): r["images_per_second"] for r in runs}
    pairs: dict[tuple[int, str], list[float]] = {}
    for (round_, batch, name), rate in rates.items():
        torch = (round_, batch, "torch" + name.removeprefix("tf"))
        if name in LIKE_FOR_LIKE and torch in rates:
            pairs.setdefault((batch, name), []).append(rate / rates[torch])
    return pairs


def _pipeline(result: dict[str, Any]) -> list[list[str]]:
    return [
        [
            f"input pipeline: `{row['preset']}` preset ({row['variant']} {row['image_size']} px)",
            f"{row['pipeline_images_per_second']:,.0f} img/s ({row['headroom']:.0f}x what the "
            f"model trains at); {row['pipeline_one_core_images_per_second']:,.0f} img/s per core",
            "never the bottleneck (headroom > 1)",
            "met" if row["headroom"] > 1 else "missed",
        ]
        for row in result["rows"]
    ]


def _batch_norm(result: dict[str, Any]) -> list[list[str]]:
    """One row per CPU kind: the fused layer's training rate against Keras's, per policy."""
    fused = [
        f"{key.split()[0]} {found['ratio_to_keras_median']:.2f}x "
        f"({found['images_per_second_median']:,.0f} img/s)"
        for key, found in result["summary"].items()
        if key.endswith(" fused")
    ]
    return [
        [
            f"batch norm in `mini` ({result['machine']['cpu_kind']}): fused against Keras's",
            "training img/s, side by side: " + "; ".join(fused),
            "",
            "measured only",
        ]
    ]


def _mirrored_epochs(result: dict[str, Any]) -> list[list[str]]:
    """One row per CPU kind: epochs under MirroredStrategy without per-device autotuning."""
    off, on = result["summary"]["autotune-off"], result["summary"]["autotune-on"]
    return [
        [
            f"epochs under `mirrored` over 2 logical CPUs ({result['machine']['cpu_kind']}): "
            "per-device datasets without autotuning",
            f"{off['speedup_over_autotune_on_median']:.2f}x (epochs 2-{result['epochs']}: "
            f"{off['later_epochs_seconds_median']:.1f} s against "
            f"{on['later_epochs_seconds_median']:.1f} s with it)",
            "",
            "measured only",
        ]
    ]


def _serving(result: dict[str, Any]) -> list[list[str]]:
    goals = result["goals"]
    settings = result["settings"]
    model = f"{settings['variant']} {settings['image_size']} px"
    figures = {
        ">=80% of ceiling at c32": f"{goals.get('batched_c32_share_of_ceiling', 0):.0%} of the "
        f"raw ceiling ({goals['raw_ceiling_images_per_second']:.1f} img/s)",
        ">=3x unbatched at c32": f"{goals.get('batched_over_unbatched_c32', 0):.2f}x unbatched",
        "p50 c1 within 1.3x raw": f"{goals.get('p50_c1_over_single_raw_call', 0):.2f}x a raw call",
    }
    return [
        [f"serving ({model}): {goal}", figures[goal], goal, "met" if met else "missed"]
        for goal, met in goals["met"].items()
    ]


def _precision(result: dict[str, Any]) -> list[list[str]]:
    """One row per CPU kind: what serving a bf16-trained model costs on each path."""
    machine, configs = result["machine"], result["configs"]
    kind = machine.get("cpu_kind") or "amd-avx2"
    base = configs["float32 graph"]["images_per_second_median"]
    figures = [f"float32 graph {base:.1f} img/s"] + [
        f"{label.removeprefix('float32 graph + ')} "
        + (
            f"{config['images_per_second_median'] / base:.2f}x"
            if "error" not in config
            else "fails"
        )
        for label, config in configs.items()
        if label in ("float32 graph + bf16 rewrite", "bf16 graph")
    ]
    verdict = "yes" if result["bf16_support"]["available"] else "no"
    return [
        [
            f"inference precision, {kind} ({machine['cpu']}): {result['variant']} "
            f"{result['image_size']} px, batch {result['batch']}",
            "; ".join(figures) + f"; bf16 chosen by `auto`: {verdict}",
            "`auto` picks the fastest path",
            "met"
            if verdict == "yes"
            or all(
                "error" in c or c["images_per_second_median"] <= base
                for label, c in configs.items()
                if "bf16" in label and "ONEDNN" not in label
            )
            else "missed",
        ]
    ]


def _facade_cost(result: dict[str, Any]) -> list[list[str]]:
    """Per CPU kind: the facade's CPU overhead against its baseline, and the c32 share."""
    kind = result["machine"].get("cpu_kind", "?")
    goals, rows = result["goals"], []
    this = result["cost"]["servers"]["this commit"]
    baseline = result["settings"].get("baseline")
    for body, ratio in goals.get("overhead_cpu_over_baseline", {}).items():
        verdict = facade_cost.overhead_verdict(baseline, ratio)
        rows.append(
            [
                f"facade CPU overhead, {kind}: {body} body ({result['cost']['model']})",
                f"{this[body]['overhead_cpu_ms']:.2f} ms per request = {ratio:.3f}x the "
                f"multipart overhead of the facade at {baseline}",
                f"<= 0.5x the facade at {facade_cost.GOAL_BASELINE}"
                if verdict != "COMPARED"
                else f"measured only: a comparison with {baseline}",
                {"MET": "met", "MISSED": "missed"}.get(verdict, "-"),
            ]
        )
    count = len(result["throughput"].get("rounds", ()))  # older results: one run
    rounds = f" (median of {count} rounds)" if count > 1 else ""
    for body, share in goals["c32_share_of_ceiling"].items():
        load = result["throughput"]["servers"]["this commit"][body]
        rows.append(
            [
                f"facade at c32, {kind}: {body} body ({result['throughput']['model']})",
                f"{share:.1%} of the raw ceiling{rounds}; load generator "
                f"{load['loadgen_cpu_share']:.0%} of a core",
                ">= 80% of the raw ceiling",
                "met" if share >= 0.8 else "missed",
            ]
        )
    return rows


def _facade_memory(result: dict[str, Any]) -> list[list[str]]:
    """Per model and image format: the largest load's peak memory, the memory kept after it and
    a small request's wait, this commit against the baseline and other settings."""
    kind = result["machine"].get("cpu_kind", "?")
    largest: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for load in result["loads"]:
        if "small_request_seconds" in load:  # the largest load: a small request sent into it
            largest.setdefault((load["model"], load["format"]), {})[load["server"]] = load
    rows = []
    for (model, image_format), servers in largest.items():
        this = servers["this commit"]
        compared = [
            f"{name}: {load['rss_peak_mb']:,.0f} MB, {load['rss_after_mb']:,.0f} MB after, "
            f"{load['small_request_seconds']:.1f} s"
            for name, load in servers.items()
            if name != "this commit"
        ]
        pixels = this["pixels"]
        size = f"{pixels / 1e6:.0f} MP" if pixels >= 1e6 else f"{pixels:,} pixels"
        rows.append(
            [
                f"facade memory, {kind}: {model}, {this['concurrency']} x "
                f"{this['images_per_request']} {image_format} images of {size}",
                f"peak RSS {this['rss_peak_mb']:,.0f} MB, {this['rss_after_mb']:,.0f} MB after; "
                "a one-image request sent into the "
                f"load waited {this['small_request_seconds']:.1f} s"
                + (f" ({'; '.join(compared)})" if compared else ""),
                "",
                "measured only",
            ]
        )
    return rows


def _onednn_serving(result: dict[str, Any]) -> list[list[str]]:
    """Per model: a one-image call and batch 32 with oneDNN forced on, against TF's choice."""
    kind = result["machine"].get("cpu_kind", "?")
    default = "on" if result["onednn_by_default"] else "off"
    rows = []
    for model, kernels in result["summary"].items():
        own, forced = kernels["tensorflow's choice"], kernels["oneDNN on"]
        rows.append(
            [
                f"serving with oneDNN forced on, {kind} (TensorFlow's choice: {default}): {model}",
                f"one-image call {forced['wall_ms_per_call']:.1f} ms against "
                f"{own['wall_ms_per_call']:.1f} ms; batch 32 "
                f"{forced['images_per_second']['32'] / own['images_per_second']['32']:.2f}x",
                "",
                "measured only",
            ]
        )
    return rows


SECTIONS: dict[str, Callable[[dict[str, Any]], list[list[str]]]] = {
    "accuracy": _accuracy,
    "train_throughput": _throughput,
    "precision": _precision,
    "pipeline": _pipeline,
    "batch_norm": _batch_norm,
    "mirrored_epochs": _mirrored_epochs,
    "serving": _serving,
    "facade_cost": _facade_cost,
    "facade_memory": _facade_memory,
    "onednn_serving": _onednn_serving,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, default=common.RESULTS)
    results = parser.parse_args(argv).results
    if not results.is_dir():
        parser.error(f"`--results` should be a folder of benchmark results. Received: {results}")
    rows, sources = [], []
    for name, section in SECTIONS.items():
        # `NAME_*.json` too: one result per CPU kind (`precision_amd-avx2`) or per run
        # (`accuracy_d2l_224`)
        for path in [results / f"{name}.json", *sorted(results.glob(f"{name}_*.json"))]:
            if not path.is_file():
                continue
            result = json.loads(path.read_text())
            rows += section(result)
            sources.append(f"- [{path.stem}.md]({path.stem}.md): `{result['command']}`")
    table = common.markdown_table(["what", "result", "goal", "status"], rows)
    text = (
        "# Benchmark results\n\n"
        "Measured on this project's CI-class machines (2 shared CPU cores, no GPU). The kind of "
        "CPU changes between sessions (AMD EPYC with AVX2, Intel Xeons with AVX512-BF16 or "
        "AMX): rows that depend on it name the kind, and are compared only within one run. "
        "Each linked page has the machine, versions, every run and the exact command. How to "
        "rerun: "
        "[benchmarks/README.md](../../benchmarks/README.md).\n\n"
        f"{table}\n\nDetails:\n" + "\n".join(sources) + "\n"
    )
    (results / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
