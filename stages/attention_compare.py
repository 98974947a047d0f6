"""attention_compare: the same layer of every model on the same prompt, side by side.

    python -m stages.attention_compare      # params: attention.*

Reads what the attention stages saved under data/attention/<model>/ and writes one figure per
prompt x layer of attention.compare_layers (default: the last), all models on one colour scale:
plots/attention/compare/png/<prompt>_<layer>.png (and svg/). The report copies some of them.
"""

import logging
from pathlib import Path

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.evaluation import plotting
from mathpipe.evaluation.attention import AttentionConfig, AttentionRecord, layer_stem, window_bounds
from mathpipe.io import atomic_dir

log = logging.getLogger("stages.attention_compare")


def main() -> None:
    cfg = load_section("attention", AttentionConfig)
    records = {name: [AttentionRecord.load(Path(cfg.data_dir) / model, name) for model in cfg.models]
               for name in cfg.prompts}
    plotting.setup()
    with atomic_dir(Path(cfg.plots_dir) / "compare") as out:
        for name, by_model in records.items():
            bounds = [window_bounds(cfg.window, len(r.labels), "attention.window") for r in by_model]
            for spec in cfg.compare_layers:
                position = cfg.layers.index(spec)
                fig = plotting.comparison_figure(by_model, position, bounds, cfg.color_scale)
                plotting.save_figure(fig, out, f"{name}_{layer_stem(spec)}", cfg.dpi)
    log.info("compared %s on %d prompt(s) x %d layer(s) in %s", ", ".join(cfg.models), len(records),
             len(cfg.compare_layers), Path(cfg.plots_dir) / "compare")


if __name__ == "__main__":
    run_stage(main)
