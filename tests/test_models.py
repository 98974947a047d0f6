"""The tiny model and its tokenizer (mathpipe.training.tiny_model), the base_model stage's library
(mathpipe.training.base_model) and model loading (mathpipe.models)."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
import torch
from conftest import MODEL_SEED, TINY, tiny_base_config
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe import prompts
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.models import ORIGIN_FILE, load_causal_lm, load_tokenizer, read_origin, resolve_dtype
from mathpipe.training.base_model import TOKENIZER_FILES, BaseModelConfig, build_base_model, fingerprint
from mathpipe.training.tiny_model import IM_END, IM_START, PAD, build_model
from tests.checkout import ROOT
from tests.params import param_config

TEXTS = [
    "Tom has 12 apples. He gives 5 to Anna. How many apples does Tom have now?",
    "小明有12个苹果，送给小红5个，小明现在有多少个苹果？",
    "Mixed 中文 and English, 3/4 = 0.75, -7 + 1,000 = 993\n\n  tabs\tand  spaces  ",
    "<think>\n12 - 5 = 7\n</think>\n\nThe answer is \\boxed{7}.",
]


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- tokenizer -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips_english_and_chinese(tiny_tokenizer, text):
    ids = ids_of(tiny_tokenizer, text)
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tiny_tokenizer.unk_token_id is None or tiny_tokenizer.unk_token_id not in ids


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_tokenizer_round_trips_any_text(tiny_tokenizer, text):
    """Byte-level BPE: every (NFC) string, emoji and control characters included, comes back intact."""
    text = unicodedata.normalize("NFC", text)
    assert tiny_tokenizer.decode(ids_of(tiny_tokenizer, text)) == text


def test_tokenizer_was_trained_on_the_corpus(tiny_tokenizer):
    assert len(tiny_tokenizer) == TINY.vocab_size
    # frequent corpus words are merged into few tokens; a random string is not
    assert len(ids_of(tiny_tokenizer, " apples")) <= 2
    assert len(ids_of(tiny_tokenizer, "qzxjvkqzxj")) >= 8


def test_digits_are_one_per_token(tiny_tokenizer):
    text = "In 2024, 1234567890 + 99 = 1234567989 and 小明有305个"
    tokens = tiny_tokenizer.convert_ids_to_tokens(ids_of(tiny_tokenizer, text))
    with_digits = [t for t in tokens if re.search(r"\d", t)]
    assert all(re.fullmatch(r"\d", t) for t in with_digits), with_digits
    assert "".join(with_digits) == re.sub(r"\D", "", text)


def test_think_tags_are_single_tokens_kept_when_decoding(tiny_tokenizer):
    for tag in (prompts.THINK_OPEN, prompts.THINK_CLOSE):
        assert len(ids_of(tiny_tokenizer, tag)) == 1
    text = prompts.response("3 + 4 = 7", "7")
    ids = ids_of(tiny_tokenizer, text) + [tiny_tokenizer.convert_tokens_to_ids(IM_END)]
    tokens = tiny_tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count(prompts.THINK_OPEN) == tokens.count(prompts.THINK_CLOSE) == 1
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text  # <think> kept, <|im_end|> gone
    assert tiny_tokenizer.decode(ids) == text + IM_END


def test_special_tokens(tiny_tokenizer):
    assert tiny_tokenizer.eos_token == IM_END and tiny_tokenizer.pad_token == PAD
    assert tiny_tokenizer.padding_side == "left"  # load_tokenizer's default, for batched generation
    for token in (PAD, IM_START, IM_END):
        assert len(ids_of(tiny_tokenizer, token)) == 1
    assert len({tiny_tokenizer.convert_tokens_to_ids(t) for t in (PAD, IM_START, IM_END)}) == 3


def test_chat_template_renders_the_qwen_format(tiny_tokenizer):
    text = prompts.render_prompt(tiny_tokenizer, "1 + 1?")
    assert text == f"{IM_START}user\n1 + 1?\n{prompts.instruction()}{IM_END}\n{IM_START}assistant\n"


def test_assistant_mask_covers_the_answer_and_its_end_token(tiny_tokenizer):
    answer = prompts.response("2 + 3 = 5", "5")
    conversation = prompts.messages("What is 2 + 3?") + [{"role": "assistant", "content": answer}]
    enc = tiny_tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    first = mask.index(1)
    last = len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first:last + 1])  # one contiguous span
    assert tiny_tokenizer.decode(ids[first:last + 1]) == answer + IM_END
    assert ids[last] == tiny_tokenizer.eos_token_id  # the model learns to stop
    prompt = tiny_tokenizer.decode(ids[:first])
    assert prompt == prompts.render_prompt(tiny_tokenizer, "What is 2 + 3?")  # the user turn is masked
    assert tiny_tokenizer.decode(ids[last + 1:]) == "\n"


# --- model -----------------------------------------------------------------------------------------


def test_same_seed_same_weights_other_seed_different(tiny_tokenizer):
    a, b, c = (build_model(tiny_tokenizer, TINY, seed) for seed in (7, 7, 8))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    weights = [k for k in sa if k.endswith("proj.weight") or "embed" in k]
    assert weights and all(not torch.equal(sa[k], sc[k]) for k in weights)


def test_model_shape_and_tied_embeddings(tiny_tokenizer):
    model = build_model(tiny_tokenizer, TINY, seed=0)
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim) == (400, 64, 2, 64)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert cfg.eos_token_id == tiny_tokenizer.eos_token_id and cfg.pad_token_id == tiny_tokenizer.pad_token_id


def test_saved_model_reloads_with_identical_logits(tiny_tokenizer, tmp_path):
    model = build_model(tiny_tokenizer, TINY, seed=3).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = load_causal_lm(tmp_path, device="cpu")
    assert not loaded.training and next(loaded.parameters()).dtype == torch.float32
    assert loaded.get_input_embeddings().weight is loaded.get_output_embeddings().weight
    batch = tiny_tokenizer(TEXTS, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        expected = model(**batch).logits
        got = loaded(**batch).logits
    assert torch.equal(expected, got)
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_load_causal_lm_and_tokenizer_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(PipelineError, match=re.escape(f"model not found: {missing} does not exist")):
        load_causal_lm(missing, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=re.escape(f"{tmp_path / 'empty'} has no config.json")):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(PipelineError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda:0") == torch.bfloat16


# --- build_base_model ------------------------------------------------------------------------------


def test_base_model_folder_and_summary(tiny_model_dir):
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    for required in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", ORIGIN_FILE):
        assert required in names
    summary = json.loads((tiny_model_dir / ORIGIN_FILE).read_text(encoding="utf-8"))
    assert read_origin(tiny_model_dir) == summary
    model = load_causal_lm(tiny_model_dir, device="cpu")
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["parameters"] == model.num_parameters()
    assert summary["source"] == "tiny" and summary["model_id"] == "tiny-qwen3"
    assert re.fullmatch(r"[0-9a-f]{16}", summary["revision"])
    assert summary["architecture"] == "Qwen3ForCausalLM"
    assert (summary["layers"], summary["hidden_size"], summary["vocab_size"]) == (2, 64, 400)
    assert summary["tie_word_embeddings"] is True


def test_base_model_build_is_byte_identical(tiny_model_dir, sample_dir, tmp_path):
    out = tmp_path / "base"
    summary = build_base_model(tiny_base_config(out, sample_dir))
    for name in ("model.safetensors", "tokenizer.json", "config.json", ORIGIN_FILE):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert summary == read_origin(tiny_model_dir)

    other = build_base_model(tiny_base_config(tmp_path / "other", sample_dir, seed=MODEL_SEED + 1))
    assert (tmp_path / "other/tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert (tmp_path / "other/model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()
    assert other["revision"] != summary["revision"]  # the fingerprint follows the weights
    # ... and the tokenizer's its own files: another seed, other weights, the same tokenizer
    assert re.fullmatch(r"[0-9a-f]{16}", summary["tokenizer_revision"])
    assert other["tokenizer_revision"] == summary["tokenizer_revision"]
    (out / "chat_template.jinja").write_text("{{ messages }}")
    assert fingerprint(out, TOKENIZER_FILES) != summary["tokenizer_revision"]


def test_pretraining_trains_on_every_token_of_every_text_and_its_eos(tiny_model_dir):
    """Each text is one sequence ending with EOS, every token of it counted once per epoch, no padding."""
    from mathpipe.training.pretrain import PretrainSettings, pretrain

    tokenizer = load_tokenizer(tiny_model_dir)
    texts = ["Tom has 3 apples.\n3 + 4 = 7", "小明有5本书。", "12 * 3 = 36, 36 / 4 = 9"] * 4  # unequal lengths: padded
    model = load_causal_lm(tiny_model_dir, device="cpu")
    figures = pretrain(model, tokenizer, texts, param_config(PretrainSettings, "base_model.pretrain", epochs=2, batch_size=4, warmup_steps=0), seed=0)
    per_epoch = sum(len(ids_of(tokenizer, t)) + 1 for t in texts)  # + EOS
    assert figures["pretrain_tokens"] == 2 * per_epoch
    assert figures["pretrain_steps"] == 2 * 3 and figures["pretrain_texts"] == len(texts)
    assert tokenizer.padding_side == "left" and not model.training  # ready to generate


def test_pretraining_learns_the_corpus_and_is_reproducible(tiny_model_dir, sample_dir, tmp_path):
    """Pre-training on the corpus text lowers its loss, records its figures, and is byte-identical twice."""
    from mathpipe.training.base_model import pretraining_texts
    from mathpipe.training.pretrain import PretrainSettings

    settings = param_config(PretrainSettings, "base_model.pretrain", epochs=1, batch_size=16, learning_rate=3e-3)
    first = build_base_model(tiny_base_config(tmp_path / "a", sample_dir, pretrain=settings))
    second = build_base_model(tiny_base_config(tmp_path / "b", sample_dir, pretrain=settings))
    assert first["pretrain_steps"] > 0 and first["pretrain_texts"] == len(pretraining_texts(sample_dir))
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    assert first["revision"] == second["revision"] != read_origin(tiny_model_dir)["revision"]
    # the tokenizer is the one trained on the corpus, whatever pre-training did with it
    assert first["tokenizer_revision"] == read_origin(tiny_model_dir)["tokenizer_revision"]
    for name in ("model.safetensors", ORIGIN_FILE):  # the whole folder, so DVC sees the same output
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first["pretrain_seconds"] > 0 and "pretrain_seconds" not in read_origin(tmp_path / "a")

    tokenizer = load_tokenizer(tiny_model_dir)
    batch = tokenizer(pretraining_texts(sample_dir)[:8], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def loss(folder):
        with torch.no_grad():
            return load_causal_lm(folder, device="cpu")(**batch, labels=labels).loss.item()

    assert loss(tmp_path / "a") < loss(tiny_model_dir) - 1.0


def test_base_model_from_a_local_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "base"
    summary = build_base_model(param_config(BaseModelConfig, "base_model", source="local", local_path=str(tiny_model_dir), out_dir=str(out)))
    assert summary["source"] == "local" and summary["model_id"] == str(tiny_model_dir)
    assert summary["revision"] == read_origin(tiny_model_dir)["revision"]  # same weights, same fingerprint
    assert (out / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert read_origin(out) == summary


def test_base_model_local_path_missing(tmp_path):
    missing = tmp_path / "no" / "model"
    out = tmp_path / "base"
    cfg = param_config(BaseModelConfig, "base_model", **{"source": "local", "local_path": str(missing), "out_dir": str(out)})
    with pytest.raises(PipelineError, match=re.escape(f"model not found: {missing} does not exist")):
        build_base_model(cfg)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_base_model_corpus_missing(tmp_path):
    out = tmp_path / "base"
    with pytest.raises(PipelineError, match=re.escape(str(tmp_path / "corpus" / "openr1/*.parquet"))):
        build_base_model(tiny_base_config(out, tmp_path / "corpus"))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("revision", ["main", "v1.0", "ABCDEF" + "0" * 34, "0" * 39])
def test_base_model_hub_revision_must_be_a_commit(revision):
    raw = {"source": "hub", "hub": {"model_id": "Qwen/Qwen3-0.6B", "revision": revision}}
    with pytest.raises(ConfigError, match=r"^base_model\.hub\.revision: must be a 40-character commit hash"):
        param_config(BaseModelConfig, "base_model", **raw)


def test_a_base_model_without_a_chat_template_gets_the_one_params_name(tiny_model_dir, tmp_path):
    """A pretrained base model (deepseek-math-7b-base) ships no chat template, and every prompt is
    built with one: base_model.chat_template puts a plain Question/Answer template beside it."""
    import json
    import shutil

    from mathpipe import prompts
    from mathpipe.models import load_tokenizer

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(PipelineError, match="the tokenizer has no chat template"):
        build_base_model(param_config(BaseModelConfig, "base_model", source="local", local_path=str(bare),
                                      out_dir=str(tmp_path / "refused")))
    out = tmp_path / "base"
    template = ROOT / "configs" / "chat_templates" / "question_answer.jinja"
    build_base_model(param_config(BaseModelConfig, "base_model", source="local", local_path=str(bare),
                                  out_dir=str(out), chat_template=str(template)))
    rendered = prompts.render_prompt(load_tokenizer(out), "What is 2 + 3?")
    assert rendered == f"Question: {prompts.user_message('What is 2 + 3?')}\nAnswer:"
    with pytest.raises(ConfigError, match=r"base_model\.chat_template: file not found"):
        param_config(BaseModelConfig, "base_model", chat_template=str(tmp_path / "nope.jinja"))


def pickled_model(tiny_model_dir, dest):
    """The tiny model as `save_pretrained(safe_serialization=False)` writes it: pytorch_model.bin only."""
    import shutil

    shutil.copytree(tiny_model_dir, dest)
    for weights in dest.glob("*.safetensors"):
        weights.unlink()
    torch.save({}, dest / "pytorch_model.bin")
    return dest


def test_a_folder_of_pickled_weights_is_refused_naming_the_key(tiny_model_dir, tmp_path):
    from mathpipe.models import require_model_dir

    folder = pickled_model(tiny_model_dir, tmp_path / "pickled")
    with pytest.raises(PipelineError, match=r"^dpo.model: .*pickled holds only pickled weights \(pytorch_model.bin\); "
                                            r"the pipeline loads safetensors only"):
        require_model_dir(folder, "dpo.model")
    assert require_model_dir(folder, "dpo.model", weights=False) == folder  # its tokenizer and config are fine
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"^evaluate.models \(x\): .*empty has no weights"):
        require_model_dir(tmp_path / "empty", "evaluate.models (x)")


def test_a_stage_given_pickled_weights_exits_2_with_the_named_error(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    from tests.params import params_with

    folder = pickled_model(tiny_model_dir, tmp_path / "pickled")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_with({"sft": {"model": str(folder)}})))
    done = subprocess.run([sys.executable, "-m", "stages.sft"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: sft.model: ") and "pytorch_model.bin" in errors[0]
    assert "Traceback" not in done.stderr
