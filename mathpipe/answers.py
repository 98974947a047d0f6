"""The one answer checker of the project: find the final answer in a text, and decide equivalence.

Used by prepare (filtering), rejection sampling (the verifier), evaluate and `stages.score`.

Extraction looks, in order, for the last ``\\boxed{...}`` (or ``\\fbox{...}``), the last
``#### X``, the last "The answer is X", the last ``答案是 X`` / ``答案：X`` / ``答：X``, and finally
the last number; the part after the last ``</think>`` is searched first::

    >>> extract_answer("She makes 9 * 2 = $18 every day.\\n#### 18")
    '18'
    >>> extract_answer("<think>maybe 12? or 7</think> So \\\\boxed{\\\\frac{3}{4}}.")
    '\\\\frac{3}{4}'
    >>> extract_answer("小明先有5个，又买了7个，一共有12个。答案是 12")
    '12'

An output has an answer only if it finished: one that stopped on length, or that opened a
``<think>`` block (itself, or its prompt did) and never closed it, is unfinished reasoning, and
`final_answer` gives it none, whatever numbers it holds. Every stage scores through it::

    >>> final_answer("<think>3 + 4 = 7, so 7")
    (None, 'open_thinking')
    >>> final_answer("<think>3 + 4 = 7</think> \\boxed{7}", finish_reason="length")
    (None, 'length')

Equivalence is numeric first (exact fractions), then Math-Verify, then normalised string equality::

    >>> is_equivalent("1,000.00", "1000"), is_equivalent("4分之3", "0.75"), is_equivalent("40", "40%")
    (True, True, True)
    >>> is_equivalent("2\\\\sqrt{3}", "\\\\sqrt{12}"), is_equivalent("18", "-18")
    (True, False)
    >>> check("The answer is $1,450,000.", "... #### 1,450,000", "gsm8k").correct
    True
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

from mathpipe.errors import ConfigError

log = logging.getLogger(__name__)

BENCHMARKS: dict[str, str] = {"gsm8k": "answer", "cmath": "golden", "math": "answer"}

# --------------------------------------------------------------------------------------------------
# Shared pieces of the number grammar
# --------------------------------------------------------------------------------------------------

# Commas are thousands separators only in groups of three ("1,2" is a tuple, "1,0000" is not 1,000).
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_SIGN = r"[-+]?"
_NUM = rf"{_SIGN}(?:{_UNSIGNED})"

# Full-width ASCII (１２，３／４％) to ASCII, and the unicode minus to '-'.
_WIDTH_TABLE = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x2212: ord("-"), 0x3000: ord(" ")}

# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

THINK_START = "<think>"
_THINK_END = "</think>"
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Markers of a final answer; the answer is the rest of the line after the last one.
_HASHES_RE = re.compile(r"####")
_ANSWER_IS_RE = re.compile(r"\b(?:final\s+)?answer(?:\s+is\s*:?|\s*:)", re.IGNORECASE)
_ANSWER_ZH_RE = re.compile(r"答案[是为]\s*[:：]?|答案\s*[:：]|答\s*[:：]")
# A sentence ends at a period followed by a space / end of line, or at a Chinese full stop.
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|。")
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
_LAST_NUMBER_RE = re.compile(
    r"\\[dt]?frac\{\s*-?\d+\s*\}\{\s*\d+\s*\}"  # \frac{3}{4}
    r"|(?:\d+又)?\d+分之\d+"  # 4分之3, 1又2分之1
    rf"|百分之(?:{_UNSIGNED})"  # 百分之40
    rf"|(?<![\d.])-?(?:{_UNSIGNED})\s*[万亿]"  # 3.5万
    # not inside a number, and no minus right after a digit ("10-5" holds 10 and 5, not -5); "-$5"
    rf"|(?<![\d.])(?:(?<!\d)-\\?\$?)?(?:{_UNSIGNED})"
    r"(?:\s*/\s*\d+(?![\d.,]\d)|\s*(?:\\?%|percent\b))?"  # 3/4, 40%
)
_STRIP_CHARS = " \t\r\n$*"


def extract_answer(text: str) -> str | None:
    """Final answer of a model output (or a worked solution), or None if there is none.

    Searches the part after the last ``</think>`` first (a number inside the thinking is only a
    fallback), then the rest of the text. Returns the raw answer, stripped of whitespace, ``$``
    and a trailing period.
    """
    if not isinstance(text, str):
        return None
    thinking, _, after = text.rpartition(_THINK_END)
    # The thinking is searched only if the part after it holds no answer; searching it alone keeps
    # a line like "answer is 12</think>..." from running past the tag.
    return _find_answer(after) or _find_answer(thinking)


def unfinished(text: str, finish_reason: str = "stop", thinking_opened: bool = False) -> str | None:
    """Why an output has no final answer, or None if it finished: 'length' (generation stopped on
    its token limit) or 'open_thinking' (a <think> block, opened by the output or by its prompt when
    thinking_opened, was never closed)."""
    if finish_reason == "length":
        return "length"
    whole = (THINK_START if thinking_opened else "") + (text if isinstance(text, str) else "")
    start = whole.rfind(THINK_START)
    return "open_thinking" if start >= 0 and whole.find(_THINK_END, start) < 0 else None


def final_answer(text: str, finish_reason: str = "stop",
                 thinking_opened: bool = False) -> tuple[str | None, str | None]:
    """(answer, None) for a finished output (answer None if it states none); (None, reason) for an
    unfinished one (see `unfinished`)."""
    reason = unfinished(text, finish_reason, thinking_opened)
    return (None, reason) if reason else (extract_answer(text), None)


def opens_thinking(prompt: str) -> bool:
    """True when a rendered prompt ends inside an open <think> block (templates that start the
    model's thinking for it): its output then needs only the closing tag."""
    return prompt.rstrip().endswith(THINK_START)


def _find_answer(text: str) -> str | None:
    for finder in (_last_boxed, _after_hashes, _after_answer_is, _after_answer_zh, _last_number):
        found = _clean(finder(text))
        if found:
            return found
    return None


def _clean(answer: str | None) -> str | None:
    if answer is None:
        return None
    previous = None
    while answer != previous:  # e.g. "$18.$" -> "18"
        previous = answer
        answer = answer.strip(_STRIP_CHARS)
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if answer.startswith(left) and answer.endswith(right):
                answer = answer[len(left) : -len(right)]
        answer = answer.removeprefix("\\$").removesuffix(".")
    return answer or None


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces balance (a truncated one is skipped)."""
    matches = list(_BOXED_RE.finditer(text))
    if not matches:
        return None
    closing = _closing_braces(text)
    for match in reversed(matches):
        end = closing.get(match.end() - 1)
        if end is not None and text[match.end() : end].strip():
            return text[match.end() : end]
    return None


def _closing_braces(text: str) -> dict[int, int]:
    """Position of each balanced opening brace -> position of its closing brace (one pass)."""
    closing, open_braces = {}, []
    for i, char in enumerate(text):
        if i and text[i - 1] == "\\":  # an escaped brace \{ does not count
            continue
        if char == "{":
            open_braces.append(i)
        elif char == "}" and open_braces:
            closing[open_braces.pop()] = i
    return closing


def _rest_of_line_after_last(marker: re.Pattern, text: str) -> str | None:
    # Not findall with a rest-of-line group: "Final Answer: The final answer is 5" would hide the
    # second marker inside the first one's match.
    matches = list(marker.finditer(text))
    return text[matches[-1].end() :].split("\n", 1)[0] if matches else None


def _after_hashes(text: str) -> str | None:
    return _rest_of_line_after_last(_HASHES_RE, text)


def _after_answer_is(text: str) -> str | None:
    answer = _rest_of_line_after_last(_ANSWER_IS_RE, text)
    return None if answer is None else _first_sentence(answer)


def _after_answer_zh(text: str) -> str | None:
    answer = _rest_of_line_after_last(_ANSWER_ZH_RE, text)
    if answer is None:
        return None
    answer = _first_sentence(answer)
    # "答：小明一共有12个苹果" is a sentence, not an answer: its last number is.
    if parse_number(answer) is None and _CJK_RE.search(answer):
        return _last_number(answer) or answer
    return answer


def _first_sentence(text: str) -> str:
    return _SENTENCE_END_RE.split(text, maxsplit=1)[0]


def _last_number(text: str) -> str | None:
    matches = _LAST_NUMBER_RE.findall(text)
    return matches[-1] if matches else None


# --------------------------------------------------------------------------------------------------
# Gold answers
# --------------------------------------------------------------------------------------------------


def extract_gold(gold: str, benchmark: str) -> str:
    """The final answer of a benchmark's gold field.

    gsm8k: the text after the last ``####`` (the whole string if it has none, as in eval sets that
    already keep only the final answer); cmath and math: the string itself, stripped.
    """
    if benchmark not in BENCHMARKS:
        known = ", ".join(sorted(BENCHMARKS))
        raise ConfigError(f"unknown benchmark {benchmark!r}; known benchmarks: {known}")
    gold = str(gold)
    if benchmark == "gsm8k":
        gold = gold.rsplit("####", 1)[-1]
    return gold.strip()


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------

_TEXT_WRAPPER_RE = re.compile(
    r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_LATEX_SPACE_RE = re.compile(r"\\[,!;: ]|\\q?quad\b|\{,\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_CURRENCY_RE = re.compile(r"\\\$|[$￥¥€£]|\bUSD\b|\bRMB\b|人民币")
_PERCENT_RE = re.compile(
    r"^(?P<body>.*?)\s*(?:\\%|%|percent)$|^百分之(?P<zh>.*)$", re.IGNORECASE | re.DOTALL
)
_FRAC_RE = re.compile(
    rf"(?P<sign>{_SIGN})\\[dt]?frac\s*\{{\s*(?P<num>{_NUM})\s*\}}\s*\{{\s*(?P<den>{_NUM})\s*\}}"
)
_ZH_FRAC_RE = re.compile(  # 4分之3 = 3/4, 1又2分之1 = 3/2
    rf"(?P<sign>{_SIGN})(?:(?P<whole>{_UNSIGNED})又)?(?P<den>{_UNSIGNED})分之(?P<num>{_UNSIGNED})"
)
_SLASH_FRAC_RE = re.compile(rf"(?P<num>{_NUM})\s*/\s*(?P<den>{_NUM})")
_PLAIN_RE = re.compile(rf"(?P<num>{_NUM})(?P<mult>[万亿])?")
# What may follow a number and still leave it a plain number: unit words ("18 dollars", "5cm",
# "3 km/h", "12 m^2") or Chinese units ("45个", "3千米/时"). A single glued letter ("5x") is not a unit.
# Words are joined only by spaces or "/", so a long run of letters cannot backtrack exponentially.
_UNIT_RE = re.compile(
    r"(?:\s+[A-Za-z][A-Za-z.']*|[A-Za-z]{2,}[.']*)"
    r"(?:(?:\s+|\s*/\s*)[A-Za-z][A-Za-z.']*)*"
    r"(?:\^\{?[23]\}?|[²³])?"
    r"|\s*[\u4e00-\u9fff][\u4e00-\u9fff/]*"
)
_MULTIPLIERS = {"万": 10**4, "亿": 10**8}


def parse_number(s: str) -> Fraction | None:
    """Exact value of a plain numeric answer, or None if it is not one.

    >>> parse_number("$1,450,000.00"), parse_number("\\\\dfrac{72}{180}"), parse_number("1又2分之1")
    (Fraction(1450000, 1), Fraction(2, 5), Fraction(3, 2))
    >>> parse_number("40%"), parse_number("18元"), parse_number("(1, 2)"), parse_number("1,2")
    (Fraction(2, 5), Fraction(18, 1), None, None)
    """
    parsed = _parse_numeric(s)
    return None if parsed is None else parsed[0]


def parses_as_number(answer: str) -> bool:
    """Whether the checker reads `answer` as a number (gsm8k and cmath golds must be one)."""
    return _parse_numeric(answer) is not None


def gold_is_checkable(gold: str, benchmark: str) -> bool:
    """Whether any prediction could match this gold: gsm8k and cmath golds must be numbers; a math
    gold may be any answer the checker reads (a number, or LaTeX that Math-Verify parses)."""
    if parses_as_number(gold):
        return True
    return benchmark == "math" and bool(gold.strip()) and _math_verify_parses(gold)


def _parse_numeric(s: str | None) -> tuple[Fraction, bool] | None:
    """(value, is_percentage) of a plain numeric answer; a percentage's value is already /100."""
    if not isinstance(s, str):
        return None
    text = _normalise_number_text(s)
    percent = _PERCENT_RE.match(text)
    if percent:
        body = percent.group("body") if percent.group("body") is not None else percent.group("zh")
        value = _parse_core(body)
        return None if value is None else (value / 100, True)
    value = _parse_core(text)
    return None if value is None else (value, False)


