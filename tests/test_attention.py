"""Attention maps: layer and head choice, token labels, the weights, and figures people can read."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe.errors import ConfigError
from mathpipe.evaluation import attention, plotting
from mathpipe.evaluation.attention import (
    AttentionConfig,
    AttentionRecord,
    WindowSettings,
    resolve_heads,
    resolve_layers,
    token_labels,
    window_bounds,
)
from mathpipe.models import load_causal_lm, load_tokenizer
from tests.params import param_config

PROMPTS = {"en": "Tom has 3 apples and buys 4 more. How many apples does Tom have?",
           "zh": "小明有3本故事书，后来又买了4本。小明现在一共有多少本故事书？"}


def config(**overrides) -> AttentionConfig:
    raw = {"models": ["base"], "prompts": PROMPTS, "generation": {"max_new_tokens": 24}, **overrides}
    return param_config(AttentionConfig, "attention", **raw)


# --- layers, heads, window ---------------------------------------------------------------------


def test_layer_names_resolve_to_first_middle_and_last():
    assert resolve_layers(["first", "middle", "last"], 4, "k") == [0, 2, 3]
    assert resolve_layers(["first", "middle", "last"], 1, "k") == [0, 0, 0]
    assert resolve_layers([1, -1, -4], 4, "k") == [1, 3, 0]


@given(num_layers=st.integers(1, 64), spec=st.integers(-200, 200))
def test_a_layer_index_is_either_resolved_in_range_or_refused_with_its_key(num_layers, spec):
    if -num_layers <= spec < num_layers:
        (layer,) = resolve_layers([spec], num_layers, "attention.layers")
        assert 0 <= layer < num_layers and (layer - spec) % num_layers == 0
    else:
        with pytest.raises(ConfigError, match=rf"attention.layers\[0\]: layer {spec} does not exist: "
                                              rf"the model has {num_layers} layers"):
            resolve_layers([spec], num_layers, "attention.layers")


def test_heads_mean_all_or_chosen_and_an_out_of_range_head_is_refused():
    assert resolve_heads("mean", 4, "k") is None
    assert resolve_heads("all", 3, "k") == [0, 1, 2]
    assert resolve_heads([2, 0], 4, "k") == [2, 0]
    with pytest.raises(ConfigError, match=r"attention.heads\[1\]: head 4 does not exist: the model has 4 "
                                          r"attention heads \(0 to 3\)"):
        resolve_heads([0, 4], 4, "attention.heads")


@given(length=st.integers(1, 500), start=st.integers(-600, 600), size=st.one_of(st.none(), st.integers(1, 200)))
def test_the_window_stays_inside_the_sequence(length, start, size):
    window = param_config(WindowSettings, "attention.window", start=start, size=size)
    first = start if start >= 0 else max(0, length + start)
    if first >= length:
        with pytest.raises(ConfigError, match="attention.window.start"):
            window_bounds(window, length, "attention.window")
        return
    lo, hi = window_bounds(window, length, "attention.window")
    assert 0 <= lo < hi <= length
    assert hi - lo == (length - lo if size is None else min(size, length - lo))


def test_the_default_window_is_the_last_64_tokens():
    assert window_bounds(param_config(WindowSettings, "attention.window"), 139, "w") == (75, 139)
    assert window_bounds(param_config(WindowSettings, "attention.window"), 40, "w") == (0, 40)


@pytest.mark.parametrize("overrides, key", [
    ({"layers": []}, "attention.layers"),
    ({"layers": ["top"]}, "attention.layers[0]"),
    ({"heads": "some"}, "attention.heads"),
    ({"heads": []}, "attention.heads"),
    ({"prompts": {}}, "attention.prompts"),
    ({"prompts": {"a b": "x"}}, "attention.prompts.a b"),
    ({"prompts": {"en": "  "}}, "attention.prompts.en"),
    ({"window": {"size": 0}}, "attention.window.size"),
    ({"color_scale": "cubic"}, "attention.color_scale"),
    ({"models": ["compare"]}, "attention.models"),
    ({"layers": ["first"], "compare_layers": ["middle"]}, "attention.compare_layers[0]"),
    ({"generation": {"n": 2, "temperature": 1.0}}, "attention.generation.n"),
])
def test_bad_attention_params_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}:"):
        config(**overrides)


def test_layer_and_head_are_checked_against_the_model_before_it_loads(tiny_model_dir, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was loaded before the layers were checked")

    monkeypatch.setattr("mathpipe.generation.make_generator", must_not_run)
    monkeypatch.setattr("mathpipe.models.load_causal_lm", must_not_run)
    with pytest.raises(ConfigError, match=r"attention.layers\[1\]: layer 5 does not exist: the model has 2 layers"):
        attention.record_attention("base", tiny_model_dir, config(layers=["first", 5], compare_layers=["first"]))
    with pytest.raises(ConfigError, match=r"attention.heads\[0\]: head 3 does not exist: the model has 1 "):
        attention.record_attention("base", tiny_model_dir, config(heads=[3]))


# --- token labels --------------------------------------------------------------------------------


def _unlabel(labels: list[str]) -> str:
    return "".join(label for label in labels if label != attention.CONTINUATION).replace("␣", " ").replace("↵", "\n")


@pytest.mark.parametrize("text", [
    "Tom has 3 apples.\nHow many?",
    "小明有3本故事书，现在一共有多少本？",
    "龘𠀀 mixed 中文 and English ✓",  # rare characters: byte-level BPE splits them into bytes
])
def test_labels_spell_out_the_text_with_whole_characters(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    labels = token_labels(tiny_tokenizer, ids, max_chars=100)
    assert len(labels) == len(ids)
    assert _unlabel(labels) == text
    assert not any("\ufffd" in label for label in labels)


def test_a_character_split_across_tokens_is_labelled_on_its_last_token(tiny_tokenizer):
    ids = tiny_tokenizer("龘", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # not in the tiny vocabulary: one token per UTF-8 byte
    assert token_labels(tiny_tokenizer, ids) == [attention.CONTINUATION] * (len(ids) - 1) + ["龘"]


def test_long_labels_are_cut():
    class Spell:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(["internationalisation", " x"][i] for i in ids)

    assert token_labels(Spell(), [0, 1], max_chars=8) == ["interna…", "␣x"]


# --- weights and records -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(pretrained_model_dir):
    return attention.record_attention("base", pretrained_model_dir, config(layers=["first", "last"]))


def test_weights_are_causal_distributions_for_each_head(records, pretrained_model_dir):
    for record in records:
        n = len(record.labels)
        assert record.weights.shape == (2, record.num_heads, n, n)
        assert record.layers == [0, 1] and record.num_layers == 2
        np.testing.assert_allclose(record.weights.sum(axis=-1), 1.0, atol=1e-4)
        assert np.all(np.triu(record.weights, k=1) == 0)  # no token attends to a later one
        assert 0 < record.prompt_tokens < n and record.answer  # the model answered


def test_labels_cover_prompt_and_answer(records):
    for record, question in zip(records, PROMPTS.values()):
        text = _unlabel(record.labels)
        assert text.startswith("<|im_start|>user") and question in text
        assert text.endswith(record.answer.rstrip("\ufffd"))


def test_eager_forward_matches_the_model_logits(pretrained_model_dir):
    """The attention pass is the model's own forward: eager attention gives the same logits as SDPA."""
    import torch

    ids = load_tokenizer(pretrained_model_dir)("12 + 7 = 19", add_special_tokens=False)["input_ids"]
    eager = load_causal_lm(pretrained_model_dir, device="cpu", attn_implementation="eager")
    sdpa = load_causal_lm(pretrained_model_dir, device="cpu", attn_implementation="sdpa")
    with torch.no_grad():
        torch.testing.assert_close(eager(torch.tensor([ids])).logits, sdpa(torch.tensor([ids])).logits,
                                   atol=1e-4, rtol=1e-4)
    assert attention.attention_weights(eager, ids, [0, 1]).shape[-1] == len(ids)


