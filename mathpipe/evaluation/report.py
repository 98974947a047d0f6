"""The results report: every model on every benchmark in one table, with the training stages' figures.

    table = accuracy_table(models, benchmarks, "metrics/eval")    # rows: model, benchmark, accuracy, ...
    costs = training_costs(cfg.methods, {"sft": "metrics/sft.json"})   # model -> steps, tokens, seconds
    stages = stage_figures({"dpo": "metrics/dpo.json"})               # reward model, rejection sampling, DPO
    text = render_markdown(table, stages, costs)                  # one row per model, then each stage
    curves = read_loss_curves({"sft": "dvclive/sft"})             # DVCLive's loss TSVs
    markdown = write_report(cfg, params, models, benchmarks, "metrics/eval", "plots/attention/compare/png")

The report names stages, not files: each stage's section of params.yaml holds its metrics file
(`<stage>.metrics`) and DVCLive folder (`<stage>.live_dir`), the one place they are written.

Everything is read from the metrics files the stages committed; nothing is recomputed here. A missing
file or key stops with an error naming it.
"""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mathpipe.config import check, check_positive
from mathpipe.errors import ConfigError, DataError
from mathpipe.evaluation.evaluate import SampledEvaluation
from mathpipe.io import atomic_dir, atomic_write_text, read_json, read_jsonl, require_file, write_json

# What the report shows of each stage's metrics file: (label, dotted key, format).
STAGE_FIGURES: dict[str, list[tuple[str, str, str]]] = {
    "sft": [
        ("train records", "train_records", "d"),
        ("final train loss", "train_loss", ".3f"),
        ("eval loss", "eval_loss", ".3f"),
        ("tokens per second", "tokens_per_second", ",.0f"),
    ],
    "rft": [
        ("train records (best-of-N, verified)", "train_records", "d"),
        ("final train loss", "train_loss", ".3f"),
        ("eval loss (SFT's held-out records)", "eval_loss", ".3f"),
    ],
    "reward_model": [
        ("held-out pairs", "held_out.pairs", "d"),
        ("held-out pairwise accuracy", "held_out.accuracy", ".3f"),
        ("mean margin (chosen - rejected)", "held_out.mean_margin", ".3f"),
    ],
    "rejection_sampling": [
        ("prompts x samples", "prompts|samples_per_prompt", "x"),
        ("pass@1", "pass_at_1", ".3f"),
        ("pass@n", "pass_at_n", ".3f"),
        ("reward-selected sample correct", "reward_selected_accuracy", ".3f"),
        ("reward AUC (within a prompt)", "reward_auc_within_prompt", ".3f"),
        ("preference pairs (train / held out)", "pairs_train|pairs_val", "/"),
    ],
    "dpo": [
        ("train pairs", "train_pairs", "d"),
        ("held-out reward accuracy", "held_out.reward_accuracy", ".3f"),
        ("held-out reward margin", "held_out.reward_margin", ".3f"),
    ],
    "grpo": [
        ("prompts x completions per step", "prompts_per_step|num_generations", "x"),
        ("steps", "steps", "d"),
        ("reward, first step", "reward_first", ".3f"),
        ("reward, last step", "reward_last", ".3f"),
        ("groups with one reward for all (teach nothing)", "uniform_group_fraction", ".1%"),
        ("mean completion length (tokens)", "completion_length_mean", ".1f"),
        ("training seconds", "train_seconds", ",.0f"),
    ],
}


@dataclass(kw_only=True)
class MethodCost:
    """Where the comparison table finds what training a model cost: its stage's metrics file."""

    stage: str  # the params section whose `metrics` file holds the figures
    starts_from: str | None  # the model it was trained from (null: from scratch)
    steps: str | None  # keys in that file; null: not trained here (a Hub base model)
    tokens: str | None
    seconds: str | None


@dataclass(kw_only=True)
class ReportConfig:
    methods: dict[str, MethodCost]  # model -> its training's metrics
    stage_metrics: list[str]  # stages (STAGE_FIGURES keys) whose `<stage>.metrics` go under the table
    curves: list[str]  # stages whose `<stage>.live_dir` holds loss curves
    reward_curves: list[str]  # RL stages whose `<stage>.live_dir` holds reward curves
    attention_figures: list[str]  # compare/png stems copied next to the report
    table_markdown: str
    table_json: str
    plots_dir: str
    dpi: int

    def validate(self, prefix: str) -> None:
        for name in self.stage_metrics:
            check(name in STAGE_FIGURES, f"{prefix}.stage_metrics",
                  f"unknown stage '{name}' (known: {', '.join(STAGE_FIGURES)})")
        check_positive(self.dpi, f"{prefix}.dpi")


