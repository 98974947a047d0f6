"""Sample data in the real schemas: templated arithmetic word problems in English and Chinese.

The default run trains a tiny model from scratch on a 2-core CPU, so its data must be learnable by a
~1M-parameter model in about a minute: 1-3 step word problems with small numbers (operands 2-60,
every result a non-negative integer, products kept small, division exact), worded from several
templates per operation and language. The files are written in EXACTLY the schemas of the real data
sets (`mathpipe.data.schemas`, `shared/data/README.md`), so the same readers serve sample and real data:

    out_dir/openr1/train-0000i-of-0000k.parquet  OpenR1-Math-220k rows: problem, solution, answer and
                                                 2-4 `<think>` traces, some wrong, a few truncated
    out_dir/gsm8k/train.jsonl, test.jsonl        {"question", "answer": "...<<a+b=c>>c ...\\n#### N"}
    out_dir/cmath/test.jsonl                     {"grade", "question" (Chinese), "golden", "reasoning_step",
                                                  "num_digits"}
    out_dir/math/test.jsonl                      MATH-500 rows: {"problem", "solution", "answer", "subject",
                                                  "level", "unique_id"}, numbers in LaTeX math ($12$)

Usage:

    from mathpipe.data.sample_data import SampleConfig, write_sample_data
    counts = write_sample_data(Path("data/raw"), from_params(SampleConfig, "sample"))   # params.yaml's section
    # {"openr1/train-00000-of-00004.parquet": 1250, ..., "cmath/test.jsonl": 200, "math/test.jsonl": 100}

The same config writes byte-identical files; test questions never appear among training problems.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mathpipe.config import check, check_range
from mathpipe.data.schemas import OPENR1_SCHEMA
from mathpipe.errors import ConfigError
from mathpipe.io import atomic_dir, write_jsonl

OPERAND_MIN = 2                   # the smallest number a problem states
GROUP_START_P = 0.25              # share of problems opening with "a bags of b each" (a first * step)
INCOMPLETE_P, WRONG_P = 0.05, 0.32  # per trace: truncated (no </think>), or one mistake (MISTAKES)
DUPLICATE_P = 0.01                # rows repeating an earlier problem text under a new uuid
LLAMA_P, FINISH_REASONS_P = 0.12, 0.6  # rows where the nullable columns are filled
UNBOXED_P = 0.3                   # right traces of judged rows that Math-Verify misses and the Llama judge finds
UUID_NS = uuid.UUID("6b1f0a52-3c1e-5d7a-9d43-8f2a4c1e9b70")

NAMES = {
    "en": ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Leo", "Zoe"],
    "zh": ["小明", "小红", "小华", "小刚", "小丽", "小军", "小芳", "小东", "王老师", "李叔叔"],
}
OBJECTS = {  # (object, measure word)
    "en": [(o, "") for o in ["apples", "pencils", "stickers", "books", "marbles", "cookies", "stamps", "shells"]],
    "zh": [("苹果", "个"), ("铅笔", "支"), ("故事书", "本"), ("糖果", "颗"), ("邮票", "张"), ("小鱼", "条"),
           ("气球", "个"), ("贴纸", "张")],
}
# Slots: {name} {friend} {obj} {u} (measure word), {a} {b} {c} (a op b = c), {ans}, {calc} (GSM8K).
TEMPLATES = {
    "en": {
        "sep": " ",
        "start": ["{name} has {a} {obj}.", "{name} had {a} {obj} at first.", "There are {a} {obj} in {name}'s box."],
        "group": ["{name} has {a} bags with {b} {obj} in each bag.",
                  "{name} buys {a} boxes of {obj}, and each box holds {b}."],
        "+": ["Then {name} buys {b} more {obj}.", "{friend} gives {name} {b} more {obj}.",
              "Later, {name} finds {b} more {obj}."],
        "-": ["{name} gives {b} {obj} to {friend}.", "Then {name} loses {b} {obj}.",
              "{friend} takes {b} {obj} from {name}."],
        "*": ["After a trade, {name} has {b} times as many {obj} as before.",
              "Then the number of {obj} {name} has becomes {b} times as large."],
        "/": ["{name} splits the {obj} equally into {b} bags and keeps only one bag.",
              "{name} divides the {obj} into {b} equal groups and keeps one group."],
        "question": ["How many {obj} does {name} have now?", "How many {obj} does {name} have in the end?"],
        "frame": ["{facts} {q}", "{facts} Question: {q}", "{q} Here is what happened: {facts}"],
        "intro": ["Okay, let me figure out how many {obj} {name} has at the end.",
                  "Let me work through this one step at a time and keep track of the {obj}.",
                  "Alright, I need to follow what happens to {name}'s {obj}, one step after another."],
        "begin": "{name} starts with {a} {obj}.",
        "step": {
            "group": ["There are {a} groups of {b}, so {a} * {b} = {c}.", "{a} bags of {b} each make {a} * {b} = {c}."],
            "+": ["{name} gets {b} more, so {a} + {b} = {c}.", "Adding {b} gives {a} + {b} = {c}."],
            "-": ["{b} of them are gone, so {a} - {b} = {c}.", "Taking away {b} leaves {a} - {b} = {c}."],
            "*": ["{b} times as many means {a} * {b} = {c}.", "Multiplying by {b} gives {a} * {b} = {c}."],
            "/": ["Splitting into {b} equal parts gives {a} / {b} = {c}.", "One part of {b} is {a} / {b} = {c}."],
        },
        "check": "Let me double-check: {eqs}. Yes, that is right.",
        "so": "So {name} has {ans} {obj} at the end.",
        "boxed": ["{name} has \\boxed{{{ans}}} {obj} in the end.", "The answer is \\boxed{{{ans}}}.",
                  "**Final answer:** \\boxed{{{ans}}}"],
        "solution_end": "So {name} has {ans} {obj}. The answer is {ans}.",
        "gsm8k": {
            "group": ["{name} has {calc} {obj} at first.", "The bags hold {calc} {obj} in total."],
            "+": ["{name} then has {calc} {obj}.", "After getting more, {name} has {calc} {obj}."],
            "-": ["After that, {name} has {calc} {obj}.", "{name} is left with {calc} {obj}."],
            "*": ["That makes {calc} {obj}.", "Now {name} has {calc} {obj}."],
            "/": ["One part holds {calc} {obj}.", "{name} keeps {calc} {obj}."],
        },
    },
    "zh": {  # CMATH style: clauses joined by "，", then the question
        "sep": "，",
        "start": ["{name}有{a}{u}{obj}", "{name}原来有{a}{u}{obj}", "盒子里有{a}{u}{obj}，都是{name}的"],
        "group": ["{name}买了{a}盒{obj}，每盒{b}{u}", "{name}有{a}袋{obj}，每袋有{b}{u}"],
        "+": ["{name}又买了{b}{u}", "{friend}送给{name}{b}{u}{obj}", "后来{name}又找到{b}{u}"],
        "-": ["{name}送给{friend}{b}{u}", "{name}用掉了{b}{u}", "{friend}拿走了{b}{u}"],
        "*": ["后来{name}的{obj}变成了之前的{b}倍", "经过交换，{name}的{obj}数量是之前的{b}倍"],
        "/": ["{name}把这些{obj}平均分成{b}份，只留下一份", "{name}把{obj}平均装进{b}个袋子，自己留下一袋"],
        "question": ["{name}现在有多少{u}{obj}？", "{name}最后有几{u}{obj}？", "{name}现在一共有多少{u}{obj}？"],
        "frame": ["{facts}，{q}", "{facts}。{q}", "{facts}。问：{q}"],
        "intro": ["好的，我来一步一步算一下{name}的{obj}。", "先理清题目：要求{name}最后有多少{u}{obj}。",
                  "这道题要按顺序计算{name}手里{obj}的数量。"],
        "begin": "{name}一开始有{a}{u}{obj}。",
        "step": {
            "group": ["一共{a}份，每份{b}{u}，{a} * {b} = {c}。", "先算总数：{a} * {b} = {c}。"],
            "+": ["又多了{b}{u}，{a} + {b} = {c}。", "加上{b}：{a} + {b} = {c}。"],
            "-": ["少了{b}{u}，{a} - {b} = {c}。", "减去{b}：{a} - {b} = {c}。"],
            "*": ["变成之前的{b}倍，{a} * {b} = {c}。", "乘以{b}：{a} * {b} = {c}。"],
            "/": ["平均分成{b}份，{a} / {b} = {c}。", "除以{b}：{a} / {b} = {c}。"],
        },
        "check": "再检查一下：{eqs}。没错。",
        "so": "所以{name}最后有{ans}{u}{obj}。",
        "boxed": ["所以{name}现在有\\boxed{{{ans}}}{u}{obj}。", "答案是\\boxed{{{ans}}}。"],
        "solution_end": "所以{name}现在有{ans}{u}{obj}，答案是{ans}。",
    },
}
EN_SOURCES = ["olympiads", "olympiads", "amc_aime", "aops_forum", "inequalities", "number_theory"]
ZH_SOURCES = ["cn_k12", "cn_k12", "cn_contest"]


SAMPLE_DIR = "data/raw/sample"  # where the sample_data stage writes

@dataclass(kw_only=True)
class SampleConfig:
    """The `sample` section of params.yaml."""

    seed: int
    n_train: int  # OpenR1-style training problems (before the pipeline's filters)
    n_gsm8k_test: int
    n_cmath_test: int
    n_math_test: int  # MATH-style questions: English word problems in MATH-500's schema
    n_gsm8k_train: int  # GSM8K-format training problems (an optional SFT source)
    shards: int  # number of OpenR1 parquet shards
    chinese_fraction: float  # share of OpenR1 training problems written in Chinese
    # Difficulty: steps per problem and how large the numbers get, i.e. how many arithmetic facts a
    # model must learn. The defaults are sized so the tiny default model learns them in minutes;
    # max_steps 3 with operand_max 60, factor_max 9, product_max 120, value_max 150 is much harder.
    max_steps: int  # 1..3 arithmetic steps per problem
    operand_max: int  # the numbers a problem states
    factor_max: int  # multipliers and divisors
    product_max: int  # no product above this
    value_max: int  # no intermediate or final result above this

    def validate(self, prefix: str) -> None:
        for key in ("n_train", "n_gsm8k_test", "n_cmath_test", "n_math_test"):
            check(getattr(self, key) >= 1, f"{prefix}.{key}", f"must be >= 1, got {getattr(self, key)}")
        check(self.n_gsm8k_train >= 0, f"{prefix}.n_gsm8k_train", f"must be >= 0, got {self.n_gsm8k_train}")
        check(1 <= self.shards <= self.n_train, f"{prefix}.shards",
              f"must be between 1 and n_train ({self.n_train}), got {self.shards}")
        check_range(self.chinese_fraction, f"{prefix}.chinese_fraction", 0.0, 1.0)
        check_range(self.max_steps, f"{prefix}.max_steps", 1, 3)
        check(self.operand_max >= OPERAND_MIN + 2, f"{prefix}.operand_max", f"must be >= {OPERAND_MIN + 2}")
        check(self.factor_max >= 2, f"{prefix}.factor_max", "must be >= 2")
        check(self.product_max >= 2 * self.factor_max, f"{prefix}.product_max", "must be >= 2 * factor_max")
        check(self.value_max >= self.operand_max, f"{prefix}.value_max", "must be >= operand_max")


@dataclass
class Problem:
    lang: str
    text: str
    start: int  # the value the problem opens with (for a group start: the number of bags)
    steps: tuple[tuple[str, int, int, int], ...]  # (op, a, b, c) with a op b = c, chained
    group: bool  # the first step is "a bags of b each" (a * b)
    slots: dict = field(default_factory=dict)  # name, friend, obj, u

    @property
    def answer(self) -> int:
        return self.steps[-1][3]


def _apply(op: str, a: int, b: int) -> int | None:
    """a op b when it is a non-negative integer (exact division), else None."""
    if op == "/":
        return a // b if a % b == 0 else None
    c = a + b if op == "+" else a - b if op == "-" else a * b
    return c if c >= 0 else None


def _operands(op: str, x: int, cfg: SampleConfig) -> range | list[int]:
    """The operands b for `x op b` that keep the result a small integer >= 2."""
    if op == "+":
        return range(OPERAND_MIN, min(cfg.operand_max, cfg.value_max - x) + 1)
    if op == "-":
        return range(OPERAND_MIN, min(cfg.operand_max, x - 2) + 1)
    if op == "*":
        return range(2, min(cfg.factor_max, cfg.product_max // x) + 1)
    return [d for d in range(2, cfg.factor_max + 1) if x % d == 0 and x // d >= 2]


def _make_problem(rng: random.Random, lang: str, n_steps: int, cfg: SampleConfig) -> Problem:
    group = rng.random() < GROUP_START_P
    steps: list[tuple[str, int, int, int]] = []
    if group:
        start = rng.randint(2, cfg.factor_max)
        b = rng.randint(2, max(2, min(12, cfg.product_max // start)))
        steps.append(("*", start, b, start * b))
    else:
        start = rng.randint(OPERAND_MIN, cfg.operand_max)
    x = steps[-1][3] if steps else start
    while len(steps) < n_steps:
        op, choices = rng.choice([(op, ch) for op in "+-*/" if (ch := _operands(op, x, cfg))])
        b = rng.choice(choices)
        steps.append((op, x, b, _apply(op, x, b)))
        x = steps[-1][3]
    t = TEMPLATES[lang]
    name, friend = rng.sample(NAMES[lang], 2)
    obj, u = rng.choice(OBJECTS[lang])
    slots = {"name": name, "friend": friend, "obj": obj, "u": u}
    facts = [rng.choice(t["group"]).format(a=start, b=steps[0][2], **slots) if group
             else rng.choice(t["start"]).format(a=start, **slots)]
    facts += [rng.choice(t[op]).format(b=b, **slots) for op, _, b, _ in steps[int(group):]]
    question = rng.choice(t["question"]).format(**slots)
    text = rng.choice(t["frame"]).format(facts=t["sep"].join(facts), q=question)
    return Problem(lang, text, start, tuple(steps), group, slots)


def identity(p: Problem) -> tuple:
    """What makes two problems the same problem: who, what, and the numbers and steps, not the
    wording ("Sam has 11 marbles" or "There are 11 marbles in Sam's box", asked "How many ... now?"
    or "... in the end?") nor a friend who appears in one wording only."""
    return p.lang, p.group, p.start, p.steps, p.slots["name"], p.slots["obj"]


def _fresh_problem(rng: random.Random, lang: str, cfg: SampleConfig, taken: set) -> Problem:
    """A problem whose text and story are not in `taken` (test sets first, so training never repeats
    them, not even reworded)."""
    for _ in range(1000):
        p = _make_problem(rng, lang, rng.randint(1, cfg.max_steps), cfg)
        if p.text not in taken and identity(p) not in taken:
            taken.update((p.text, identity(p)))
            return p
    raise ConfigError("sample: too few distinct problems for the requested counts; lower sample.n_*")


def _step_lines(rng: random.Random, p: Problem, steps, key: str = "step") -> list[str]:
    t = TEMPLATES[p.lang]
    out = []
    for i, (op, a, b, c) in enumerate(steps):
        kind = "group" if i == 0 and p.group else op
        calc = f"{a}{op}{b}=<<{a}{op}{b}={c}>>{c}"
        out.append(rng.choice(t[key][kind]).format(a=a, b=b, c=c, calc=calc, **p.slots))
    return out


def _begin(p: Problem) -> list[str]:
    return [] if p.group else [TEMPLATES[p.lang]["begin"].format(a=p.start, **p.slots)]


def solution(rng: random.Random, p: Problem) -> str:
    """The reference solution: the steps as equations, then a sentence giving the answer."""
    end = TEMPLATES[p.lang]["solution_end"].format(ans=p.answer, **p.slots)
    return "\n".join(_begin(p) + _step_lines(rng, p, p.steps) + [end])


def gsm8k_answer(rng: random.Random, p: Problem) -> str:
    return "\n".join(_step_lines(rng, p, p.steps, key="gsm8k") + [f"#### {p.answer}"])


def _carry(steps, i: int, changed: tuple) -> list | None:
    """`steps` with step i replaced by `changed` and every later step recomputed from it (the same
    operations and operands), or None when a later result stops being a non-negative integer."""
    wrong = list(steps[:i]) + [changed]
    for op, _, b, _ in steps[i + 1:]:
        c = _apply(op, wrong[-1][3], b)
        if c is None:
            return None
        wrong.append((op, wrong[-1][3], b, c))
    return wrong


def _slip(rng: random.Random, steps) -> list | None:
    """One result miscomputed (off by 1, 2 or 10), the error carried through the later steps."""
    for i in rng.sample(range(len(steps)), len(steps)):
        for d in rng.sample([1, -1, 2, -2, 10, -10], 6):
            op, a, b, c = steps[i]
            if c + d >= 0 and (wrong := _carry(steps, i, (op, a, b, c + d))):
                return wrong
    return None


def _misread(rng: random.Random, steps) -> list | None:
    """One number taken wrongly from the question (a nearby value), the arithmetic right from there."""
    for i in rng.sample(range(len(steps)), len(steps)):
        op, a, b, _ = steps[i]
        for d in rng.sample([1, -1, 2, -2, 3, -3], 6):
            c = _apply(op, a, b + d) if b + d >= 2 else None
            if c is not None and (wrong := _carry(steps, i, (op, a, b + d, c))):
                return wrong
    return None


def _wrong_operation(rng: random.Random, steps) -> list | None:
    """One step done with the wrong operation (adding instead of multiplying, ...), computed right."""
    for i in rng.sample(range(len(steps)), len(steps)):
        op, a, b, _ = steps[i]
        for other in rng.sample([o for o in "+-*/" if o != op], 3):
            c = _apply(other, a, b)
            if c is not None and (wrong := _carry(steps, i, (other, a, b, c))):
                return wrong
    return None


def _extra_step(rng: random.Random, steps) -> list | None:
    """The last step applied twice, as if the question said it twice."""
    op, _, b, c = steps[-1]
    again = _apply(op, c, b)
    return list(steps) + [(op, c, b, again)] if again is not None else None


# How a "wrong" trace goes wrong. Real R1 traces fail in all of these ways; the verifier sees only the
# final answer, a reward model has to spot the step (against the question, or in the arithmetic).
MISTAKES = (_slip, _misread, _wrong_operation, _extra_step)


def wrong_steps(rng: random.Random, steps) -> list | None:
    """A plausible wrong chain with a different final answer, or None if none is found."""
    for mistake in rng.sample(MISTAKES, len(MISTAKES)):
        wrong = mistake(rng, steps)
        if wrong is not None and wrong[-1][3] != steps[-1][3]:
            return wrong
    return None


def trace(rng: random.Random, p: Problem, kind: str) -> tuple[str, bool, int | None]:
    """One R1-style generation: kind "right", "wrong" (one mistake) or "incomplete" (cut off).
    Returns (text, is_reasoning_complete, boxed answer or None)."""
    t = TEMPLATES[p.lang]
    steps = (wrong_steps(rng, p.steps) or p.steps) if kind == "wrong" else p.steps
    ans = steps[-1][3]
    lines = [rng.choice(t["intro"]).format(**p.slots)] + _begin(p) + _step_lines(rng, p, steps)
    if rng.random() < 0.6:
        eqs = ("，" if p.lang == "zh" else ", ").join(f"{a} {op} {b} = {c}" for op, a, b, c in steps)
        lines.append(t["check"].format(eqs=eqs))
    lines.append(t["so"].format(ans=ans, **p.slots))
    think = "\n".join(lines)
    if kind == "incomplete":
        return "<think>\n" + think[: rng.randint(len(think) // 4, 3 * len(think) // 4)], False, None
    return f"<think>\n{think}\n</think>\n\n" + rng.choice(t["boxed"]).format(ans=ans, **p.slots), True, ans


def openr1_row(rng: random.Random, p: Problem, uid: str) -> dict:
    n = rng.choice((2, 2, 3, 4))
    kinds = ["incomplete" if r < INCOMPLETE_P else "wrong" if r < INCOMPLETE_P + WRONG_P else "right"
             for r in (rng.random() for _ in range(n))]
    if "right" not in kinds and rng.random() < 0.9:  # most problems keep at least one correct trace
        kinds[rng.randrange(n)] = "right"
    gens, complete, correct = [], [], []
    for kind in kinds:
        text, done, boxed = trace(rng, p, kind)
        gens.append(text)
        complete.append(done)
        correct.append(boxed == p.answer)
    ops = {op for op, *_ in p.steps}
    judged_by_llama = rng.random() < LLAMA_P
    has_finish_reasons = rng.random() < FINISH_REASONS_P
    llama = list(correct) if judged_by_llama else None
    if judged_by_llama:
        _unbox_some(random.Random(f"unbox:{uid}"), p, gens, correct)
    return {
        "problem": p.text,
        "solution": solution(rng, p),
        "answer": str(p.answer),
        "problem_type": "Number Theory" if "/" in ops else rng.choice(["Algebra", "Algebra", "Algebra", "Other"]),
        "question_type": "math-word-problem",
        "source": rng.choice(ZH_SOURCES if p.lang == "zh" else EN_SOURCES),
        "uuid": uid,
        "is_reasoning_complete": complete,
        "generations": gens,
        "correctness_math_verify": correct,
        "correctness_llama": llama,
        "finish_reasons": ["stop" if d else "length" for d in complete] if has_finish_reasons else None,
        "correctness_count": sum(c or (llama is not None and llama[i]) for i, c in enumerate(correct)),
        "messages": [{"content": p.text, "role": "user"},
                     {"content": gens[correct.index(True)] if any(correct) else gens[0], "role": "assistant"}],
    }


def _unbox_some(rng: random.Random, p: Problem, gens: list[str], correct: list[bool]) -> None:
    """As in OpenR1, where the Llama judge recovers correct traces Math-Verify could not parse: some
    right traces state their answer without \\boxed{}, and Math-Verify marks them wrong (in place)."""
    for i, text in enumerate(gens):
        if correct[i] and rng.random() < UNBOXED_P:
            thinking, _, _ = text.rpartition("</think>")
            gens[i] = f"{thinking}</think>\n\n" + TEMPLATES[p.lang]["so"].format(ans=p.answer, **p.slots)
            correct[i] = False


def cmath_row(p: Problem) -> dict:
    numbers = [p.start] + [v for _, _, b, c in p.steps for v in (b, c)]
    digits = max(len(str(v)) for v in numbers)
    hard = any(op in "*/" for op, *_ in p.steps)
    grade = min(6, max(1, len(p.steps) + digits - 2 + hard))
    return {"grade": grade, "question": p.text, "golden": str(p.answer),
            "reasoning_step": len(p.steps), "num_digits": digits}


_LATEX_OPS = {"+": "+", "-": "-", "*": "\\times", "/": "\\div"}
_NUMBER_RE = re.compile(r"(?<![\w$])(\d+)(?![\w$])")


def _latex_numbers(text: str) -> str:
    """MATH writes every number of a problem in math mode: "has 4 bags" -> "has $4$ bags"."""
    return _NUMBER_RE.sub(r"$\1$", text)


def math_row(rng: random.Random, p: Problem, index: int) -> dict:
    """A MATH-500 row: the problem and a worked solution in LaTeX, the bare answer, subject and level."""
    steps = [f"${a} {_LATEX_OPS[op]} {b} = {c}$." for op, a, b, c in p.steps]
    subject = "Number Theory" if any(op == "/" for op, *_ in p.steps) else "Prealgebra"
    return {
        "problem": _latex_numbers(p.text),
        "solution": " ".join([*steps, f"So the answer is $\\boxed{{{p.answer}}}$."]),
        "answer": str(p.answer),
        "subject": subject,
        "level": min(5, len(p.steps) + rng.randint(0, 2)),
        "unique_id": f"test/{subject.lower().replace(' ', '_')}/{index}.json",
    }


def write_sample_data(out_dir: Path, cfg: SampleConfig) -> dict[str, int]:
    """Write the OpenR1 shards, GSM8K train/test, CMATH test and MATH test under out_dir (all or nothing).
    Returns the row count of each file, keyed by its path relative to out_dir."""
    out_dir = Path(out_dir)
    stream = lambda part: random.Random(f"{cfg.seed}:{part}")  # noqa: E731 - one independent stream per part
    taken: set = set()  # every problem so far, text and story: held-out sets first, then training
    r = stream("gsm8k-test")
    gsm_test = [_fresh_problem(r, "en", cfg, taken) for _ in range(cfg.n_gsm8k_test)]
    r = stream("cmath-test")
    cmath_test = [_fresh_problem(r, "zh", cfg, taken) for _ in range(cfg.n_cmath_test)]
    r = stream("math-test")
    math_test = [_fresh_problem(r, "en", cfg, taken) for _ in range(cfg.n_math_test)]

    r = stream("openr1")
    n = cfg.n_train
    chinese = set(r.sample(range(n), round(n * cfg.chinese_fraction)))
    duplicates = set(r.sample(range(1, n), min(n - 1, max(1, round(n * DUPLICATE_P))))) if n > 1 else set()
    problems: list[Problem] = []
    for i in range(n):
        lang = "zh" if i in chinese else "en"
        same_lang = [q for q in problems if q.lang == lang] if i in duplicates else []
        problems.append(r.choice(same_lang) if same_lang else _fresh_problem(r, lang, cfg, taken))
    rows = [openr1_row(r, p, str(uuid.uuid5(UUID_NS, f"{cfg.seed}/{i}"))) for i, p in enumerate(problems)]

    r = stream("gsm8k-train")
    gsm_train = [_fresh_problem(r, "en", cfg, taken) for _ in range(cfg.n_gsm8k_train)]

    counts: dict[str, int] = {}
    with atomic_dir(out_dir) as tmp:
        for sub in ("openr1", "gsm8k", "cmath", "math"):
            (tmp / sub).mkdir()
        k = cfg.shards
        for s in range(k):
            part = rows[s * n // k:(s + 1) * n // k]
            name = f"openr1/train-{s:05d}-of-{k:05d}.parquet"
            table = pa.Table.from_pylist(part, schema=OPENR1_SCHEMA)
            pq.write_table(table, tmp / name, compression="snappy", version="2.6", use_dictionary=True,
                           write_statistics=True, data_page_version="1.0")
            counts[name] = len(part)
        for name, ps in (("gsm8k/train.jsonl", gsm_train), ("gsm8k/test.jsonl", gsm_test)):
            r = stream(name)
            counts[name] = write_jsonl(tmp / name, ({"question": p.text, "answer": gsm8k_answer(r, p)} for p in ps))
        counts["cmath/test.jsonl"] = write_jsonl(tmp / "cmath/test.jsonl", (cmath_row(p) for p in cmath_test))
        r = stream("math/test.jsonl")
        counts["math/test.jsonl"] = write_jsonl(tmp / "math/test.jsonl",
                                                (math_row(r, p, i) for i, p in enumerate(math_test)))
    return counts
