"""benchmarks/grpo_step.py's own logic: -S overrides and the per-step table (the benchmark itself is make bench-grpo)."""

from __future__ import annotations

import pytest

from benchmarks.grpo_step import StepTimer, apply_overrides
from mathpipe.errors import ConfigError


def test_overrides_set_nested_keys_as_yaml_on_a_copy():
    section = {"lora": {"r": 8}, "train": {"max_steps": 200}}
    out = apply_overrides(section, ["grpo.lora=null", "grpo.train.max_completion_length=96",
                                    "grpo.train.lr_scheduler_type=linear"])
    assert out == {"lora": None, "train": {"max_steps": 200, "max_completion_length": 96, "lr_scheduler_type": "linear"}}
    assert section == {"lora": {"r": 8}, "train": {"max_steps": 200}}


@pytest.mark.parametrize("item", ["sft.lora=null", "grpo.train.max_steps", "grpo=1"])
def test_an_override_outside_the_grpo_section_is_named(item):
    with pytest.raises(ConfigError, match="expected grpo.<key>=<value>"):
        apply_overrides({"train": {}}, [item])


def test_the_table_leaves_out_the_first_step_and_counts_the_rest_as_trl():
    timer = StepTimer()
    for step, (generation, backward, total) in enumerate([(9.0, 9.0, 30.0), (2.0, 1.0, 4.0), (3.0, 1.0, 5.0),
                                                          (2.0, 2.0, 4.5)]):
        timer.current = step
        timer.step_started[step] = 100.0 * step
        timer.add("generation", generation)
        timer.add("backward", backward)
        timer.step_ended[step] = 100.0 * step + total
    table = timer.table()
    assert table["steps_timed"] == 3 and table["step_seconds_median"] == 4.5
    assert table["parts"]["generation"]["median_seconds"] == 2.0
    assert table["parts"]["trl_other"]["median_seconds"] == 1.0  # 4 - 3, 5 - 4, 4.5 - 4
    assert table["parts"]["reward"]["median_seconds"] == 0.0


def test_a_run_of_one_step_has_nothing_to_time():
    timer = StepTimer()
    timer.step_started[0], timer.step_ended[0] = 0.0, 1.0
    with pytest.raises(SystemExit, match="--steps 2 or more"):
        timer.table()