def accuracy_table(models: list[str], benchmarks: list[str], metrics_dir: str | Path) -> list[dict]:
    rows = []
    for model in models:
        for benchmark in benchmarks:
            path = require_file(Path(metrics_dir) / model / f"{benchmark}.json", "evaluation metrics")
            metrics = read_json(path)
            missing = [k for k in ("accuracy", "n", "correct", "ci95_low", "ci95_high") if k not in metrics]
            if missing:
                raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
            rows.append({"model": model, "benchmark": benchmark,
                         **{k: metrics[k] for k in ("accuracy", "ci95_low", "ci95_high", "correct", "n")}})
    return rows


def training_costs(methods: dict[str, MethodCost], metrics_files: dict[str, str]) -> dict[str, dict]:
    """{model: {"starts_from", "steps", "tokens", "seconds"}} from each training stage's metrics
    (metrics_files: stage -> its metrics file)."""
    costs = {}
    for model, source in methods.items():
        path = require_file(metrics_files[source.stage], f"{model} training metrics (report.methods)")
        metrics = read_json(path)
        costs[model] = {"starts_from": source.starts_from,
                        **{k: None if getattr(source, k) is None else _lookup(metrics, getattr(source, k), path)
                           for k in ("steps", "tokens", "seconds")}}
    return costs


def _lookup(metrics: dict, dotted: str, path: Path):
    value = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{path}: missing key '{dotted}'")
        value = value[part]
    return value


def stage_figures(stage_metrics: dict[str, str]) -> dict[str, list[dict]]:
    """{stage: [{"figure", "value", "text"}]} for each stage file named in params."""
    figures = {}
    for stage, file in stage_metrics.items():
        path = require_file(file, f"{stage} metrics")
        metrics = read_json(path)
        rows = []
        for label, keys, fmt in STAGE_FIGURES[stage]:
            values = [_lookup(metrics, k, path) for k in keys.split("|")]
            if fmt in ("x", "/"):
                text = f" {fmt} ".join(f"{v:,}" for v in values)
                value = values
            else:
                value = values[0]
                # None: the stage had nothing to measure it on (say, no prompt with both verdicts)
                text = "n/a" if value is None else format(value, fmt)
            rows.append({"figure": label, "value": value, "text": text})
        figures[stage] = rows
    return figures


def paired_comparisons(methods: dict[str, MethodCost], models: list[str], benchmarks: list[str],
                       predictions_dir: str | Path, answers: str = "greedy") -> list[dict]:
    """Each evaluated model against the model it was trained from (report.methods' starts_from; the
    nearest evaluated ancestor when that one was not evaluated), per benchmark, on the same questions:
    the paired difference, its 95% interval, the p-value and the fixed and broken questions."""
    from mathpipe.evaluation.paired import compare, per_question

    def evaluated_ancestor(model: str) -> str | None:
        seen, parent = {model}, methods[model].starts_from if model in methods else None
        while parent is not None and parent not in models and parent not in seen:
            seen.add(parent)
            parent = methods[parent].starts_from if parent in methods else None
        return parent if parent in models else None

    rows = []
    for model in models:
        against = evaluated_ancestor(model)
        if against is None:
            continue
        for benchmark in benchmarks:
            paths = [require_file(Path(predictions_dir) / m / f"{benchmark}.jsonl", "predictions")
                     for m in (against, model)]
            a, b = (per_question(read_jsonl(p), str(p)) for p in paths)
            result = compare(a, b, against, model)
            rows.append({"model": model, "against": against, "benchmark": benchmark, "answers": answers,
                         **{k: result[k] for k in ("n", "difference", "ci95_low", "ci95_high", "p_value", "test",
                                                   "significant")},
                         "fixed": len(result["fixed"]), "broken": len(result["broken"])})
    return rows