def test_a_record_survives_save_and_load(records, tmp_path):
    records[1].save(tmp_path)
    loaded = AttentionRecord.load(tmp_path, records[1].prompt_name)
    assert loaded.labels == records[1].labels and loaded.answer == records[1].answer
    np.testing.assert_allclose(loaded.weights, records[1].weights)
    assert json.loads((tmp_path / f"{records[1].prompt_name}.json").read_text())["layer_specs"] == ["first", "last"]


# --- figures -------------------------------------------------------------------------------------


def synthetic_record(n: int, labels: list[str] | None = None, heads: int = 2, model: str = "sft") -> AttentionRecord:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, heads, n, n))
    logits[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return AttentionRecord(model=model, prompt_name="zh", question=PROMPTS["zh"], answer="…",
                           labels=labels or [f"t{i}" for i in range(n)], prompt_tokens=n // 2,
                           layer_specs=["last"], layers=[3], num_layers=4, num_heads=heads, weights=weights)


def _boxes_overlap(boxes, axis: int) -> list[tuple[int, int]]:
    spans = sorted((b.get_points()[0][axis], b.get_points()[1][axis], i) for i, b in enumerate(boxes))
    return [(a[2], b[2]) for a, b in zip(spans, spans[1:]) if b[0] < a[1] - 0.5]  # half a pixel of slack


@pytest.mark.parametrize("heads", [None, [0, 1]])
def test_64_token_labels_do_not_overlap_and_chinese_has_a_font(heads):
    chinese = ["小明", "有", "3", "本故事书", "，", "现在一共有多少", "？", "↵", "␣apples", "<|im_start|>"]
    record = synthetic_record(64, labels=[chinese[i % len(chinese)] for i in range(64)])
    plotting.setup()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plotting.attention_figure(record, 0, 0, 64, heads, "sqrt")
        fig.canvas.draw()
    assert not [w for w in caught if "missing from font" in str(w.message)], "a glyph has no font"
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:-1]:  # the last axes is the colour bar
        y = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
        x = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(y) in (0, 64) and len(x) in (0, 64)
        assert not _boxes_overlap(y, axis=1), "y labels overlap"
        assert not _boxes_overlap(x, axis=0), "x labels overlap"
    titles = fig._suptitle.get_text()
    assert "sft" in titles and "layer 3 of 4" in titles and "小明有3本故事书" in titles
    colorbar = fig.axes[-1]
    assert "attention weight" in colorbar.get_ylabel()


def test_figures_are_saved_as_png_and_svg(tmp_path):
    plotting.setup()
    records = [synthetic_record(40, model=m) for m in ("base", "sft", "dpo")]
    written = plotting.save_figure(plotting.comparison_figure(records, 0, [(0, 40)] * 3, "log"), tmp_path, "zh_last")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["png/zh_last.png", "svg/zh_last.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = written[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


@settings(deadline=None, max_examples=5)
@given(n=st.integers(2, 120))
def test_figure_size_grows_with_the_window_so_cells_keep_their_size(n):
    plotting.setup()
    fig = plotting.attention_figure(synthetic_record(n), 0, 0, n, None, "linear")
    ax = fig.axes[0]
    width_inches = ax.get_position().width * fig.get_figwidth()
    assert width_inches == pytest.approx(n * plotting.CELL_INCHES)
    plotting.plt.close(fig)
