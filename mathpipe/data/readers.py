"""Readers for the raw inputs in their published formats.

OpenR1 parquet shards are read in record batches and only the needed columns, so memory stays flat
however many shards there are; each shard's schema is checked before any row is read. GSM8K and
CMATH and MATH are read from jsonl (GitHub copies) or parquet (Hub copies) with their own field names.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mathpipe.data.schemas import CMATH_GOLD_FIELD, CMATH_QUESTION_FIELDS, GSM8K_FIELDS, MATH_FIELDS, OPENR1_SCHEMA
from mathpipe.errors import DataError
from mathpipe.io import iter_jsonl

# The columns prepare reads from OpenR1; the others are never loaded.
OPENR1_COLUMNS = (
    "problem",
    "solution",
    "answer",
    "source",
    "uuid",
    "generations",
    "correctness_math_verify",
    "correctness_llama",
    "is_reasoning_complete",
    "finish_reasons",
    "correctness_count",
)
# Nullable in the published data. A shard where one of them is null on every row can be written with
# the `null` type (pandas or pyarrow type inference do that); it reads as None on every row.
NULLABLE_COLUMNS = ("correctness_llama", "finish_reasons")


def expand_paths(patterns: str | Iterable[str], base: Path = Path(".")) -> list[Path]:
    """Files matching one or more globs (relative to `base`), each once, in sorted order.

    A folder stands for the parquet files inside it. Overlapping patterns (`dir` and `dir/*.parquet`)
    do not make a shard be read twice.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found: dict[Path, Path] = {}
    for pattern in patterns:
        full = base / pattern
        if full.is_dir():
            matches = sorted(full.glob("*.parquet"))
        else:
            matches = [Path(p) for p in sorted(glob.glob(str(full), recursive=True))]
        if not matches:
            raise DataError(f"no input file matches {full}")
        for path in matches:
            found.setdefault(path.resolve(), path)
    return sorted(found.values())


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Equal up to the large_* variants, which some writers use for the same data."""
    if pa.types.is_large_string(actual):
        actual = pa.string()
    if pa.types.is_large_list(actual):
        actual = pa.list_(actual.value_field.with_type(actual.value_type))
    if pa.types.is_list(actual) and pa.types.is_list(expected):
        return _same_type(actual.value_type, expected.value_type)
    if pa.types.is_struct(actual) and pa.types.is_struct(expected):
        fields = {f.name: f.type for f in actual}
        return all(f.name in fields and _same_type(fields[f.name], f.type) for f in expected)
    return actual.equals(expected)


def check_parquet_schema(path: Path, columns: Iterable[str], schema: pa.Schema = OPENR1_SCHEMA) -> None:
    try:
        actual = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    for name in columns:
        expected = schema.field(name).type
        index = actual.get_field_index(name)
        if index < 0:
            raise DataError(f"{path}: missing required column '{name}' (expected {expected})")
        got = actual.field(index).type
        if pa.types.is_null(got) and name in NULLABLE_COLUMNS:
            continue
        if not _same_type(got, expected):
            raise DataError(f"{path}: column '{name}' has type {got}, expected {expected}")


def iter_openr1(
    paths: list[Path], columns: Iterable[str] = OPENR1_COLUMNS, batch_size: int = 1024
) -> Iterator[dict]:
    """Rows of OpenR1 shards as dicts holding only `columns`. All schemas are checked first."""
    columns = list(columns)
    for path in paths:
        check_parquet_schema(path, columns)
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()


def iter_table_rows(path: Path, required: tuple[str, ...]) -> Iterator[dict]:
    """jsonl or parquet rows, with the required fields checked."""
    if path.suffix == ".parquet":
        names = pq.read_schema(path).names
        missing = [c for c in required if c not in names]
        if missing:
            raise DataError(f"{path}: missing required column(s) {', '.join(map(repr, missing))}")
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        yield from iter_jsonl(path, required)


def _text(row: dict, field: str, path: Path, index: int) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: row {index + 1}: field '{field}' must be a non-empty string")
    return value


def iter_gsm8k(paths: list[Path]) -> Iterator[dict]:
    """GSM8K rows: {"question", "answer"} where answer ends with `#### N`."""
    for path in paths:
        for i, row in enumerate(iter_table_rows(path, GSM8K_FIELDS)):
            answer = _text(row, "answer", path, i)
            if "####" not in answer:
                raise DataError(f"{path}: row {i + 1}: 'answer' has no '#### <final answer>' line")
            yield {"question": _text(row, "question", path, i), "answer": answer}


def iter_cmath(paths: list[Path]) -> Iterator[dict]:
    """CMATH rows: {"question", "golden"}; the question field is `question` (test) or `input` (dev)."""
    for path in paths:
        for i, row in enumerate(iter_table_rows(path, (CMATH_GOLD_FIELD,))):
            field = next((f for f in CMATH_QUESTION_FIELDS if f in row), None)
            if field is None:
                raise DataError(
                    f"{path}: row {i + 1}: no question field (expected one of {CMATH_QUESTION_FIELDS})"
                )
            golden = row[CMATH_GOLD_FIELD]
            if isinstance(golden, (int, float)) and not isinstance(golden, bool):
                row[CMATH_GOLD_FIELD] = str(golden)  # some copies store numeric goldens as numbers
            yield {"question": _text(row, field, path, i), "golden": _text(row, CMATH_GOLD_FIELD, path, i)}


def iter_math(paths: list[Path]) -> Iterator[dict]:
    """MATH rows (MATH-500's schema): {"question": problem, "answer"}, the answer in LaTeX."""
    for path in paths:
        for i, row in enumerate(iter_table_rows(path, MATH_FIELDS)):
            yield {"question": _text(row, "problem", path, i), "answer": _text(row, "answer", path, i)}