def _normalise_number_text(s: str) -> str:
    text = s.translate(_WIDTH_TABLE)
    for _ in range(3):  # \text{\textbf{18}}
        text = _TEXT_WRAPPER_RE.sub(r" \1 ", text)
    text = _LATEX_SPACE_RE.sub("", text)
    text = _DEGREE_RE.sub("", text)
    text = _CURRENCY_RE.sub("", text)
    return text.strip().rstrip(".").strip()


def _parse_core(text: str) -> Fraction | None:
    """A number, fraction or Chinese fraction, optionally followed by a unit, and nothing else."""
    text = text.strip()
    for pattern in (_FRAC_RE, _ZH_FRAC_RE, _SLASH_FRAC_RE, _PLAIN_RE):
        match = pattern.match(text)
        if match and _is_unit(text[match.end() :]):
            try:
                return _value(match)
            except ValueError:  # over Python's 4,300-digit limit for int(str)
                return None
    return None


def _is_unit(rest: str) -> bool:
    return not rest or _UNIT_RE.fullmatch(rest) is not None


def _value(match: re.Match) -> Fraction | None:
    groups = match.groupdict()
    num = _to_fraction(groups["num"])
    if "den" in groups:
        den = _to_fraction(groups["den"])
        if den == 0:
            return None
        num /= den
    if groups.get("whole"):
        num += _to_fraction(groups["whole"])
    if groups.get("sign") == "-":
        num = -num
    if groups.get("mult"):
        num *= _MULTIPLIERS[groups["mult"]]
    return num


