"""The results report: the table from the committed metrics files, and clear errors when one is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathpipe.errors import ConfigError, DataError
from mathpipe.evaluation import plotting
from mathpipe.evaluation.evaluate import wilson_interval
from mathpipe.evaluation.report import (
    UNIFORM_GROUPS,
    ReportConfig,
    accuracy_table,
    read_loss_curves,
    read_reward_curves,
    render_markdown,
    stage_figures,
)
from tests.params import param_config


def write_eval(root: Path, model: str, benchmark: str, correct: int, n: int = 200) -> None:
    path = root / model / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    low, high = wilson_interval(correct, n)
    path.write_text(json.dumps({"accuracy": correct / n, "n": n, "correct": correct, "ci95_low": low,
                                "ci95_high": high, "config": {"model": model}}))


@pytest.fixture
def eval_dir(tmp_path) -> Path:
    root = tmp_path / "eval"
    for model, scores in {"base": (13, 11), "sft": (84, 56)}.items():
        for benchmark, correct in zip(("gsm8k", "cmath"), scores):
            write_eval(root, model, benchmark, correct)
    return root


def test_the_table_has_every_model_on_every_benchmark_in_order(eval_dir):
    table = accuracy_table(["base", "sft"], ["gsm8k", "cmath"], eval_dir)
    assert [(r["model"], r["benchmark"], r["correct"]) for r in table] == [
        ("base", "gsm8k", 13), ("base", "cmath", 11), ("sft", "gsm8k", 84), ("sft", "cmath", 56)]
    markdown = render_markdown(table, {})
    assert markdown.splitlines()[0] == "| model | gsm8k (n=200) | cmath (n=200) | trained from | steps | tokens | seconds |"
    assert "| sft | 42.0% (35.4–48.9) | 28.0% (22.2–34.6) | – | – | – | – |" in markdown
    assert len([line for line in markdown.splitlines() if line.startswith("| ")]) == 1 + 2  # header + one per model


def test_the_table_gives_each_models_training_cost_from_its_stage(eval_dir, tmp_path):
    from mathpipe.evaluation.report import MethodCost, training_costs

    (tmp_path / "base.json").write_text(json.dumps({"pretrain_steps": 628, "pretrain_tokens": 1443972,
                                                    "pretrain_seconds": 270.5}))
    (tmp_path / "sft.json").write_text(json.dumps({"steps": 582, "train_tokens": 2_100_000, "train_seconds": 240.4}))

    def cost(metrics: Path, **keys) -> MethodCost:  # params.yaml's keys of a trained stage's figures
        return param_config(MethodCost, "report.methods.sft", stage=metrics.stem, **keys)

    files = {"base": str(tmp_path / "base.json"), "sft": str(tmp_path / "sft.json")}  # stage -> <stage>.metrics
    costs = training_costs({
        "base": cost(tmp_path / "base.json", starts_from=None, steps="pretrain_steps", tokens="pretrain_tokens",
                     seconds="pretrain_seconds"),
        "sft": cost(tmp_path / "sft.json", starts_from="base")}, files)
    markdown = render_markdown(accuracy_table(["base", "sft"], ["gsm8k", "cmath"], eval_dir), {}, costs)
    assert "| base | 6.5% (3.8–10.8) | 5.5% (3.1–9.6) | – | 628 | 1,443,972 | 270 |" in markdown
    assert "| sft | 42.0% (35.4–48.9) | 28.0% (22.2–34.6) | base | 582 | 2,100,000 | 240 |" in markdown
    hub_base = training_costs({"base": cost(tmp_path / "sft.json", starts_from=None, steps=None, tokens=None,
                                            seconds=None)}, files)
    assert hub_base["base"] == {"starts_from": None, "steps": None, "tokens": None, "seconds": None}  # not trained here
    with pytest.raises(DataError, match=r"sft.json: missing key 'train_tokens'"):
        (tmp_path / "sft.json").write_text(json.dumps({"steps": 582, "train_seconds": 240.4}))
        training_costs({"sft": cost(tmp_path / "sft.json")}, files)


def test_a_missing_evaluation_is_named(eval_dir):
    with pytest.raises(DataError, match=r"evaluation metrics not found: .*eval/dpo/gsm8k.json"):
        accuracy_table(["base", "dpo"], ["gsm8k"], eval_dir)


def test_an_evaluation_without_its_interval_is_named(eval_dir):
    path = eval_dir / "base" / "gsm8k.json"
    path.write_text(json.dumps({"accuracy": 0.5, "n": 2, "correct": 1}))
    with pytest.raises(DataError, match=r"base/gsm8k.json: missing key\(s\) ci95_low, ci95_high"):
        accuracy_table(["base"], ["gsm8k"], eval_dir)


def test_stage_figures_read_nested_keys_and_format_them(tmp_path):
    reward = tmp_path / "reward.json"
    reward.write_text(json.dumps({"held_out": {"pairs": 170, "accuracy": 0.70588, "mean_margin": 0.288}}))
    sampling = tmp_path / "rs.json"
    sampling.write_text(json.dumps({"prompts": 600, "samples_per_prompt": 8, "pass_at_1": 0.332,
                                    "pass_at_n": 0.672, "reward_selected_accuracy": 0.335,
                                    "reward_auc_within_prompt": 0.557, "pairs_train": 683, "pairs_val": 38}))
    figures = stage_figures({"reward_model": str(reward), "rejection_sampling": str(sampling)})
    assert figures["reward_model"][1] == {"figure": "held-out pairwise accuracy", "value": 0.70588, "text": "0.706"}
    texts = {r["figure"]: r["text"] for r in figures["rejection_sampling"]}
    assert texts["prompts x samples"] == "600 x 8" and texts["preference pairs (train / held out)"] == "683 / 38"
    markdown = render_markdown([], figures)
    assert "**reward_model**" in markdown and "| held-out pairwise accuracy | 0.706 |" in markdown


def test_a_figure_the_stage_could_not_measure_reads_n_a(tmp_path):
    """No prompt with both a right and a wrong sample: the within-prompt AUC is null, not a crash."""
    sampling = tmp_path / "rs.json"
    sampling.write_text(json.dumps({"prompts": 12, "samples_per_prompt": 8, "pass_at_1": 0.0, "pass_at_n": 0.0,
                                    "reward_selected_accuracy": 0.0, "reward_auc_within_prompt": None,
                                    "pairs_train": 20, "pairs_val": 4}))
    texts = {r["figure"]: r["text"] for r in stage_figures({"rejection_sampling": str(sampling)})["rejection_sampling"]}
    assert texts["reward AUC (within a prompt)"] == "n/a"


def test_a_stage_file_without_a_figure_is_named(tmp_path):
    reward = tmp_path / "reward.json"
    reward.write_text(json.dumps({"held_out": {"pairs": 170}}))
    with pytest.raises(DataError, match=r"reward.json: missing key 'held_out.accuracy'"):
        stage_figures({"reward_model": str(reward)})


def test_an_unknown_stage_in_params_is_refused():
    with pytest.raises(ConfigError, match=r"report.stage_metrics: unknown stage 'ppo'"):
        param_config(ReportConfig, "report", stage_metrics=["sft", "ppo"])


def write_tsv(path: Path, column: str, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{column}\n" + "".join(f"{s}\t{v}\n" for s, v in rows))


def test_loss_curves_are_put_on_the_epoch_axis(tmp_path):
    base = tmp_path / "dvclive/sft/plots/metrics"
    write_tsv(base / "epoch.tsv", "epoch", [(0, 0.5), (1, 1.0), (2, 1.0)])
    write_tsv(base / "loss.tsv", "loss", [(0, 2.0), (1, 1.0)])
    write_tsv(base / "eval/loss.tsv", "loss", [(2, 1.5)])
    curves = read_loss_curves({"sft": str(tmp_path / "dvclive/sft")})
    assert curves == {"sft": {"train": [(0.5, 2.0), (1.0, 1.0)], "eval": [(1.0, 1.5)]}}
    plotting.setup()
    fig = plotting.training_curves(curves)
    assert fig.axes[0].get_xlabel() == "epoch" and len(fig.axes[0].get_lines()) == 2


def test_a_loss_file_of_the_wrong_shape_is_named(tmp_path):
    base = tmp_path / "live/plots/metrics"
    write_tsv(base / "epoch.tsv", "epoch", [(0, 1.0)])
    write_tsv(base / "loss.tsv", "accuracy", [(0, 1.0)])
    with pytest.raises(DataError, match=r"loss.tsv: expected the columns 'step' and 'loss'"):
        read_loss_curves({"sft": str(tmp_path / "live")})



def test_reward_curves_draw_each_reward_the_stage_used_and_uniform_groups_beside(tmp_path):
    base = tmp_path / "dvclive/grpo/plots/metrics"
    write_tsv(base / "reward.tsv", "reward", [(0, 0.25), (1, 0.5)])
    write_tsv(base / "rewards/accuracy/mean.tsv", "mean", [(0, 0.25), (1, 0.5)])
    write_tsv(base / "frac_reward_zero_std.tsv", "frac_reward_zero_std", [(0, 0.4), (1, 0.3)])
    curves = read_reward_curves({"grpo": str(tmp_path / "dvclive/grpo")})
    assert curves == {"grpo": {"reward": [(0.0, 0.25), (1.0, 0.5)], "accuracy": [(0.0, 0.25), (1.0, 0.5)],
                               UNIFORM_GROUPS: [(0.0, 0.4), (1.0, 0.3)]}}
    plotting.setup()
    fig = plotting.reward_curves(curves, UNIFORM_GROUPS)
    rewards, shares = fig.axes
    assert rewards.get_xlabel() == "step" and [line.get_label() for line in rewards.get_lines()] == ["reward", "accuracy"]
    assert [list(line.get_ydata()) for line in shares.get_lines()] == [[0.4, 0.3]]


def test_an_rl_stage_without_its_reward_log_is_named(tmp_path):
    with pytest.raises(DataError, match=r"grpo reward curve not found: .*reward.tsv"):
        read_reward_curves({"grpo": str(tmp_path / "nothing")})


def test_grpo_figures_say_how_much_each_step_saw(tmp_path):
    path = tmp_path / "grpo.json"
    path.write_text(json.dumps({"prompts_per_step": 16, "num_generations": 8, "steps": 40, "reward_first": 0.3,
                                "reward_last": 0.45, "uniform_group_fraction": 0.3125,
                                "completion_length_mean": 61.24, "train_seconds": 151.2}))
    rows = {r["figure"]: r["text"] for r in stage_figures({"grpo": str(path)})["grpo"]}
    assert rows["prompts x completions per step"] == "16 x 8"
    assert rows["groups with one reward for all (teach nothing)"] == "31.2%"
    assert rows["reward, last step"] == "0.450" and rows["training seconds"] == "151"

def test_the_accuracy_chart_has_one_bar_per_model_and_benchmark_with_intervals(eval_dir):
    table = accuracy_table(["base", "sft"], ["gsm8k", "cmath"], eval_dir)
    plotting.setup()
    fig = plotting.accuracy_chart(table)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 1) for p in ax.patches)
    assert heights == [5.5, 6.5, 28.0, 42.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gsm8k", "cmath"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "sft"]
    assert "95% Wilson interval" in ax.get_title() and "n = 200" in ax.get_title()


def test_the_report_finds_each_stages_files_in_its_own_section():
    from mathpipe.evaluation.report import stage_paths

    params = {"sft": {"metrics": "metrics/sft.json", "live_dir": "dvclive/sft"}, "evaluate": {}}
    assert stage_paths(params, ["sft"], "live_dir", "report.curves") == {"sft": "dvclive/sft"}
    with pytest.raises(ConfigError, match=r"report.curves: stage 'ppo' has no ppo.live_dir in params.yaml"):
        stage_paths(params, ["sft", "ppo"], "live_dir", "report.curves")
    with pytest.raises(ConfigError, match=r"report.stage_metrics: stage 'evaluate' has no evaluate.metrics"):
        stage_paths(params, ["evaluate"], "metrics", "report.stage_metrics")


def test_each_model_is_compared_with_the_one_it_was_trained_from(tmp_path):
    """sft against base, grpo against sft; a model whose parent was not evaluated is compared with the
    nearest evaluated ancestor (the rehearsal evaluates base and grpo only)."""
    from mathpipe.evaluation.report import MethodCost, paired_comparisons, render_comparisons
    from mathpipe.io import write_jsonl

    right = {"base": set(), "sft": set(range(0, 30)), "grpo": set(range(2, 31))}  # grpo: 1 fixed, 2 broken
    for model, ids in right.items():
        write_jsonl(tmp_path / model / "gsm8k.jsonl",
                    [{"id": f"q{i}", "correct": i in ids, "extracted": "1"} for i in range(40)])

    def method(starts_from):
        return param_config(MethodCost, "report.methods.sft", starts_from=starts_from)

    methods = {"base": method(None), "sft": method("base"), "grpo": method("sft")}
    rows = paired_comparisons(methods, ["base", "sft", "grpo"], ["gsm8k"], tmp_path)
    assert [(r["model"], r["against"]) for r in rows] == [("sft", "base"), ("grpo", "sft")]
    sft, grpo = rows
    assert sft["significant"] and sft["fixed"] == 30 and sft["p_value"] == pytest.approx(2 / 2**30)
    assert not grpo["significant"] and (grpo["fixed"], grpo["broken"]) == (1, 2)
    text = render_comparisons(rows)
    assert "| sft | base | gsm8k | greedy | +75.0 |" in text and "| **better** |" in text
    assert "Significant at p < 0.05: sft better than base on gsm8k greedy (+75.0)." in text
    assert "No significant difference on any benchmark: grpo against sft." in text
    rehearsal = paired_comparisons(methods, ["base", "grpo"], ["gsm8k"], tmp_path)
    assert [(r["model"], r["against"]) for r in rehearsal] == [("grpo", "base")]
