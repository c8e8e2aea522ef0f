"""The input contract: what sessionstore accepts, at every entry and on every backend.

One set of rules, so that whatever is accepted can be stored in the log AND in every view of
every backend, exported, imported and published (docs/input-contract.md lists them with the
reasons):

- text is valid Unicode (no lone surrogates) without NUL (U+0000, which PostgreSQL text cannot
  hold) — every string: content, ids, keys, metadata and context keys and values, reasons;
- JSON values (metadata, context, tool call arguments) nest at most ``max_json_depth`` levels
  and hold at most ``max_json_keys`` object keys in all, their integers fit in 64 bits and
  their numbers are finite;
- token counts are at most ``MAX_TOKENS`` and durations at most ``MAX_TURN_MS`` (so no sum a
  view keeps can overflow a 64-bit column or add up to infinity);
- times lie between ``EARLIEST`` and ``LATEST`` (date arithmetic in the views stays in range);
- sizes stay within ``Limits`` (content bytes, JSON bytes, idempotency key length).

The store checks every command with one walk (``scan``), judging the configurable limits
(``Limits``) on what that walk measured, before anything is decided or written. Events that
arrive already built (an import, a Kafka message) go through ``event_problems``, which applies
the same rules to the event's fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

DEFAULT_MAX_CONTENT_BYTES = 128 * 1024
DEFAULT_MAX_JSON_BYTES = 64 * 1024
DEFAULT_MAX_JSON_DEPTH = 32
"""Levels of nested objects and arrays in one JSON value (``{"a": {"b": 1}}`` is 2). Real
agents stay in single digits; orjson, which every backend stores with, stops at 254."""
DEFAULT_MAX_JSON_KEYS = 10_000
"""Object keys in one JSON value, counted through every level."""
MAX_JSON_DEPTH_CEILING = 128
"""The most ``max_json_depth`` may be set to: exports and Kafka messages wrap a value a few
levels deeper, and must stay below orjson's limit of 254."""

JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**64 - 1
"""What orjson (the log's encoder on every backend) writes and reads back exactly."""
MAX_TOKENS = 2**31 - 1
"""Largest token count of one message or turn. A view sums them in 64-bit columns; with this
bound a sum needs more than four billion maximal turns to overflow (and saturates if it does)."""
MAX_TURN_MS = 7 * 24 * 3600 * 1000.0
"""Longest a turn or one of its stages may take (a week): the metrics add them up, and a few
huge but finite values would add up to infinity."""
MAX_INTERRUPTED_SECONDS = 100 * 366 * 24 * 3600.0
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def saturated(total: int) -> int:
    """A total kept in a 64-bit column (token sums in the state and the metrics): it stops at
    the largest value instead of overflowing. Each count is bounded by MAX_TOKENS, so only
    billions of maximal messages could get there."""
    return min(total, INT64_MAX)


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""Times outside [EARLIEST, LATEST) are refused: the cleanup view adds up to a century of
policy to them, which must stay a date every backend and Python can represent."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Configurable input limits. Oversized input is rejected before anything is written."""

    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    """Limit for session metadata, each context update and a message's tool calls, measured
    as compact JSON."""
    max_idempotency_key_length: int = 200
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_json_keys: int = DEFAULT_MAX_JSON_KEYS

    def __post_init__(self) -> None:
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH_CEILING:
            msg = f"max_json_depth must be 1 to {MAX_JSON_DEPTH_CEILING}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class Shape:
    """How deep a JSON value nests and how many object keys it holds, with where."""

    depth: int = 0
    deepest: str = ""
    """The path of the most deeply nested container."""
    keys: int = 0


