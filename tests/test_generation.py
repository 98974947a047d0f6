"""The generation interface (mathpipe.generation) on the tiny random model, and evaluation metrics
(mathpipe.evaluation.evaluate)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe import prompts
from mathpipe.errors import PipelineError
from mathpipe.evaluation.evaluate import evaluate, wilson_interval
from mathpipe.generation import Completion, EngineSettings, GenerationSettings, make_generator
from mathpipe.generation.decoding import truncate_at_stop
from mathpipe.generation.transformers_backend import TransformersGenerator
from mathpipe.training.tiny_model import IM_START
from tests.params import param_config

N_PROMPTS = 12


@pytest.fixture(scope="module")
def model_dir(varied_model_dir):
    return varied_model_dir


@pytest.fixture(scope="module")
def gen(model_dir):
    return TransformersGenerator(str(model_dir), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def questions(sample_dir):
    rows = [json.loads(line) for line in (sample_dir / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["question"] for r in rows[:N_PROMPTS]]


@pytest.fixture(scope="module")
def rendered(gen, questions):
    return [prompts.render_prompt(gen.tokenizer, q) for q in questions]


@pytest.fixture(scope="module")
def greedy(gen, rendered):
    return gen.generate(rendered, param_config(GenerationSettings, "evaluate.generation", max_new_tokens=24, stop=[]))


def texts(outputs: list[list[Completion]]) -> list[str]:
    return [c.text for group in outputs for c in group]


# --- greedy ------------------------------------------------------------------------------------------


def test_greedy_output_is_not_degenerate(greedy, rendered, gen):
    assert len(greedy) == len(rendered) and all(len(group) == 1 for group in greedy)
    assert len(set(texts(greedy))) >= len(rendered) // 2  # so the parity tests below compare something
    lengths = {len(ids) for ids in gen.encode(rendered)}
    assert len(lengths) >= 4  # prompts of different lengths: the batches are left-padded


def test_greedy_is_deterministic_and_independent_of_batch_size(model_dir, gen, rendered, greedy):
    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=24, stop=[])
    assert gen.generate(rendered, s) == greedy
    one = TransformersGenerator(str(model_dir), device="cpu", batch_size=1)
    assert one.generate(rendered, s) == greedy  # left padding does not change greedy decoding
    assert gen.generate(rendered[::-1], s) == greedy[::-1]  # nor does the order of the prompts


def test_greedy_with_default_stops_agrees_across_batch_sizes(model_dir, gen, rendered):
    """With the chat stop strings, a completion that stops on <|im_start|> must say "stop" whether or not
    other sequences in its batch went on (they pad it with EOS) or it was alone (no EOS follows)."""
    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=24)
    one = TransformersGenerator(str(model_dir), device="cpu", batch_size=1)
    batched, single = gen.generate(rendered, s), one.generate(rendered, s)
    assert batched == single
    for group in batched:
        c = group[0]
        assert (c.finish_reason == "length") == (c.num_tokens == 24)


def test_stop_on_a_special_token_is_a_stop(gen):
    s = param_config(GenerationSettings, "evaluate.generation")
    ids = gen.tokenizer("So 12 apples", add_special_tokens=False)["input_ids"]
    im_start = gen.tokenizer.convert_tokens_to_ids(IM_START)
    assert gen._completion(ids + [im_start], s) == Completion("So 12 apples", len(ids) + 1, "stop")
    assert gen._completion(ids + [gen.tokenizer.eos_token_id, 5, 6], s) == Completion("So 12 apples", len(ids), "stop")
    assert gen._completion(ids, s) == Completion("So 12 apples", len(ids), "length")


# --- sampling ------------------------------------------------------------------------------------------


def test_sampling_n_completions_reproducible_with_the_seed(gen, rendered):
    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=12, temperature=1.0, n=3, seed=5, stop=[])
    first = gen.generate(rendered[:4], s)
    assert [len(group) for group in first] == [3, 3, 3, 3]
    assert all(isinstance(c, Completion) and c.num_tokens <= 12 for group in first for c in group)
    assert gen.generate(rendered[:4], s) == first
    assert any(len({c.text for c in group}) > 1 for group in first)  # n samples, not n copies
    other = gen.generate(rendered[:4], param_config(GenerationSettings, "evaluate.generation", max_new_tokens=12, temperature=1.0, n=3, seed=6, stop=[]))
    assert texts(other) != texts(first)


# --- stop strings and length ------------------------------------------------------------------------------


def test_stop_string_is_cut_from_the_text(gen, rendered, greedy):
    checked = 0
    for prompt, (full,) in zip(rendered, greedy):
        # a short ASCII piece of the greedy output, not at its very start, as the stop string
        spots = [i for i in range(2, len(full.text) - 2) if full.text[i:i + 2].isascii() and full.text[i:i + 2].strip()]
        if not spots:
            continue
        stop = full.text[spots[0]:spots[0] + 2]
        ((c,),) = gen.generate([prompt], param_config(GenerationSettings, "evaluate.generation", max_new_tokens=24, stop=[stop, "never-seen"]))
        assert c.text == full.text[: full.text.find(stop)]
        assert stop not in c.text
        assert c.finish_reason == "stop" and c.num_tokens < 24
        checked += 1
    assert checked >= 3


def test_truncation_reports_length(gen, rendered, greedy):
    long = [p for p, (c,) in zip(rendered, greedy) if c.finish_reason == "length"]
    assert len(long) >= 3
    out = gen.generate(long, param_config(GenerationSettings, "evaluate.generation", max_new_tokens=5, stop=[]))
    for (c,) in out:
        assert c.finish_reason == "length" and c.num_tokens == 5


def test_generation_stops_at_the_model_maximum_length(gen, questions):
    limit = gen.max_length
    text = prompts.render_prompt(gen.tokenizer, questions[0] + " 1" * 2000)
    ids = gen.tokenizer(text, add_special_tokens=False)["input_ids"]
    short = gen.tokenizer.decode(ids[-(limit - 3):])  # 3 positions left for new tokens
    assert len(gen.encode([short])[0]) == limit - 3
    ((c,),) = gen.generate([short], param_config(GenerationSettings, "evaluate.generation", max_new_tokens=50, stop=[]))
    assert c.num_tokens <= 3


# --- bad input -----------------------------------------------------------------------------------------


def test_empty_prompt_list(gen):
    with pytest.raises(PipelineError, match="no prompts to generate from"):
        gen.generate([], param_config(GenerationSettings, "evaluate.generation"))


def test_empty_prompt(gen, rendered):
    with pytest.raises(PipelineError, match="prompt 1 is empty"):
        gen.generate([rendered[0], ""], param_config(GenerationSettings, "evaluate.generation"))


def test_prompt_longer_than_the_model_maximum(gen, rendered):
    too_long = prompts.render_prompt(gen.tokenizer, "1 " * 1200)
    n = len(gen.tokenizer(too_long, add_special_tokens=False)["input_ids"])
    assert n > gen.max_length == 1024
    with pytest.raises(PipelineError, match=rf"prompt 1 has {n} tokens and the model's maximum length is 1024"):
        gen.generate([rendered[0], too_long], param_config(GenerationSettings, "evaluate.generation"))


def test_unknown_backend(model_dir):
    with pytest.raises(PipelineError, match="unknown generation backend 'tgi'"):
        # past the config's own check (a caller that builds EngineSettings itself)
        engine = dataclasses.replace(param_config(EngineSettings, "evaluate.engine"), backend="tgi")
        make_generator(str(model_dir), engine)


def test_engine_settings_are_checked():
    from mathpipe.errors import ConfigError

    for raw, key in [({"backend": "tgi"}, "backend"), ({"kv_cache_gib": 0}, "kv_cache_gib"),
                     ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
                     ({"tensor_parallel_size": 0}, "tensor_parallel_size"), ({"dtype": "fp8"}, "dtype")]:
        with pytest.raises(ConfigError, match=rf"^evaluate\.engine\.{key}:"):
            param_config(EngineSettings, "evaluate.engine", **raw)


def test_auto_falls_back_to_transformers_and_says_why(model_dir, monkeypatch, caplog):
    from mathpipe.generation import vllm_backend

    monkeypatch.setattr(vllm_backend, "unavailable_reason", lambda path: "vllm is not installed")
    with caplog.at_level("INFO", logger="mathpipe.generation"):
        gen = make_generator(str(model_dir), param_config(EngineSettings, "evaluate.engine", backend="auto"))
    assert gen.name == "transformers"
    assert "using transformers because vllm is not installed" in caplog.text
    with pytest.raises(PipelineError, match="backend 'vllm' cannot run here: vllm is not installed"):
        make_generator(str(model_dir), param_config(EngineSettings, "evaluate.engine", backend="vllm"))


def test_missing_model(tmp_path):
    with pytest.raises(PipelineError, match="model not found"):
        TransformersGenerator(str(tmp_path / "nope"))


# --- truncate_at_stop -------------------------------------------------------------------------------------


def test_truncate_at_stop_examples():
    assert truncate_at_stop("a<|im_end|>b<|im_start|>", ["<|im_start|>", "<|im_end|>"]) == ("a", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)
    assert truncate_at_stop("abc", []) == ("abc", False)
    assert truncate_at_stop("abc", [""]) == ("abc", False)  # an empty stop string is ignored
    assert truncate_at_stop("abcabc", ["c", "bc"]) == ("a", True)  # the earliest match wins
    assert truncate_at_stop("xabc", ["x"]) == ("", True)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab<|>\n ", max_size=30), stop=st.lists(st.text(alphabet="ab<|>\n ", max_size=3), max_size=3))
def test_truncate_at_stop_property(text, stop):
    cut, found = truncate_at_stop(text, stop)
    real = [s for s in stop if s]
    assert text.startswith(cut)
    assert found == any(s in text for s in real)
    assert not any(s in cut for s in real)  # no stop string survives, not even one that starts earlier
    if found:
        assert any(text[len(cut):].startswith(s) for s in real)
    else:
        assert cut == text


# --- wilson_interval ----------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_wilson_interval_properties(data):
    n = data.draw(st.integers(1, 100_000))
    correct = data.draw(st.integers(0, n))
    low, high = wilson_interval(correct, n)
    p = correct / n
    assert 0.0 <= low <= p <= high <= 1.0
    assert (low == 0.0) == (correct == 0) and (high == 1.0) == (correct == n)
    # the same proportion measured on 4x more questions gives a narrower interval
    low4, high4 = wilson_interval(4 * correct, 4 * n)
    assert high4 - low4 < high - low
    assert low4 <= p <= high4


def test_wilson_interval_known_values():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(50, 100)
    assert math.isclose(low, 0.4038, abs_tol=1e-4) and math.isclose(high, 0.5962, abs_tol=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    low, high = wilson_interval(0, 10)
    assert math.isclose(high, 0.2775, abs_tol=1e-4)


# --- evaluate -------------------------------------------------------------------------------------------------


class ScriptedGenerator:
    """A Generator whose outputs are fixed in advance (to check the arithmetic of the metrics)."""

    name = "scripted"

    def __init__(self, tokenizer, completions: list[Completion]):
        self.tokenizer = tokenizer
        self.completions = completions
        self.seen: list[str] = []

    def generate(self, prompt_texts, settings):
        self.seen = list(prompt_texts)
        return [[c] for c in self.completions]


def test_evaluate_metrics_from_scripted_outputs(tiny_tokenizer):
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "gold": str(i + 1)} for i in range(5)]
    completions = [
        Completion("<think>0 + 1 = 1</think> The answer is \\boxed{1}.", 10, "stop"),  # right
        Completion("The answer is 2", 4, "stop"),  # right, no box
        Completion("\\boxed{7}", 3, "stop"),  # wrong
        Completion("<think>3 + 1 = ", 20, "length"),  # truncated: the last number is 1, wrong
        Completion("no idea", 3, "stop"),  # no answer at all
    ]
    gen = ScriptedGenerator(tiny_tokenizer, completions)
    result = evaluate(gen, rows, param_config(GenerationSettings, "evaluate.generation"), template="boxed")
    assert gen.seen == [prompts.render_prompt(tiny_tokenizer, r["question"]) for r in rows]
    m = result.metrics
    assert set(m) == {"accuracy", "n", "correct", "ci95_low", "ci95_high", "answer_found_rate",
                      "truncated_rate", "mean_output_tokens"}  # no "config": the stage adds it
    assert (m["n"], m["correct"]) == (5, 2) and m["accuracy"] == 2 / 5
    assert (m["ci95_low"], m["ci95_high"]) == tuple(round(x, 6) for x in wilson_interval(2, 5))
    assert m["truncated_rate"] == 1 / 5 and m["mean_output_tokens"] == 40 / 5
    assert m["answer_found_rate"] == 3 / 5  # the truncated output has no final answer
    assert [p["correct"] for p in result.predictions] == [True, True, False, False, False]
    assert [p["id"] for p in result.predictions] == [r["id"] for r in rows]
    assert result.predictions[4]["extracted"] is None
    assert [p["unfinished"] for p in result.predictions] == [None, None, None, "length", None]
    assert set(result.predictions[0]) == {"id", "sample", "question", "gold", "output", "extracted", "correct",
                                          "num_tokens", "finish_reason", "unfinished"}
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())


def test_benchmarks_are_generated_in_one_call_and_scored_apart(tiny_tokenizer):
    from mathpipe.evaluation.evaluate import evaluate_benchmarks

    def rows(prefix, n):
        return [{"id": f"{prefix}{i}", "question": f"{prefix}: what is {i} + 1?", "gold": str(i + 1)} for i in range(n)]

    benchmarks = {"gsm8k": rows("g", 3), "cmath": rows("c", 2)}
    completions = [Completion(f"\\boxed{{{answer}}}", 3, "stop") for answer in (1, 2, 9, 1, 5)]
    calls = []

    class CountingGenerator(ScriptedGenerator):
        def generate(self, prompt_texts, settings):
            calls.append(len(prompt_texts))
            return super().generate(prompt_texts, settings)

    results = evaluate_benchmarks(CountingGenerator(tiny_tokenizer, completions), benchmarks, param_config(GenerationSettings, "evaluate.generation"),
                                  template="boxed")
    assert calls == [5] and list(results) == ["gsm8k", "cmath"]
    assert [p["id"] for p in results["gsm8k"].predictions] == ["g0", "g1", "g2"]
    assert [p["id"] for p in results["cmath"].predictions] == ["c0", "c1"]
    assert (results["gsm8k"].metrics["correct"], results["gsm8k"].metrics["n"]) == (2, 3)
    assert (results["cmath"].metrics["correct"], results["cmath"].metrics["n"]) == (1, 2)
    alone = evaluate(ScriptedGenerator(tiny_tokenizer, completions[3:]), benchmarks["cmath"], param_config(GenerationSettings, "evaluate.generation"),
                     template="boxed")
    assert alone.metrics == results["cmath"].metrics


class GroupedGenerator(ScriptedGenerator):
    """n scripted completions per prompt."""

    def generate(self, prompt_texts, settings):
        assert all(len(group) == settings.n for group in self.completions)
        return self.completions


def test_sampled_evaluation_reports_avg_maj_and_pass_at_n(tiny_tokenizer):
    from mathpipe.evaluation.evaluate import mean_interval

    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "gold": g} for i, g in enumerate(["1", "0.5", "3"])]
    c = lambda text, reason="stop": Completion(text, 5, reason)  # noqa: E731
    groups = [
        [c("\\boxed{1}"), c("\\boxed{2}"), c("\\boxed{2}"), c("\\boxed{1}")],  # tie 1 vs 2: the first seen wins
        [c("\\boxed{1/2}"), c("\\boxed{9}"), c("\\boxed{0.5}"), c("<think>0.5", "length")],  # 1/2 and 0.5 vote together
        [c("\\boxed{4}"), c("\\boxed{4}"), c("\\boxed{3}"), c("<think>\\boxed{3}")],  # unfinished: no vote
    ]
    settings = param_config(GenerationSettings, "evaluate.generation", n=4, temperature=0.6, top_p=0.95, top_k=20)
    result = evaluate(GroupedGenerator(tiny_tokenizer, groups), rows, settings, template="boxed")
    m = result.metrics
    assert [p["correct"] for p in result.predictions] == [True, False, False, True, True, False, True, False,
                                                          False, False, True, False]
    assert [(p["id"], p["sample"]) for p in result.predictions][:5] == [("q0", 0), ("q0", 1), ("q0", 2), ("q0", 3),
                                                                        ("q1", 0)]
    assert (m["n"], m["correct"], m["questions"], m["samples_per_question"]) == (12, 5, 3, 4)
    assert m["accuracy"] == 5 / 12  # avg@4
    assert (m["ci95_low"], m["ci95_high"]) == tuple(round(x, 6) for x in mean_interval([2 / 4, 2 / 4, 1 / 4]))
    assert m["maj_at_n"] == 2 / 3 and m["pass_at_n"] == 1.0
    assert (m["maj_at_n_ci95_low"], m["maj_at_n_ci95_high"]) == tuple(round(x, 6) for x in wilson_interval(2, 3))
    assert m["truncated_rate"] == 2 / 12


@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_avg_maj_pass_are_ordered_as_they_must_be(verdicts):
    """pass@n >= avg@n, pass@n >= maj@n, and every figure within its interval."""
    from mathpipe.evaluation.evaluate import score

    groups = [[{"correct": ok, "extracted": "7" if ok else "8", "unfinished": None, "num_tokens": 1} for ok in g]
              for g in verdicts]
    m = score(groups)
    assert m["pass_at_n"] >= m["accuracy"] - 1e-12 and m["pass_at_n"] >= m["maj_at_n"]
    for key in ("", "maj_at_n_", "pass_at_n_"):
        value = m[key.rstrip("_") or "accuracy"] if key else m["accuracy"]
        assert m[f"{key}ci95_low"] - 1e-6 <= value <= m[f"{key}ci95_high"] + 1e-6


def test_evaluate_gives_unfinished_reasoning_no_answer(tiny_tokenizer):
    """Real-looking thinking outputs: only the finished one can be right, though each ends on the gold."""
    rows = [{"id": f"q{i}", "question": "Tom has 3 apples and buys 4 more. How many now?", "gold": "7"}
            for i in range(4)]
    completions = [
        Completion("<think>\nTom starts with 3 apples. He buys 4 more: 3 + 4 = 7.\n</think>\n\n"
                   "Tom has \\boxed{7} apples.", 30, "stop"),  # finished
        Completion("<think>\nTom starts with 3 apples. He buys 4 more, so 3 + 4 = 7", 4096, "length"),
        Completion("<think>\nTom starts with 3 apples. Wait, let me recount. 3 + 4 = 7", 40, "stop"),  # EOS inside
        Completion("<think>\n3 + 4 = 7\n</think>\n\nTom has \\boxed{7", 4096, "length"),  # closed, cut in the answer
    ]
    result = evaluate(ScriptedGenerator(tiny_tokenizer, completions), rows, param_config(GenerationSettings, "evaluate.generation"), template="boxed")
    assert [p["correct"] for p in result.predictions] == [True, False, False, False]
    assert [p["unfinished"] for p in result.predictions] == [None, "length", "open_thinking", "length"]
    assert result.metrics["truncated_rate"] == 3 / 4 and result.metrics["accuracy"] == 1 / 4


def test_evaluate_on_the_tiny_model(gen, questions):
    rows = [{"id": str(i), "question": q, "gold": "5"} for i, q in enumerate(questions[:6])]
    result = evaluate(gen, rows, param_config(GenerationSettings, "evaluate.generation", max_new_tokens=16), template="boxed")
    m = result.metrics
    assert m["n"] == len(result.predictions) == 6
    assert m["accuracy"] == m["correct"] / m["n"]
    assert 0 <= m["ci95_low"] <= m["accuracy"] <= m["ci95_high"] <= 1
    assert "config" not in m
    assert all(p["num_tokens"] <= 16 and p["finish_reason"] in ("stop", "length") for p in result.predictions)
    assert m["mean_output_tokens"] == sum(p["num_tokens"] for p in result.predictions) / 6
