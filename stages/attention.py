"""attention: heat maps of one model's attention on its own answer to each reasoning prompt.

    python -m stages.attention --model sft      # params: attention.*, prompt.*

For each prompt in attention.prompts the model answers (greedy), then one eager forward pass over
prompt + answer gives the weights of attention.layers (first, middle, last by default). Writes
data/attention/<model>/<prompt>.{npz,json} (weights, token labels, answer) and one figure per
prompt x layer: plots/attention/<model>/png/<prompt>_<layer>.png and the same under svg/. The mean
over heads by default; attention.heads: all (or a list) draws one panel per head. dvc.yaml runs it
for every model in attention.models; attention_compare then puts the models side by side.
"""

import argparse
import logging
from pathlib import Path

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.errors import ConfigError
from mathpipe.evaluation import plotting
from mathpipe.evaluation.attention import AttentionConfig, layer_stem, record_attention, resolve_heads, window_bounds
from mathpipe.io import atomic_dir
from mathpipe.models import require_model_dir
from mathpipe.prompts import PromptConfig

log = logging.getLogger("stages.attention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a name from attention.models (a folder under models_dir)")
    args = parser.parse_args()
    cfg = load_section("attention", AttentionConfig)
    if args.model not in cfg.models:
        raise ConfigError(f"--model {args.model}: not in attention.models {cfg.models}")
    model_dir = require_model_dir(Path(cfg.models_dir) / args.model)

    prompt = load_section("prompt", PromptConfig)
    records = record_attention(args.model, model_dir, cfg, prompt.chat_template_kwargs)
    heads = resolve_heads(cfg.heads, records[0].num_heads, "attention.heads")
    plotting.setup()
    with atomic_dir(Path(cfg.data_dir) / args.model) as data_dir, \
            atomic_dir(Path(cfg.plots_dir) / args.model) as plots_dir:
        for record in records:
            record.save(data_dir)
            lo, hi = window_bounds(cfg.window, len(record.labels), "attention.window")
            for position, spec in enumerate(record.layer_specs):
                fig = plotting.attention_figure(record, position, lo, hi, heads, cfg.color_scale)
                plotting.save_figure(fig, plots_dir, f"{record.prompt_name}_{layer_stem(spec)}", cfg.dpi)
            log.info("%s, prompt %s: %d tokens (answer %d), layers %s; answer: %r", args.model,
                     record.prompt_name, len(record.labels), len(record.labels) - record.prompt_tokens,
                     record.layers, record.answer[:120])


if __name__ == "__main__":
    run_stage(main)