@dataclass
class Scan:
    """What one walk over a value found: its problems and the shape of its JSON."""

    problems: list[dict[str, str]] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    """Per top-level JSON field (``metadata``, ``set``, ``tool_calls``...)."""


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text everywhere, or None."""
    if "\x00" in value:
        return "contains NUL (U+0000), which PostgreSQL cannot store in text"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "is not valid Unicode (a lone surrogate, half of a UTF-16 pair)"
    return None


def check_text(field_name: str, value: str) -> dict[str, str] | None:
    """The problem of a text value such as an id, a key or a filter, as {field, message}."""
    problem = text_problem(value)
    return None if problem is None else {"field": field_name, "message": problem}


def time_problem(value: datetime) -> str | None:
    if value.tzinfo is None:
        return "needs a time zone"
    if not EARLIEST <= value < LATEST:
        return f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)"
    return None


def scalar_problem(value: object) -> str | None:
    """Why a text, number or time cannot be stored everywhere, or None."""
    if isinstance(value, str):
        return None if isinstance(value, Enum) else text_problem(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if not JSON_INT_MIN <= value <= JSON_INT_MAX:
            return "integer outside the 64-bit range JSON storage supports"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a JSON number (numbers must be finite)"
    elif isinstance(value, datetime):
        return time_problem(value)
    return None


class _Walker:
    """One walk over a JSON value (or a model holding some), measuring its shape."""

    def __init__(self, scan: Scan) -> None:
        self.scan = scan
        self.depth = 0
        self.deepest = ""
        self.keys = 0

    def problem(self, path: str, message: str) -> None:
        if len(self.scan.problems) < 20:  # enough to act on; a flood helps nobody
            self.scan.problems.append({"field": path, "message": message})

    def value(self, value: object, path: str, level: int) -> None:
        kind = type(value)
        if kind is str:  # the common case first, without the isinstance chain
            problem = text_problem(value)  # type: ignore[arg-type]
            if problem:
                self.problem(path, problem)
        elif isinstance(value, dict):
            self._object(value, path, level)
        elif isinstance(value, list | tuple):
            self._container(path, level)
            for index, item in enumerate(value):
                self.value(item, f"{path}.{index}", level + 1)
        elif isinstance(value, BaseModel):
            for name, item in vars(value).items():
                self.value(item, f"{path}.{name}" if path else name, level)
        else:
            problem = scalar_problem(value)
            if problem:
                self.problem(path, problem)

    def _object(self, items: dict[Any, Any], path: str, level: int) -> None:
        self._container(path, level)
        self.keys += len(items)
        for key, item in items.items():
            if isinstance(key, str):
                problem = text_problem(key)
                if problem:
                    self.problem(f"{path}.{_printable(key)}", f"key {problem}")
            self.value(item, f"{path}.{_printable(str(key))}", level + 1)

    def _container(self, path: str, level: int) -> None:
        if level + 1 > self.depth:
            self.depth, self.deepest = level + 1, path


_PLAIN = (type(None), bool)


def _measure(value: object, counts: list[int]) -> int:
    """The fast first pass over a container: its depth; ``counts`` collects [keys, suspects]
    (anything that may break a rule). Builds no paths: only a field found suspect is walked
    again, by ``_Walker``, to name where."""
    kind = type(value)
    if kind is str:
        if text_problem(value) is not None:  # type: ignore[arg-type]
            counts[1] += 1
        return 0
    if kind is dict:
        return _measure_object(value, counts)  # type: ignore[arg-type]
    if kind is list or kind is tuple:
        deepest = 0
        for item in value:  # type: ignore[attr-defined]
            deepest = max(deepest, _measure(item, counts))
        return deepest + 1
    if isinstance(value, BaseModel):
        deepest = 0
        for item in vars(value).values():
            deepest = max(deepest, _measure(item, counts))
        return deepest
    if scalar_problem(value) is not None:
        counts[1] += 1
    return 0


def _measure_object(items: dict[Any, Any], counts: list[int]) -> int:
    counts[0] += len(items)
    deepest = 0
    for key, item in items.items():
        if type(key) is not str or text_problem(key) is not None:
            counts[1] += 1
        if type(item) is str:
            if text_problem(item) is not None:
                counts[1] += 1
        elif type(item) not in _PLAIN:
            deepest = max(deepest, _measure(item, counts))
    return deepest + 1


def scan(fields: Iterable[tuple[str, object]], limits: Limits | None = None) -> Scan:
    """Walk ``(name, value)`` pairs: every problem with its field path, and the shape of each
    field that holds JSON (objects or arrays). One fast pass per field; a field that fails it
    (or nests beyond ``limits``) is walked again to name the place."""
    result = Scan()
    max_depth = (limits or Limits()).max_json_depth
    for name, value in fields:
        # Fast paths for the scalar fields every command has (this runs on every append).
        kind = type(value)
        if kind in _PLAIN or (kind is int and INT64_MIN <= value <= INT64_MAX):  # type: ignore[operator]
            continue
        if kind is str:
            problem = text_problem(value)  # type: ignore[arg-type]
            if problem:
                result.problems.append({"field": name, "message": problem})
            continue
        if isinstance(value, Enum) or ((kind is tuple or kind is list) and not value):
            continue
        counts = [0, 0]
        depth = _measure(value, counts)
        if not counts[1] and depth <= max_depth:
            if depth:
                result.shapes[name] = Shape(depth, name, counts[0])
            continue
        walker = _Walker(result)
        walker.value(value, name, 0)
        if walker.depth:
            result.shapes[name] = Shape(walker.depth, walker.deepest, walker.keys)
    return result


def model_fields(model: BaseModel) -> list[tuple[str, object]]:
    """A model's fields and values (pydantic keeps exactly those in the instance dict)."""
    return list(vars(model).items())


