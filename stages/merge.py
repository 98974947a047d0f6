"""merge: fold a LoRA adapter into its base and save a standalone checkpoint, checked by logits.

    python -m stages.merge --name sft     # params: merge.*, prompt.*   output: models/sft/, metrics/merge/sft.json

merge.models.<name> gives the base, the adapter and the output folder; dvc.yaml runs one stage per
name. The stage fails, writing nothing, if the merged weights' logits differ from base + adapter by
more than merge.tolerance, or if the checkpoint read back does not hold the weights saved; the
rounding of saving in a lower dtype (bf16) is measured and reported, not checked.
"""

import argparse

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.errors import ConfigError
from mathpipe.io import write_json
from mathpipe.prompts import PromptConfig
from mathpipe.training.merge import MergeConfig, merge_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="a key of merge.models")
    args = parser.parse_args()
    cfg = load_section("merge", MergeConfig)
    if args.name not in cfg.models:
        raise ConfigError(f"--name {args.name}: not in merge.models ({', '.join(cfg.models)})")
    spec = cfg.models[args.name]
    prompt = load_section("prompt", PromptConfig)
    summary = merge_adapter(spec.base, spec.adapter, spec.out, cfg, prompt.chat_template_kwargs)
    write_json(f"{cfg.metrics_dir}/{args.name}.json", summary)


if __name__ == "__main__":
    run_stage(main)