def rl_headroom(model: str, benchmark: str, greedy_file: str | Path, sampled_file: str | Path,
                threshold: float = 0.3) -> dict:
    """What RL can gain on a model: its sampled pass rate per question, and the share of questions
    greedy gets wrong while the right answer already has real probability (pass rate >= threshold),
    which bounds what sharpening can add to greedy. Over the questions the sampled evaluation asked."""
    from mathpipe.evaluation.paired import per_question

    sampled = per_question(read_jsonl(require_file(sampled_file, "sampled predictions")), str(sampled_file))
    greedy = per_question(read_jsonl(require_file(greedy_file, "predictions")), str(greedy_file))
    missing = sorted(set(sampled) - set(greedy))
    if missing:
        raise DataError(f"{sampled_file}: {len(missing)} questions have no greedy answer in {greedy_file} "
                        f"({', '.join(missing[:3])}...)")
    n = len(sampled)
    wrong = [q for q in sampled if greedy[q] < 1]
    return {"model": model, "benchmark": benchmark, "questions": n,
            "mean_pass_rate": sum(sampled.values()) / n,
            "greedy_wrong": len(wrong) / n,
            "greedy_wrong_pass_rate_at_least": threshold,
            "greedy_wrong_with_pass_rate_at_least": sum(sampled[q] >= threshold for q in wrong) / n,
            "never_right": sum(v == 0 for v in sampled.values()) / n,
            "always_right": sum(v == 1 for v in sampled.values()) / n}


