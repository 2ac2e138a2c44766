"""Bounded input types: every value a client sends is checked here before it reaches the
feature state, the models or the store.

Why each bound exists (each was a 500 or worse before):
- identifiers: 1 to 256 printable characters, or an integer within JSON's exact range
  (+-(2**53 - 1); larger ids travel as strings). A lone UTF-16 surrogate (``"\\ud800"``,
  which JSON allows) cannot be stored as UTF-8 and left the store's write transaction open;
  an integer beyond 64 bits overflowed SQLite, and one beyond 2**53 is not the same number
  in every JSON library (a schema fuzzer found the bound itself rounded).
- free text (query, context values): valid UTF-8, bounded length.
- numbers: finite and within ``MAX_ABS_FEATURE``; a candidate feature of 1e200 overflowed
  float32 inside the model and every score became NaN.
- timestamps: ISO-8601 strings (not bare numbers, which the schema does not promise) from
  year 2000 on; how far ahead of the server clock is a setting checked by the service.
- positions: 1 to ``MAX_POSITION``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

MAX_ID_CHARS = 256
MAX_QUERY_CHARS = 1000
MAX_TEXT_CHARS = 256  # context values, model names
MAX_KEY_CHARS = 64  # context keys, feature names
MAX_CONTEXT_KEYS = 32
MAX_POSITION = 100_000
MAX_TOP_K = 100_000
# Larger than any price, distance or count a catalogue holds, small enough that the model's
# float32 arithmetic stays finite (checked: 1e12 on every feature gives finite scores).
MAX_ABS_FEATURE = 1e12
# Printable: no ASCII control characters. Surrogates are refused by the regex engine itself.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 (a lone surrogate?)") from None
    return value


def clip(value: object, limit: int = 60) -> str:
    """A client's value as it may appear in an error message: repr, ASCII only, bounded."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_as_sent(value: object, limit: int = 40) -> str:
    """A name the client sent (a field or feature name) for an error path: as is when it is
    short printable ASCII, else clipped and escaped like ``clip``."""
    text = str(value)
    if text.isascii() and text.isprintable() and len(text) <= limit:
        return text
    return clip(value, limit)


IdStr = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE)
]
MAX_EXACT_INT = 2**53 - 1


def _integral(value: Any) -> Any:
    """JSON Schema counts 798.0 as an integer; so does the server (798). True stays a bool."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_INT:
        return int(value)
    return value


# Bounds before the validator: after it, pydantic writes them into the schema as "ge"/"le",
# which JSON Schema does not know (a fuzzer then sent ids of 2**61 as schema-valid).
Integral = BeforeValidator(_integral)
IdInt = Annotated[StrictInt, Field(ge=-MAX_EXACT_INT, le=MAX_EXACT_INT), Integral]
Id = IdStr | IdInt
Text = Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT_CHARS), AfterValidator(_utf8)]
Query = Annotated[StrictStr, StringConstraints(max_length=MAX_QUERY_CHARS), AfterValidator(_utf8)]
Key = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=MAX_KEY_CHARS, pattern=PRINTABLE)
]
FeatureValue = Annotated[float, Field(ge=-MAX_ABS_FEATURE, le=MAX_ABS_FEATURE)]
Position = Annotated[StrictInt, Field(ge=1, le=MAX_POSITION), Integral]
TopK = Annotated[StrictInt, Field(ge=1, le=MAX_TOP_K), Integral]

_DATETIME = TypeAdapter(datetime)


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, datetime):  # from Python callers
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 date-time string")
    try:
        return _DATETIME.validate_python(value)
    except ValidationError:
        raise ValueError("is not an ISO-8601 date-time") from None


def _plausible(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if aware < EARLIEST:
        raise ValueError(f"is before {EARLIEST.date()}")
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_iso_datetime),
    AfterValidator(_plausible),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
