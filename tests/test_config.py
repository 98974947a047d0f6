"""Typed parameters (mathpipe.config): every bad key, type or range stops with one ConfigError naming
the full dotted key, and the repository's own params.yaml loads into every section class."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe.config import from_dict, load_params, load_section
from mathpipe.data.prepare import Filters, PrepareConfig
from mathpipe.data.sample_data import SampleConfig
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.evaluation.evaluate import EvaluateConfig
from mathpipe.generation import GenerationSettings
from mathpipe.training.base_model import BaseModelConfig
from mathpipe.training.rejection_sampling import RejectionConfig
from mathpipe.training.tiny_model import TinyModelConfig
from tests.params import param_config

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
SECTIONS = {
    "sample": SampleConfig,
    "base_model": BaseModelConfig,
    "prepare": PrepareConfig,
    "rejection_sampling": RejectionConfig,
    "evaluate": EvaluateConfig,
}


def raises_for(key: str, *fragments: str):
    """pytest.raises(ConfigError) whose message starts with `key:` and holds every fragment."""
    pattern = "^" + re.escape(f"{key}:") + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(ConfigError, match=re.compile(pattern, re.S))


# --- the repository's params.yaml ------------------------------------------------------------------


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_repo_params_load_for_every_section(section):
    cfg = load_section(section, SECTIONS[section], PARAMS)
    assert isinstance(cfg, SECTIONS[section])
    raw = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))[section]
    # every top-level key written in params.yaml reached the config object unchanged (floats as floats)
    def same(got, value, key):
        if isinstance(value, dict) and dataclasses.is_dataclass(got):
            for sub, sub_value in value.items():
                same(getattr(got, sub), sub_value, f"{key}.{sub}")
        elif value is not None:
            assert got == value, key

    same(cfg, raw, section)


def test_repo_params_values_have_their_declared_types():
    prepare = load_section("prepare", PrepareConfig, PARAMS)
    assert isinstance(prepare.filters, Filters) and isinstance(prepare.val_fraction, float)
    base = load_section("base_model", BaseModelConfig, PARAMS)
    assert isinstance(base.tiny, TinyModelConfig) and base.hub is None
    evaluate = load_section("evaluate", EvaluateConfig, PARAMS)
    assert isinstance(evaluate.generation, GenerationSettings)
    assert isinstance(evaluate.generation.temperature, float)  # written as 0.0, but 0 must work too


# --- unknown keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "prefix", "raw", "key"),
    [
        (PrepareConfig, "prepare", {"out_dri": "x"}, "prepare.out_dri"),
        (PrepareConfig, "prepare", {"filters": {"max_tok": 5}}, "prepare.filters.max_tok"),
        (PrepareConfig, "prepare", {"files": {"openr1": "a", "gsm8k": "b"}}, "prepare.files.gsm8k"),
        (PrepareConfig, "prepare", {"hub": {"openr1": {"repo": "r", "revision": "0" * 40, "files": "*",
                                                       "split": "x"}}}, "prepare.hub.openr1.split"),
        (BaseModelConfig, "base_model", {"tiny": {"layers": 2}}, "base_model.tiny.layers"),
        (EvaluateConfig, "evaluate", {"generation": {"temp": 0.5}}, "evaluate.generation.temp"),
    ],
)
def test_unknown_key_is_named_with_its_full_path(cls, prefix, raw, key):
    with raises_for(key, "unknown parameter", "known:"):
        param_config(cls, prefix, **raw)


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        param_config(Filters, "prepare.filters", **{"max_tok": 5})
    assert "max_tokens" in str(info.value) and "min_correctness_count" in str(info.value)


def test_non_string_yaml_keys_are_unknown_parameters_not_a_crash():
    raw = yaml.safe_load("1: a\nfoo: b\nseed: 3\n")  # YAML gives an int key next to string keys
    with pytest.raises(ConfigError, match=r"^sample\.(1|foo): unknown parameter"):
        from_dict(SampleConfig, raw, "sample")


# --- types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "prefix", "raw", "key", "fragments"),
    [
        (SampleConfig, "sample", {"n_train": "200"}, "sample.n_train", ["expected an integer", "str '200'"]),
        (SampleConfig, "sample", {"n_train": True}, "sample.n_train", ["expected an integer", "bool"]),
        (SampleConfig, "sample", {"n_train": 10.0}, "sample.n_train", ["expected an integer", "float"]),
        (PrepareConfig, "prepare", {"filters": {"max_tokens": "a lot"}}, "prepare.filters.max_tokens",
         ["expected an integer", "'a lot'"]),
        (PrepareConfig, "prepare", {"filters": {"require_complete": 1}}, "prepare.filters.require_complete",
         ["expected true or false", "int 1"]),
        (PrepareConfig, "prepare", {"filters": {"require_complete": "yes"}},
         "prepare.filters.require_complete", ["expected true or false"]),
        (PrepareConfig, "prepare", {"val_fraction": "0.1"}, "prepare.val_fraction", ["expected a number"]),
        (PrepareConfig, "prepare", {"val_fraction": False}, "prepare.val_fraction", ["expected a number"]),
        (PrepareConfig, "prepare", {"sft_sources": ["openr1", "math"]}, "prepare.sft_sources[1]",
         ["must be one of", "'openr1'", "'gsm8k'", "'math'"]),
        (PrepareConfig, "prepare", {"sft_sources": "openr1"}, "prepare.sft_sources", ["expected a list"]),
        (EvaluateConfig, "evaluate", {"models": ["base", 3]}, "evaluate.models[1]",
         ["expected a string", "int 3"]),
        (EvaluateConfig, "evaluate", {"benchmarks": ["gsm8k", "mmlu"]}, "evaluate.benchmarks[1]",
         ["must be one of", "'mmlu'"]),
        (PrepareConfig, "prepare", {"trace": "sampled"}, "prepare.trace",
         ["must be one of", "'generation'", "'solution'", "'sampled'"]),
        (BaseModelConfig, "base_model", {"source": "s3"}, "base_model.source", ["must be one of", "'tiny'"]),
        (PrepareConfig, "prepare", {"out_dir": None}, "prepare.out_dir", ["expected a string", "null"]),
        (PrepareConfig, "prepare", {"filters": {"max_tokens": None}}, "prepare.filters.max_tokens",
         ["expected an integer", "null"]),
        (EvaluateConfig, "evaluate", {"generation": {"stop": None}}, "evaluate.generation.stop",
         ["expected a list", "null"]),
        (PrepareConfig, "prepare", {"filters": 5}, "prepare.filters", ["expected a mapping", "int 5"]),
        (PrepareConfig, "prepare", {"max_train_rows": "all"}, "prepare.max_train_rows",
         ["expected int or null", "str 'all'"]),
        (PrepareConfig, "prepare", {"files": {"openr1": 5}}, "prepare.files.openr1",
         ["expected list or str or null"]),
        (PrepareConfig, "prepare", {"files": {"openr1": ["a/*.parquet", 5]}}, "prepare.files.openr1[1]",
         ["expected a string", "int 5"]),  # the list shape fits: the item at fault is named
        (PrepareConfig, "prepare", {"val_fraction": 10**400}, "prepare.val_fraction", ["out of range"]),
        (BaseModelConfig, "base_model", {"source": "hub", "hub": {"model_id": "Qwen/Qwen3-0.6B"}},
         "base_model.hub.revision", ["required parameter is missing"]),
    ],
)
def test_wrong_type_names_the_key_and_the_value(cls, prefix, raw, key, fragments):
    with raises_for(key, *fragments):
        param_config(cls, prefix, **raw)


def test_good_values_are_accepted_and_converted():
    cfg = param_config(PrepareConfig, "prepare", **{"val_fraction": 0, "max_train_rows": None, "files": {"openr1": ["a", "b"]},
                                    "sft_sources": ["gsm8k", "openr1"]})
    assert cfg.val_fraction == 0.0 and isinstance(cfg.val_fraction, float)
    assert cfg.files.openr1 == ["a", "b"] and cfg.files.gsm8k_train == "gsm8k/train.jsonl"
    assert cfg.sft_sources == ["gsm8k", "openr1"]
    hub = param_config(BaseModelConfig, "base_model", source="hub", hub={"model_id": "m", "revision": "a" * 40})
    assert hub.hub.model_id == "m" and hub.hub.revision == "a" * 40


# --- ranges (each class's validate) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "prefix", "raw", "key", "fragment"),
    [
        (PrepareConfig, "prepare", {"val_fraction": 0.9}, "prepare.val_fraction", "between 0.0 and 0.5"),
        (PrepareConfig, "prepare", {"val_fraction": -0.1}, "prepare.val_fraction", "between"),
        (PrepareConfig, "prepare", {"val_fraction": float("nan")}, "prepare.val_fraction", "between"),
        (PrepareConfig, "prepare", {"batch_size": 0}, "prepare.batch_size", "must be > 0"),
        (PrepareConfig, "prepare", {"max_train_rows": 0}, "prepare.max_train_rows", "must be > 0"),
        (PrepareConfig, "prepare", {"sft_sources": []}, "prepare.sft_sources", "at least one"),
        (PrepareConfig, "prepare", {"filters": {"max_tokens": 0}}, "prepare.filters.max_tokens", "> 0"),
        (PrepareConfig, "prepare", {"filters": {"min_correctness_count": -1}},
         "prepare.filters.min_correctness_count", ">= 0"),
        (PrepareConfig, "prepare", {"raw_dir": "elsewhere"}, "prepare.raw_dir", "source: local"),
        (PrepareConfig, "prepare", {"hub": {"openr1": {"repo": "r", "revision": "main", "files": "*"}}},
         "prepare.hub.openr1.revision", "40-character commit"),
        (EvaluateConfig, "evaluate", {"generation": {"top_p": 0}}, "evaluate.generation.top_p", "between"),
        (EvaluateConfig, "evaluate", {"generation": {"top_p": 1.5}}, "evaluate.generation.top_p", "between"),
        (EvaluateConfig, "evaluate", {"generation": {"n": 4}}, "evaluate.generation.n", "greedy"),
        (EvaluateConfig, "evaluate", {"generation": {"top_k": -1, "temperature": 0.7}}, "evaluate.generation.top_k",
         ">= 0"),
        (EvaluateConfig, "evaluate", {"generation": {"temperature": -1}}, "evaluate.generation.temperature",
         ">= 0"),
        (EvaluateConfig, "evaluate", {"generation": {"max_new_tokens": 0}},
         "evaluate.generation.max_new_tokens", "> 0"),
        (EvaluateConfig, "evaluate", {"models": []}, "evaluate.models", "at least one"),
        (EvaluateConfig, "evaluate", {"max_samples": 0}, "evaluate.max_samples", "> 0"),
        (BaseModelConfig, "base_model", {"source": "hub"}, "base_model.hub", "required"),
        (BaseModelConfig, "base_model", {"source": "local"}, "base_model.local_path", "required"),
        (BaseModelConfig, "base_model", {"hub": {"model_id": "m", "revision": "main"}},
         "base_model.hub.revision", "40-character commit"),
        (BaseModelConfig, "base_model", {"tiny": {"vocab_size": 100}}, "base_model.tiny.vocab_size", ">= 300"),
        (BaseModelConfig, "base_model", {"tiny": {"num_attention_heads": 3, "num_key_value_heads": 2}},
         "base_model.tiny.num_key_value_heads", "divide"),
        (BaseModelConfig, "base_model", {"tiny": {"num_key_value_heads": 0}}, "base_model.tiny.num_key_value_heads",
         "> 0"),
    ],
)
def test_out_of_range_names_the_key(cls, prefix, raw, key, fragment):
    with raises_for(key, fragment):
        param_config(cls, prefix, **raw)


def test_generation_settings_standalone_greedy_with_n():
    with raises_for("evaluate.generation.n", "temperature > 0"):
        param_config(GenerationSettings, "evaluate.generation", n=2)
    assert param_config(GenerationSettings, "evaluate.generation", n=2, temperature=0.5).n == 2


def test_unknown_prompt_template_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown prompt template 'chatty'"):
        param_config(PrepareConfig, "prepare", **{"template": "chatty"})


# --- files and sections --------------------------------------------------------------------------


def test_missing_file_section_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"parameter file not found: {tmp_path / 'nope.yaml'}")):
        load_section("prepare", PrepareConfig, tmp_path / "nope.yaml")

    params = tmp_path / "params.yaml"
    sample = {**yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["sample"], "seed": 1}
    params.write_text(yaml.safe_dump({"sample": sample}), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{params}: missing section 'prepare'")):
        load_section("prepare", PrepareConfig, params)
    assert load_section("sample", SampleConfig, params) == param_config(SampleConfig, "sample", seed=1)

    params.write_text("sample: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(params)
    params.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_params(params)
    params.write_text("sample: 5\n", encoding="utf-8")
    with raises_for("sample", "expected a mapping", "int 5"):
        load_section("sample", SampleConfig, params)


def test_an_empty_section_names_the_first_key_it_lacks(tmp_path):
    """params.yaml holds every default: a section that leaves a key out is an error, not a default."""
    params = tmp_path / "params.yaml"
    params.write_text("sample:\nprepare: {}\n", encoding="utf-8")
    with raises_for("sample.seed", "required parameter is missing"):
        load_section("sample", SampleConfig, params)
    with raises_for("prepare.source", "required parameter is missing"):
        load_section("prepare", PrepareConfig, params)


def test_config_error_is_a_pipeline_error():
    assert issubclass(ConfigError, PipelineError)  # so the stages print it without a traceback


# --- property: an int field never lets another exception through ---------------------------------

ANY_VALUE = st.one_of(
    st.integers(), st.integers(-(10**30), 10**30), st.text(max_size=8), st.floats(allow_nan=True),
    st.none(), st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                                  st.integers(), max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(value=ANY_VALUE)
def test_int_field_returns_the_int_or_names_the_key(value):
    cases = [
        (SampleConfig, "sample", {"seed": value}, "sample.seed", lambda c: c.seed),
        (PrepareConfig, "prepare", {"filters": {"max_tokens": value}}, "prepare.filters.max_tokens",
         lambda c: c.filters.max_tokens),
        (PrepareConfig, "prepare", {"max_train_rows": value}, "prepare.max_train_rows", lambda c: c.max_train_rows),
    ]
    for cls, prefix, raw, key, get in cases:
        try:
            cfg = param_config(cls, prefix, **raw)
        except ConfigError as e:
            assert str(e).startswith(f"{key}:"), str(e)
            continue
        got = get(cfg)
        if value is None:  # only the optional field takes null
            assert key == "prepare.max_train_rows" and got is None
        else:
            assert type(value) is int and type(got) is int and got == value


@settings(max_examples=200, deadline=None)
@given(value=ANY_VALUE)
def test_float_field_returns_a_float_or_names_the_key(value):
    try:
        cfg = param_config(PrepareConfig, "prepare", **{"val_fraction": value})
    except ConfigError as e:
        assert str(e).startswith("prepare.val_fraction:"), str(e)
        return
    assert type(value) in (int, float) and type(cfg.val_fraction) is float
    assert 0.0 <= cfg.val_fraction <= 0.5 and cfg.val_fraction == value