def limit_problems(shapes: Mapping[str, Shape], limits: Limits) -> list[dict[str, str]]:
    """The configurable JSON limits, judged on what ``scan`` measured."""
    problems = []
    for name, shape in shapes.items():
        if shape.depth > limits.max_json_depth:
            problems.append(
                {
                    "field": shape.deepest or name,
                    "message": f"nested {shape.depth} levels deep; the limit is "
                    f"{limits.max_json_depth}",
                }
            )
        if shape.keys > limits.max_json_keys:
            problems.append(
                {
                    "field": name,
                    "message": f"{shape.keys} object keys; the limit is {limits.max_json_keys}",
                }
            )
    return problems


def json_size(value: object) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (how the size limits measure it); models are
    measured as their JSON, without building dicts first."""
    return len(to_json(value))


@dataclass(frozen=True, slots=True)
class Oversize:
    field: str
    size: int
    limit: int

    def problem(self) -> dict[str, str]:
        return {
            "field": self.field,
            "message": f"{self.size} bytes exceeds the limit of {self.limit}",
        }


def oversized(fields: Mapping[str, Any], limits: Limits) -> list[Oversize]:
    """The size limits of a command's or an event's fields (``content`` and the JSON ones)."""
    found = []
    content = fields.get("content")
    if isinstance(content, str):
        size = len(content.encode(errors="surrogatepass"))
        if size > limits.max_content_bytes:
            found.append(Oversize("content", size, limits.max_content_bytes))
    for name in ("tool_calls", "metadata", "set"):
        value = fields.get(name)
        if not value:
            continue
        size = json_size(value)
        if size > limits.max_json_bytes:
            found.append(Oversize(name, size, limits.max_json_bytes))
    return found


BOUNDED_NUMBERS: dict[str, float] = {
    "input_tokens": MAX_TOKENS,
    "output_tokens": MAX_TOKENS,
    "duration_ms": MAX_TURN_MS,
    "stt_ms": MAX_TURN_MS,
    "llm_ms": MAX_TURN_MS,
    "tts_ms": MAX_TURN_MS,
    "tool_ms": MAX_TURN_MS,
    "seconds_interrupted": MAX_INTERRUPTED_SECONDS,
}
"""Event fields the views add up, with the most one event may hold."""


def event_problems(event: BaseModel, limits: Limits) -> list[dict[str, str]]:
    """Every way a built event (imported, delivered, read back) breaks the input contract."""
    fields = model_fields(event)
    found = scan(fields, limits)
    problems = found.problems + limit_problems(found.shapes, limits)
    values = dict(fields)
    for name, bound in BOUNDED_NUMBERS.items():
        number = values.get(name)
        if isinstance(number, int | float) and number > bound:
            shown = int(bound) if float(bound).is_integer() else bound
            problems.append({"field": name, "message": f"must be at most {shown}"})
    try:
        problems += [o.problem() for o in oversized(values, limits)]
    except (TypeError, ValueError) as e:  # a value json cannot even measure
        problems.append({"field": "payload", "message": f"cannot be measured as JSON: {e}"})
    return problems


def _printable(key: str) -> str:
    """A key as it may appear in a field path of an error message (control characters and
    surrogates shown escaped, long keys cut)."""
    shown = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 60 else shown[:57] + "..."