def _to_fraction(number: str) -> Fraction:
    return Fraction(number.replace(",", ""))


# --------------------------------------------------------------------------------------------------
# Equivalence
# --------------------------------------------------------------------------------------------------


def is_equivalent(pred: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold one. Never raises.

    Numbers compare exactly; a percentage on either side also matches its value times 100
    (gold "40%" == "0.4" == "40%" == "40"). Other answers go to Math-Verify, then to normalised
    string equality (checked first, as it is cheap and can only say yes).
    """
    if not (isinstance(pred, str) and isinstance(gold, str) and pred.strip() and gold.strip()):
        return False
    pred_num, gold_num = _parse_numeric(pred), _parse_numeric(gold)
    if pred_num is not None and gold_num is not None:
        return bool(_candidates(pred_num) & _candidates(gold_num))
    if _normalise_text(pred) == _normalise_text(gold):
        return True
    return _math_verify_equal(pred, gold)


def _candidates(parsed: tuple[Fraction, bool]) -> set[Fraction]:
    value, is_percentage = parsed
    return {value, value * 100} if is_percentage else {value}


_MATH_VERIFY_TIMEOUT_S = 5
_TEXT_NORMALISE_RE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\$|\s+")


def _normalise_text(s: str) -> str:
    text = _TEXT_WRAPPER_RE.sub(r"\1", s.translate(_WIDTH_TABLE))
    return _TEXT_NORMALISE_RE.sub("", text).rstrip(".").lower()


def _as_latex(answer: str) -> str:
    """Math-Verify only finds LaTeX inside math delimiters: wrap bare answers in $...$."""
    if "$" in answer or "\\boxed" in answer or "\\(" in answer or "\\[" in answer:
        return answer
    return f"${answer}$"


def _math_verify_equal(pred: str, gold: str) -> bool:
    def compare(math_verify, timeout):
        gold_parsed = math_verify.parse(_as_latex(gold), parsing_timeout=timeout)
        pred_parsed = math_verify.parse(_as_latex(pred), parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout)

    return _with_math_verify(compare, f"{pred!r} vs {gold!r}")


def _math_verify_parses(answer: str) -> bool:
    return _with_math_verify(lambda mv, timeout: mv.parse(_as_latex(answer), parsing_timeout=timeout), repr(answer))


def _with_math_verify(call, what: str) -> bool:
    """bool(call(math_verify, timeout)), False on any failure of Math-Verify."""
    try:
        import math_verify
        from math_verify.errors import TimeoutException
    except ImportError:  # pragma: no cover - math-verify is a pinned requirement
        log.warning("math-verify is not installed: non-numeric answers compare as strings")
        return False
    # Math-Verify's timeouts use SIGALRM, which only works in the main thread; elsewhere (e.g. a
    # thread pool) they must be off, or parse/verify raise ValueError.
    in_main_thread = threading.current_thread() is threading.main_thread()
    timeout = _MATH_VERIFY_TIMEOUT_S if in_main_thread else None
    try:
        with _keep_outer_alarm() if in_main_thread else contextlib.nullcontext():
            return bool(call(math_verify, timeout))
    # Odd input must never stop a run. TimeoutException derives from BaseException, not Exception.
    except (Exception, TimeoutException) as e:  # noqa: BLE001 - a verdict of False, never a crash
        log.debug("math-verify failed on %s: %r", what, e)
        return False


@contextlib.contextmanager
def _keep_outer_alarm():
    """Re-arm a timer set by someone else (pytest-timeout, say): Math-Verify's alarm(0) ends it."""
    delay, interval = signal.getitimer(signal.ITIMER_REAL)
    start = time.monotonic()
    try:
        yield
    finally:
        if delay > 0:
            left = max(delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


# --------------------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    extracted: str | None  # the answer found in the prediction (None if unfinished)
    gold: str  # the gold final answer (after extract_gold)
    correct: bool
    unfinished: str | None = None  # why there is no final answer: 'length', 'open_thinking'


def check(prediction: str, gold: str, benchmark: str, finish_reason: str = "stop",
          thinking_opened: bool = False) -> Verdict:
    """The prediction's final answer against the gold's; an unfinished prediction is incorrect."""
    gold_answer = extract_gold(gold, benchmark)
    extracted, reason = final_answer(prediction, finish_reason, thinking_opened)
    correct = reason is None and is_equivalent(extracted, gold_answer)
    return Verdict(extracted=extracted, gold=gold_answer, correct=correct, unfinished=reason)
