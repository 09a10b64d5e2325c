"""Error and warning types of the data loaders, and the helpers that format their messages.

Every message starts with *where* the problem is, then says *what* is wrong and *how* to fix it::

    data/train.json, record 12 (line 87): span key '3;x' has a non-integer index. Use "start;end" with ...
    data/train.conll, sentence 4 (line 31): tag 'PER' has no valid prefix. Use 'O' or B-/I-/E-/S-/L-/U- ...
    in-memory data, record 0: missing key 'span_posLabel'. ...
"""

from __future__ import annotations

__all__ = ["SpanDataError", "SpanDataWarning", "describe_location"]


class SpanDataError(ValueError):
    """Raised for any invalid input to the span-NER data loaders.

    The message names the source (file path, ``"in-memory data"``, ``"dataset"`` or a parameter), the record
    index and, where known, the line number, and says what to change.
    """


class SpanDataWarning(UserWarning):
    """Summary warning about suspicious but usable data (overlapping gold spans, dropped zero-width words)."""


def describe_location(
    source: str, record: int | None = None, line: int | None = None, *, unit: str = "record", column: int | None = None
) -> str:
    """Format the location prefix of a message.

    Args:
        source: Name of the source, e.g. a file path or ``"in-memory data"``.
        record: 0-based index of the record (or sentence) in the source, if known.
        line: 1-based line number in the file, if known.
        unit: Word used for the record, ``"record"``, ``"sentence"`` or ``"row"``.
        column: 1-based column number in the line, if known.

    Returns:
        For example ``"train.json, record 3 (line 17)"`` or ``"train.json (line 2, column 5)"``.
    """
    text = source
    if record is not None:
        text += f", {unit} {record}"
    if line is not None:
        position = f"line {line}" if column is None else f"line {line}, column {column}"
        text += f" ({position})"
    return text
