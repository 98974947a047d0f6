"""report: one table and a few figures that say what each step of the pipeline did.

    python -m stages.report      # params: report.*, evaluate.*, and each reported stage's metrics / live_dir

Writes metrics/report.md and metrics/report.json (one row per model: accuracy and 95% interval on
every benchmark, and what its own training cost; then the SFT, reward-model, rejection-sampling,
RFT, DPO and GRPO figures), and under plots/report/{png,svg}: accuracy.* (bars by model and
benchmark), training_curves.* (DVCLive loss curves), reward_curves.* (GRPO's reward per step) and
copies of the attention comparisons named in report.attention_figures. All are small and kept in
git, so the README can show them.
"""

import logging
from pathlib import Path

from mathpipe.cli import run_stage
from mathpipe.config import load_params, load_section
from mathpipe.evaluation.attention import AttentionConfig
from mathpipe.evaluation.evaluate import EvaluateConfig
from mathpipe.evaluation.report import ReportConfig, write_report

log = logging.getLogger("stages.report")


def main() -> None:
    cfg = load_section("report", ReportConfig)
    evaluate = load_section("evaluate", EvaluateConfig)
    attention = load_section("attention", AttentionConfig)
    markdown = write_report(cfg, load_params(), evaluate.models, evaluate.benchmarks, evaluate.metrics_dir,
                            Path(attention.plots_dir) / "compare" / "png", evaluate.predictions_dir, evaluate.sampled,
                            "greedy" if evaluate.generation.n == 1 else f"avg@{evaluate.generation.n}")
    log.info("report: %s, %s and %s\n%s", cfg.table_markdown, cfg.table_json, cfg.plots_dir, markdown)


if __name__ == "__main__":
    run_stage(main)