def render_headroom(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines.append(f"What RL can gain on {r['model']} ({r['benchmark']}, {r['questions']} questions): mean sampled "
                     f"pass rate {r['mean_pass_rate']:.1%}; greedy is wrong on {r['greedy_wrong']:.1%}, and on "
                     f"{r['greedy_wrong_with_pass_rate_at_least']:.1%} of all questions greedy is wrong while the "
                     f"pass rate is at least {r['greedy_wrong_pass_rate_at_least']:g} (the most a sharper policy adds "
                     f"to greedy); {r['never_right']:.1%} never right, {r['always_right']:.1%} always right.")
    return "\n".join(lines)


def render_comparisons(rows: list[dict]) -> str:
    """The paired comparisons as a table, then in words: which differences are significant."""
    if not rows:
        return ""
    from mathpipe.evaluation.paired import ALPHA

    lines = ["", "**Did each stage help?** Each model against the one it was trained from, on the same questions: "
             "the difference in points with its paired 95% interval, and the p-value (exact McNemar with one "
             "answer per question, a paired z-test with sampled answers).", "",
             "| model | against | benchmark | answers | difference | 95% interval | p | fixed / broken | verdict |",
             "|---|---|---|---|---:|---|---:|---:|---|"]
    for r in rows:
        direction = "**better**" if r["difference"] > 0 else "**worse**"
        verdict = direction if r["significant"] else "no significant difference"
        lines.append(f"| {r['model']} | {r['against']} | {r['benchmark']} | {r['answers']} | "
                     f"{100 * r['difference']:+.1f} | "
                     f"{100 * r['ci95_low']:+.1f} to {100 * r['ci95_high']:+.1f} | {r['p_value']:.3g} | "
                     f"{r['fixed']} / {r['broken']} | {verdict} |")
    significant = [f"{r['model']} {'better' if r['difference'] > 0 else 'worse'} than {r['against']} on "
                   f"{r['benchmark']} {r['answers']} ({100 * r['difference']:+.1f})" for r in rows if r["significant"]]
    noise = sorted({f"{r['model']} against {r['against']}" for r in rows}
                   - {f"{r['model']} against {r['against']}" for r in rows if r["significant"]})
    lines += ["", f"Significant at p < {ALPHA:g}: " + ("; ".join(significant) if significant else "none") + "."]
    if noise:
        lines.append(f"No significant difference on any benchmark: {', '.join(noise)}.")
    return "\n".join(lines) + "\n"


def render_markdown(table: list[dict], stages: dict[str, list[dict]], costs: dict[str, dict] | None = None,
                    comparisons: list[dict] | None = None, headroom: list[dict] | None = None) -> str:
    """One row per model: accuracy and 95% interval on each benchmark, and what its training cost;
    then the paired comparisons of each model with the one it was trained from; then each stage's
    own figures."""
    costs = costs or {}
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in table))
    models = list(dict.fromkeys(r["model"] for r in table))
    cells = {(r["model"], r["benchmark"]): r for r in table}
    sizes = {b: {cells[m, b]["n"] for m in models if (m, b) in cells} for b in benchmarks}
    heads = [f"{b} (n={'/'.join(map(str, sorted(sizes[b])))})" for b in benchmarks]
    lines = ["| model | " + " | ".join(heads) + " | trained from | steps | tokens | seconds |",
             "|---|" + "---:|" * len(benchmarks) + "---|---:|---:|---:|"]

    def number(value, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    for model in models:
        accuracy = [(f"{c['accuracy']:.1%} ({100 * c['ci95_low']:.1f}–{100 * c['ci95_high']:.1f})"
                     if (c := cells.get((model, b))) else "–") for b in benchmarks]
        cost = costs.get(model, {})
        lines.append(f"| {model} | " + " | ".join(accuracy) + f" | {cost.get('starts_from') or '–'} | "
                     f"{number(cost.get('steps'), ',d')} | {number(cost.get('tokens'), ',d')} | "
                     f"{number(cost.get('seconds'), ',.0f')} |")
    if comparisons:
        lines += render_comparisons(comparisons).rstrip("\n").split("\n")
    if headroom:
        lines += ["", *render_headroom(headroom).split("\n")]
    for stage, rows in stages.items():
        lines += ["", f"**{stage}**", "", "| figure | value |", "|---|---:|"]
        lines += [f"| {r['figure']} | {r['text']} |" for r in rows]
    return "\n".join(lines) + "\n"


STAGE_HEADING = re.compile(r"^\*\*[a-z_]+\*\*$")  # "**sft**": where render_markdown's per-stage figures begin


def split_report(markdown: str) -> tuple[str, str]:
    """(results, stage figures): the report's top (every model on every benchmark, then the paired
    comparisons of each model with the one it was trained from) and the rest (each stage's figures)."""
    lines = markdown.strip().splitlines()
    if len(lines) < 3 or not all(line.startswith("|") for line in lines[:3]):
        raise DataError("metrics/report.md: no results table at its top (run `make report`)")
    cut = next((i for i, line in enumerate(lines) if STAGE_HEADING.match(line)), len(lines))
    return "\n".join(lines[:cut]).rstrip(), "\n".join(lines[cut:]).strip()


def results_part(markdown: str) -> str:
    """The report's top: what README.md and the report page lead with."""
    return split_report(markdown)[0]


def _read_series(path: Path, column: str) -> list[tuple[float, float]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if reader.fieldnames is None or "step" not in reader.fieldnames or column not in reader.fieldnames:
            raise DataError(f"{path}: expected the columns 'step' and '{column}' (a DVCLive plot file)")
        return [(float(row["step"]), float(row[column])) for row in reader]


def read_loss_curves(curves: dict[str, str]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{stage: {"train": [(epoch, loss)], "eval": [...]}} from each DVCLive folder.

    DVCLive's `step` counts log calls (train and eval logs share it); its epoch.tsv maps each step to
    the trainer's fractional epoch, a common x axis for train and eval points.
    """
    out = {}
    for stage, folder in curves.items():
        base = Path(folder) / "plots" / "metrics"
        epochs = dict(_read_series(require_file(base / "epoch.tsv", f"{stage} epochs (DVCLive)"), "epoch"))
        files = {"train": require_file(base / "loss.tsv", f"{stage} training curve"),
                 "eval": base / "eval" / "loss.tsv"}
        series = {}
        for name, path in files.items():
            if path.is_file():
                series[name] = [(epochs.get(step, step), loss) for step, loss in _read_series(path, "loss")]
        out[stage] = series
    return out


UNIFORM_GROUPS = "uniform groups"  # drawn on a panel of its own: a share of groups, not a reward
# GRPOTrainer's per-step logs (DVCLive names): the total reward and each reward function's mean, and
# the share of groups whose completions all got the same reward (they teach nothing: zero advantage).
REWARD_SERIES = {"reward": "reward.tsv", "accuracy": "rewards/accuracy/mean.tsv", "format": "rewards/format/mean.tsv",
                 "overlong": "rewards/overlong/mean.tsv", UNIFORM_GROUPS: "frac_reward_zero_std.tsv"}


def read_reward_curves(curves: dict[str, str]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{stage: {"reward": [(step, mean reward)], "accuracy": [...], ..., "uniform groups": [...]}} from
    each RL stage's DVCLive folder; a reward the stage did not use has no file and no series."""
    out = {}
    for stage, folder in curves.items():
        base = Path(folder) / "plots" / "metrics"
        require_file(base / REWARD_SERIES["reward"], f"{stage} reward curve")
        out[stage] = {name: _read_series(base / file, Path(file).stem)
                      for name, file in REWARD_SERIES.items() if (base / file).is_file()}
    return out


def stage_paths(params: dict, stages: list[str], key: str, listed_in: str) -> dict[str, str]:
    """{stage: params[stage][key]}: where each named stage writes its metrics or curves."""
    paths = {}
    for stage in stages:
        value = params.get(stage, {}).get(key) if isinstance(params.get(stage), dict) else None
        if not isinstance(value, str):
            raise ConfigError(f"{listed_in}: stage '{stage}' has no {stage}.{key} in params.yaml")
        paths[stage] = value
    return paths


def write_report(cfg: ReportConfig, params: dict, models: list[str], benchmarks: list[str],
                 metrics_dir: str | Path, compare_dir: str | Path, predictions_dir: str | Path,
                 sampled: SampledEvaluation | None = None, answers: str = "greedy") -> str:
    """The report stage's outputs: the table (markdown and JSON) and, under cfg.plots_dir, the accuracy
    chart, the loss and reward curves and copies of the attention comparisons. Returns the markdown.
    `params` is the whole of params.yaml: each stage's section names its files. Every input is
    checked before anything is written."""
    from mathpipe.evaluation import plotting

    figures = [require_file(Path(compare_dir) / f"{stem}.png", "attention figure (report.attention_figures)")
               for stem in cfg.attention_figures]
    table = accuracy_table(models, benchmarks, metrics_dir)
    costs = training_costs(cfg.methods, stage_paths(params, sorted({m.stage for m in cfg.methods.values()}),
                                                    "metrics", "report.methods"))
    stages = stage_figures(stage_paths(params, cfg.stage_metrics, "metrics", "report.stage_metrics"))
    curves = read_loss_curves(stage_paths(params, cfg.curves, "live_dir", "report.curves"))
    rewards = read_reward_curves(stage_paths(params, cfg.reward_curves, "live_dir", "report.reward_curves"))
    comparisons = paired_comparisons(cfg.methods, models, benchmarks, predictions_dir, answers)
    headroom = []
    if sampled is not None:
        sampled_dir = Path(predictions_dir) / sampled.subdir
        comparisons += paired_comparisons(cfg.methods, sampled.models, sampled.benchmarks, sampled_dir,
                                          f"avg@{sampled.generation.n}")
        starts = {r["against"] for r in comparisons if r["answers"] != "greedy"}  # where RL starts from
        headroom = [rl_headroom(m, b, Path(predictions_dir) / m / f"{b}.jsonl", sampled_dir / m / f"{b}.jsonl")
                    for m in sampled.models if m in starts and m in models for b in sampled.benchmarks
                    if b in benchmarks and answers == "greedy"]

    markdown = render_markdown(table, stages, costs, comparisons, headroom)
    atomic_write_text(cfg.table_markdown, markdown)
    write_json(cfg.table_json, {"accuracy": table, "comparisons": comparisons, "rl_headroom": headroom,
                                "training_cost": costs, "stages": stages})
    plotting.setup()
    with atomic_dir(cfg.plots_dir) as out:
        plotting.save_figure(plotting.accuracy_chart(table), out, "accuracy", cfg.dpi)
        if curves:
            plotting.save_figure(plotting.training_curves(curves), out, "training_curves", cfg.dpi)
        if rewards:
            plotting.save_figure(plotting.reward_curves(rewards, UNIFORM_GROUPS), out, "reward_curves", cfg.dpi)
        for figure in figures:  # the SVG beside each PNG comes along
            for fmt in ("png", "svg"):
                shutil.copyfile(figure.parent.parent / fmt / f"{figure.stem}.{fmt}",
                                out / fmt / f"attention_{figure.stem}.{fmt}")
    return markdown
