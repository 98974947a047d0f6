"""report: one table and a few figures that say what each step of the pipeline did.

    python -m stages.report      # params: report.*, and evaluate.models / benchmarks / metrics_dir

Writes metrics/report.md and metrics/report.json (every model on every benchmark: accuracy, 95%
interval, n; then the SFT, reward-model, rejection-sampling, DPO and GRPO figures), and under
plots/report/{png,svg}: accuracy.* (bars by model and benchmark), training_curves.* (DVCLive loss
curves), reward_curves.* (GRPO's reward per step) and copies of the attention comparisons named in
report.attention_figures. All are small and kept in git, so the README can show them.
"""

import logging
import shutil
from pathlib import Path

from mathpipe import plotting
from mathpipe.attention import AttentionConfig
from mathpipe.cli import run_stage
from mathpipe.config import from_dict, load_params
from mathpipe.evaluation import EvaluateConfig
from mathpipe.io import atomic_dir, atomic_write_text, require_file, write_json
from mathpipe.report import (
    ReportConfig,
    accuracy_table,
    read_loss_curves,
    read_reward_curves,
    render_markdown,
    stage_figures,
)

log = logging.getLogger("stages.report")


def main() -> None:
    params = load_params()
    cfg = from_dict(ReportConfig, params.get("report"), "report")
    evaluate = from_dict(EvaluateConfig, params.get("evaluate"), "evaluate")
    attention = from_dict(AttentionConfig, params.get("attention"), "attention")
    compare_dir = Path(attention.plots_dir) / "compare" / "png"
    figures = [require_file(compare_dir / f"{stem}.png", "attention figure (report.attention_figures)")
               for stem in cfg.attention_figures]

    table = accuracy_table(evaluate.models, evaluate.benchmarks, evaluate.metrics_dir)
    stages = stage_figures(cfg.stage_metrics)
    curves = read_loss_curves(cfg.curves)
    rewards = read_reward_curves(cfg.reward_curves)

    markdown = render_markdown(table, stages)
    atomic_write_text(cfg.table_markdown, markdown)
    write_json(cfg.table_json, {"accuracy": table, "stages": stages})
    plotting.setup()
    with atomic_dir(cfg.plots_dir) as out:
        plotting.save_figure(plotting.accuracy_chart(table), out, "accuracy", cfg.dpi)
        if curves:
            plotting.save_figure(plotting.training_curves(curves), out, "training_curves", cfg.dpi)
        if rewards:
            plotting.save_figure(plotting.reward_curves(rewards), out, "reward_curves", cfg.dpi)
        for figure in figures:  # the SVG beside each PNG comes along
            for fmt in ("png", "svg"):
                shutil.copyfile(figure.parent.parent / fmt / f"{figure.stem}.{fmt}",
                                out / fmt / f"attention_{figure.stem}.{fmt}")
    log.info("report: %s, %s and %s\n%s", cfg.table_markdown, cfg.table_json, cfg.plots_dir, markdown)


if __name__ == "__main__":
    run_stage(main)
