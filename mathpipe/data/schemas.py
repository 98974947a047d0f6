"""The schemas of the real data sets, as published; readers check inputs against them.

OpenR1-Math-220k (open-r1/OpenR1-Math-220k, dataset card `dataset_info`): 14 columns, one row per
problem, 2-4 DeepSeek-R1 generations each. `correctness_llama` and `finish_reasons` are nullable.
"""

import pyarrow as pa

OPENR1_SCHEMA = pa.schema(
    [
        ("problem", pa.string()),
        ("solution", pa.string()),
        ("answer", pa.string()),
        ("problem_type", pa.string()),
        ("question_type", pa.string()),
        ("source", pa.string()),
        ("uuid", pa.string()),
        ("is_reasoning_complete", pa.list_(pa.bool_())),
        ("generations", pa.list_(pa.string())),
        ("correctness_math_verify", pa.list_(pa.bool_())),
        ("correctness_llama", pa.list_(pa.bool_())),
        ("finish_reasons", pa.list_(pa.string())),
        ("correctness_count", pa.int64()),
        (
            "messages",
            pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())])),
        ),
    ]
)

# GSM8K (openai/grade-school-math): `answer` is a worked solution whose last line is `#### <final>`.
GSM8K_FIELDS = ("question", "answer")

# CMATH (XiaoMi/cmath): the question is `question` in test.jsonl but `input` in dev.jsonl;
# `golden` is the final answer as a string ("18", "3/4", "27.3%").
CMATH_QUESTION_FIELDS = ("question", "input")
CMATH_GOLD_FIELD = "golden"

# MATH (Hendrycks et al. 2021; the MATH-500 test subset, HuggingFaceH4/MATH-500): `answer` is the bare
# final answer in LaTeX (`\frac{14}{3}`, `\left( 3, \frac{\pi}{2} \right)`, `\text{Evelyn}`), `solution`
# the worked solution with it inside \boxed{}. Also subject, level (1-5) and unique_id.
MATH_FIELDS = ("problem", "answer")
