"""Record readers: span JSON files, CoNLL/BIO column files, in-memory records and ``datasets.Dataset`` objects.

Every reader yields :class:`SpanRecord` tuples ``(sentence_id, tokens, spans, line, ...)`` that are already
validated and cleaned, so :func:`data_loading.load_spans` and :class:`data_loading.SpanNERBuilder` share one
implementation of each format. Invalid input raises :class:`~data_loading.errors.SpanDataError` with a message
that names the source, the record and (for files) the line.

Text cleanup (method spec §2.6, "clean" variant): words are ``context.split()``; the zero-width characters
U+200B, U+FEFF, U+200C, U+200D, U+200E and U+200F are removed from inside words; a word made only of them is
dropped and the span indices after it are shifted. One summary :class:`SpanDataWarning` per source reports the
number of dropped words, another one the number of overlapping gold spans (overlaps are allowed).
"""

from __future__ import annotations

import bisect
import json
import logging
import numbers
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .errors import SpanDataError, SpanDataWarning, describe_location
from .tag_schemes import TagError, detect_tag_scheme, tags_to_spans

__all__ = [
    "DATA_FORMATS",
    "DOCSTART",
    "IN_MEMORY_NAME",
    "DATASET_NAME",
    "ZERO_WIDTH_CHARACTERS",
    "SpanRecord",
    "class_label_names",
    "detect_file_format",
    "iter_records",
    "read_conll",
    "read_dataset",
    "read_memory",
    "read_span_json",
    "source_name",
]

logger = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
"""Word of the one-word document separator sentences of CoNLL files."""

ZERO_WIDTH_CHARACTERS = "\u200b\ufeff\u200c\u200d\u200e\u200f"
"""Characters removed from words during cleanup (method spec §2.6)."""

DATA_FORMATS = ("span_json", "conll", "memory", "dataset")
"""Accepted values of ``data_format`` (``None`` means auto-detection)."""

IN_MEMORY_NAME = "in-memory data"
DATASET_NAME = "dataset"

_ZERO_WIDTH_TABLE = str.maketrans("", "", ZERO_WIDTH_CHARACTERS)
_ZERO_WIDTH_RE = re.compile(f"[{ZERO_WIDTH_CHARACTERS}]")
_JSON_WHITESPACE_RE = re.compile(r"[ \t\n\r]*")
_INDEX_RE = re.compile(r"-?[0-9]+")
_SPAN_KEY_HINT = 'Span keys must be "start;end" with 0-based inclusive word indices, e.g. "0;1".'


class SpanRecord(NamedTuple):
    """One validated sentence.

    Attributes:
        sentence_id: 0-based index of the record (sentence) in its source, counting every record.
        tokens: The cleaned words.
        spans: ``(start, end, label)`` with inclusive word indices into ``tokens``, sorted by ``(start, end)``.
        line: 1-based line of the record in its file, or ``None`` for in-memory sources.
        source: Name of the source used in messages (file path, ``"in-memory data"`` or ``"dataset"``).
        unit: Word for a record in messages: ``"record"``, ``"sentence"`` or ``"row"``.
    """

    sentence_id: int
    tokens: list[str]
    spans: list[tuple[int, int, str]]
    line: int | None
    source: str
    unit: str = "record"

    @property
    def is_docstart(self) -> bool:
        """Whether this is a ``-DOCSTART-`` document separator (one word ``-DOCSTART-``)."""
        return len(self.tokens) == 1 and self.tokens[0] == DOCSTART

    @property
    def location(self) -> str:
        """Location prefix for messages, e.g. ``"train.json, record 3 (line 17)"``."""
        return describe_location(self.source, self.sentence_id, self.line, unit=self.unit)


class _RawSpan(NamedTuple):
    start: Any
    end: Any
    label: Any
    shown: str


class _RecordChecker:
    """Validates and cleans the records of one source and collects the data for its summary warnings."""

    def __init__(self, source: str, unit: str) -> None:
        self.source = source
        self.unit = unit
        self.dropped_words = 0
        self.first_dropped: str | None = None
        self.overlapping_spans = 0
        self.first_overlap: str | None = None
        self.irregular_spacing = 0
        self.first_irregular_spacing: str | None = None

    def note_spacing(self, index: int, line: int | None, context: str, words: list[str]) -> None:
        """Counts contexts whose words are not joined by single spaces (span indices count `split()` words)."""
        if context != " ".join(words):
            self.irregular_spacing += 1
            if self.first_irregular_spacing is None:
                self.first_irregular_spacing = describe_location(self.source, index, line, unit=self.unit)

    def error(self, index: int | None, line: int | None, message: str) -> SpanDataError:
        return SpanDataError(f"{describe_location(self.source, index, line, unit=self.unit)}: {message}")

    def finish(self, index: int, line: int | None, words: list[str], raw_spans: list[_RawSpan]) -> SpanRecord:
        """Validate spans against the words, drop zero-width-only words, sort spans and count overlaps."""
        spans = [self._check_span(index, line, span, len(words)) for span in raw_spans]
        self._check_duplicates(index, line, spans, raw_spans)
        words, spans = self._clean(index, line, words, spans, raw_spans)
        order = sorted(range(len(spans)), key=lambda i: spans[i][:2])
        spans = [spans[i] for i in order]
        self._count_overlaps(index, line, spans, [raw_spans[i] for i in order])
        return SpanRecord(index, words, spans, line, self.source, self.unit)

    def _check_span(self, index: int, line: int | None, span: _RawSpan, n_words: int) -> tuple[int, int, str]:
        for value in (span.start, span.end):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # NumPy integers are Integral
                raise self.error(index, line, f"span {span.shown} has a non-integer index {value!r}. {_SPAN_KEY_HINT}")
        span = span._replace(start=int(span.start), end=int(span.end))
        if span.start < 0 or span.end < 0:
            raise self.error(index, line, f"span {span.shown} has a negative index. {_SPAN_KEY_HINT}")
        if span.start > span.end:
            raise self.error(
                index,
                line,
                f"span {span.shown} has start {span.start} > end {span.end}; indices are inclusive, "
                "so a one-word span at word i is 'i;i'.",
            )
        if span.end >= n_words:
            raise self.error(
                index,
                line,
                f"span {span.shown} is out of range: the sentence has {n_words} words (valid indices "
                f"0..{n_words - 1}). Fix the indices or the sentence text.",
            )
        if not isinstance(span.label, str) or not span.label.strip():
            raise self.error(index, line, f"span {span.shown} has label {span.label!r}; use a non-empty string.")
        if span.label == "O":
            raise self.error(
                index, line, f"span {span.shown} is labeled 'O', which is reserved for non-entity spans; remove it."
            )
        return span.start, span.end, span.label

    def _check_duplicates(
        self, index: int, line: int | None, spans: list[tuple[int, int, str]], raw_spans: list[_RawSpan]
    ) -> None:
        seen: dict[tuple[int, int], int] = {}
        for position, (start, end, _) in enumerate(spans):
            earlier = seen.setdefault((start, end), position)
            if earlier != position:
                raise self.error(
                    index,
                    line,
                    f"spans {raw_spans[earlier].shown} and {raw_spans[position].shown} both denote words "
                    f"{start}..{end}; keep only one of them.",
                )

    def _clean(
        self,
        index: int,
        line: int | None,
        words: list[str],
        spans: list[tuple[int, int, str]],
        raw_spans: list[_RawSpan],
    ) -> tuple[list[str], list[tuple[int, int, str]]]:
        if not any(_ZERO_WIDTH_RE.search(word) for word in words):
            return words, spans
        cleaned = [word.translate(_ZERO_WIDTH_TABLE) for word in words]
        kept = [position for position, word in enumerate(cleaned) if word]
        if len(kept) == len(words):
            return cleaned, spans
        if not kept:
            raise self.error(index, line, "the sentence consists only of zero-width characters; remove the record.")
        self.dropped_words += len(words) - len(kept)
        if self.first_dropped is None:
            self.first_dropped = describe_location(self.source, index, line, unit=self.unit)
        shifted = []
        for (start, end, label), raw in zip(spans, raw_spans):
            new_start = bisect.bisect_left(kept, start)
            new_end = bisect.bisect_right(kept, end) - 1
            if new_start > new_end:
                raise self.error(
                    index,
                    line,
                    f"span {raw.shown} covers only words made of zero-width characters, which are "
                    "removed; delete the span or fix the text.",
                )
            shifted.append((new_start, new_end, label))
        self._check_duplicates(index, line, shifted, raw_spans)
        return [cleaned[position] for position in kept], shifted

    def _count_overlaps(
        self, index: int, line: int | None, spans: list[tuple[int, int, str]], raw_spans: list[_RawSpan]
    ) -> None:
        max_end = -1
        widest = 0
        for position, (start, end, _) in enumerate(spans):
            if start <= max_end:
                self.overlapping_spans += 1
                if self.first_overlap is None:
                    where = describe_location(self.source, index, line, unit=self.unit)
                    self.first_overlap = f"{where}: {raw_spans[widest].shown} and {raw_spans[position].shown}"
            if end > max_end:
                max_end, widest = end, position

    def emit_warnings(self) -> None:
        """Issue the per-source summary warnings (at most one per kind)."""
        if self.dropped_words:
            warnings.warn(
                f"{self.source}: dropped {self.dropped_words} word(s) consisting only of zero-width characters or "
                f"whitespace (first in {self.first_dropped}); span indices after them were shifted.",
                SpanDataWarning,
                stacklevel=2,
            )
        if self.irregular_spacing:
            warnings.warn(
                f"{self.source}: {self.irregular_spacing} 'context'(s) are not words joined by single spaces (double, "
                f"leading or trailing spaces, tabs; first in {self.first_irregular_spacing}). Span indices count the "
                "words of context.split(), so a doubled space does not start a word: check that the spans match.",
                SpanDataWarning,
                stacklevel=2,
            )
        if self.overlapping_spans:
            warnings.warn(
                f"{self.source}: {self.overlapping_spans} gold span(s) overlap an earlier span of the same sentence "
                f"(first in {self.first_overlap}). Overlaps are kept; span decoding can predict only one of them.",
                SpanDataWarning,
                stacklevel=2,
            )


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def _read_text(path: Path, name: str) -> str:
    """Read a UTF-8 file (a leading BOM is removed), turning every failure into a :class:`SpanDataError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpanDataError(
            f"{name}: file not found. Check the path (relative paths start at the working directory)."
        ) from None
    except IsADirectoryError:
        raise SpanDataError(f"{name}: is a directory; pass the path of one data file.") from None
    except OSError as error:
        raise SpanDataError(f"{name}: cannot read the file ({error.strerror}).") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SpanDataError(
            f"{name} (line {line}): not valid UTF-8 at byte offset {error.start} ({error.reason}). Re-encode the "
            "file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise SpanDataError(f"{name}: the file is empty; it must contain at least one sentence.")
    return text


def detect_file_format(text: str) -> str:
    """Guess the format of a file's text.

    Args:
        text: The decoded file content.

    Returns:
        ``"span_json"`` if the first non-whitespace character is ``[`` (or ``{``, so that a JSON object gets the
        helpful "top level must be a list" error), else ``"conll"``.
    """
    stripped = text.lstrip()
    return "span_json" if stripped[:1] in ("[", "{") else "conll"


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return result


def read_span_json(path: str | Path) -> Iterator[SpanRecord]:
    """Read a span JSON file: a list of ``{"context": str, "span_posLabel": {"start;end": label}}`` objects.

    Args:
        path: The file.

    Returns:
        An iterator of :class:`SpanRecord`, one per list element, with the line where the element starts.

    Raises:
        SpanDataError: At once for unreadable or empty files; during iteration for malformed JSON and invalid
            records.
    """
    name = str(path)
    return _span_json_records(_read_text(Path(path), name), name)


def _span_json_records(text: str, name: str) -> Iterator[SpanRecord]:
    checker = _RecordChecker(name, "record")
    yield from _iter_json_array(text, checker)
    checker.emit_warnings()


def _iter_json_array(text: str, checker: _RecordChecker) -> Iterator[SpanRecord]:
    name = checker.source
    decoder = json.JSONDecoder(object_pairs_hook=_pairs_without_duplicates)

    def malformed(position: int, message: str) -> SpanDataError:
        line, column = _line_and_column(text, position)
        return SpanDataError(f"{describe_location(name, line=line, column=column)}: malformed JSON: {message}.")

    position = _JSON_WHITESPACE_RE.match(text, 0).end()
    if text[position] not in "[{":
        hint = "; a CoNLL file needs a suffix other than .json (e.g. .conll or .txt)" if name.endswith(".json") else ""
        raise malformed(position, f"the file starts with {text[position]!r}: it is not a span JSON list{hint}")
    if text[position] != "[":
        kind = "an object" if text[position] == "{" else "not a list"
        raise SpanDataError(
            f"{name}: the top level is {kind}; a span JSON file must be a list of records "
            '[{"context": ..., "span_posLabel": {...}}, ...] (JSON Lines is not supported).'
        )
    position = _JSON_WHITESPACE_RE.match(text, position + 1).end()
    if text.startswith("]", position):
        raise SpanDataError(f"{name}: the list contains no records; the file must contain at least one sentence.")
    index = 0
    line = 1
    line_position = 0
    while True:
        line += text.count("\n", line_position, position)
        line_position = position
        try:
            obj, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise malformed(error.pos, error.msg) from None
        except _DuplicateKeyError as error:
            raise checker.error(
                index, line, f"duplicate key {error.key!r} in one JSON object; keep only one of them."
            ) from None
        yield _context_record(checker, index, line, obj)
        index += 1
        position = _JSON_WHITESPACE_RE.match(text, end).end()
        if position >= len(text):
            raise malformed(position, "the file ends before the top-level list is closed with ']'")
        if text[position] == "]":
            position = _JSON_WHITESPACE_RE.match(text, position + 1).end()
            if position < len(text):
                raise malformed(position, "extra data after the top-level list")
            return
        if text[position] != ",":
            raise malformed(position, "expected ',' or ']' after a record")
        position = _JSON_WHITESPACE_RE.match(text, position + 1).end()


def _parse_span_key(checker: _RecordChecker, index: int, line: int | None, key: Any) -> tuple[int, int]:
    if not isinstance(key, str):
        raise checker.error(index, line, f"span key {key!r} is not a string. {_SPAN_KEY_HINT}")
    parts = key.split(";")
    if len(parts) != 2:
        raise checker.error(index, line, f"span key {key!r} is not of the form 'start;end'. {_SPAN_KEY_HINT}")
    for part in parts:
        if not _INDEX_RE.fullmatch(part.strip()):
            raise checker.error(
                index, line, f"span key {key!r} has a non-integer index {part.strip()!r}. {_SPAN_KEY_HINT}"
            )
    return int(parts[0]), int(parts[1])


def _context_record(checker: _RecordChecker, index: int, line: int | None, obj: Any) -> SpanRecord:
    """Validate a ``{"context", "span_posLabel"}`` record (span JSON element or in-memory dict)."""
    if not isinstance(obj, Mapping):
        raise checker.error(
            index, line, f"the record is {_type_name(obj)}, not an object with keys 'context' and 'span_posLabel'."
        )
    missing = [key for key in ("context", "span_posLabel") if key not in obj]
    if missing:
        raise checker.error(
            index,
            line,
            f"missing key(s) {', '.join(repr(key) for key in missing)}; every record needs 'context' "
            "(the words joined by spaces) and 'span_posLabel' (use {} for a sentence without entities).",
        )
    context = obj["context"]
    if not isinstance(context, str):
        raise checker.error(
            index, line, f"'context' is {_type_name(context)}; it must be a string of words joined by spaces."
        )
    words = context.split()
    if not words:
        raise checker.error(index, line, "'context' is empty; remove the record or give the sentence's words.")
    checker.note_spacing(index, line, context, words)
    span_map = obj["span_posLabel"]
    if not isinstance(span_map, Mapping):
        raise checker.error(
            index,
            line,
            f"'span_posLabel' is {_type_name(span_map)}; it must be an object mapping \"start;end\" "
            "to a label (use {} for a sentence without entities).",
        )
    raw_spans = []
    for key, label in span_map.items():
        start, end = _parse_span_key(checker, index, line, key)
        raw_spans.append(_RawSpan(start, end, label, repr(key)))
    return checker.finish(index, line, words, raw_spans)


def _type_name(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def read_conll(path: str | Path) -> Iterator[SpanRecord]:
    """Read a CoNLL/BIO column file.

    Columns are separated by whitespace; the word is the first column and the tag the last one. A blank line ends
    a sentence. A line whose word is ``-DOCSTART-`` always forms a one-word sentence of its own. Tags may use IOB1,
    IOB2, BIOES or BILOU (see :mod:`data_loading.tag_schemes`); the scheme is detected and logged.

    Args:
        path: The file.

    Returns:
        An iterator of :class:`SpanRecord`, one per sentence, with the line of its first word.

    Raises:
        SpanDataError: At once for unreadable or empty files; during iteration for lines with a single column
            and invalid tags.
    """
    name = str(path)
    return _conll_records(_read_text(Path(path), name), name)


def _conll_records(text: str, name: str) -> Iterator[SpanRecord]:
    checker = _RecordChecker(name, "sentence")
    scheme_rank = {"IOB2": 0, "IOB1": 1, "BIOES": 2, "BILOU": 3}
    scheme = "IOB2"
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    sentence_id = 0

    def sentence() -> SpanRecord:
        nonlocal scheme
        try:
            spans = tags_to_spans(tags)
        except TagError as error:
            raise checker.error(sentence_id, lines[error.args[1]], error.args[0]) from None
        sentence_scheme = detect_tag_scheme([tags])
        if scheme_rank[sentence_scheme] > scheme_rank[scheme]:
            scheme = sentence_scheme
        raw_spans = [_RawSpan(start, end, label, f"'{start};{end}' ({label})") for start, end, label in spans]
        return checker.finish(sentence_id, lines[0], words, raw_spans)

    for line_number, line in enumerate(text.split("\n"), start=1):
        columns = line.split()
        if columns and columns[0] != DOCSTART:
            if len(columns) < 2:
                raise checker.error(
                    sentence_id,
                    line_number,
                    f"the line has one column ({columns[0]!r}); expected the word in the "
                    "first column and its tag in the last one, separated by whitespace.",
                )
            words.append(columns[0])
            tags.append(columns[-1])
            lines.append(line_number)
            continue
        if words:
            yield sentence()
            sentence_id += 1
            words, tags, lines = [], [], []
        if columns:
            yield SpanRecord(sentence_id, [DOCSTART], [], line_number, name, "sentence")
            sentence_id += 1
    if words:
        yield sentence()
        sentence_id += 1
    if sentence_id == 0:
        raise SpanDataError(f"{name}: no sentences found; the file must contain at least one sentence.")
    logger.info("%s: %d sentences, tag scheme %s", name, sentence_id, scheme)
    checker.emit_warnings()


# ----------------------------------------------------------------------------------------------------------------
# In-memory records and datasets.Dataset
# ----------------------------------------------------------------------------------------------------------------


def _tokens_record(checker: _RecordChecker, index: int, obj: Mapping[str, Any]) -> SpanRecord:
    """Validate a ``{"tokens": [...], "spans": [{"start", "end", "label"}, ...]}`` record (end inclusive)."""
    if "spans" not in obj:
        raise checker.error(
            index,
            None,
            "missing key 'spans'; give a list of {'start', 'end', 'label'} dicts (end inclusive), "
            "[] for a sentence without entities.",
        )
    words = _check_tokens(checker, index, obj["tokens"])
    spans = obj["spans"]
    if not isinstance(spans, (list, tuple)):
        raise checker.error(index, None, f"'spans' is {_type_name(spans)}; it must be a list of span dicts.")
    raw_spans = []
    for position, span in enumerate(spans):
        shown = f"spans[{position}]"
        if not isinstance(span, Mapping):
            raise checker.error(index, None, f"{shown} is {_type_name(span)}; use {{'start', 'end', 'label'}}.")
        missing = [key for key in ("start", "end", "label") if key not in span]
        if missing:
            raise checker.error(
                index,
                None,
                f"{shown} misses key(s) {', '.join(repr(key) for key in missing)}; every span needs "
                "'start', 'end' (inclusive) and 'label'.",
            )
        raw_spans.append(_RawSpan(span["start"], span["end"], span["label"], shown))
    return checker.finish(index, None, words, raw_spans)


def _check_tokens(checker: _RecordChecker, index: int, tokens: Any) -> list[str]:
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(token, str) for token in tokens):
        raise checker.error(index, None, "'tokens' must be a list of strings.")
    tokens = list(tokens)
    if " ".join(tokens).split() == tokens:
        if not tokens:
            raise checker.error(index, None, "'tokens' is empty; remove the record or give the sentence's words.")
        return tokens
    # Slow path: whitespace-only tokens are dropped like zero-width words (through the same index shifting);
    # a token with whitespace inside cannot be represented in span JSON.
    cleaned = []
    for position, token in enumerate(tokens):
        parts = token.split()
        if len(parts) > 1:
            raise checker.error(
                index,
                None,
                f"token {position} ({token!r}) contains whitespace; split it into separate tokens "
                "(and adjust the span indices) or replace the whitespace.",
            )
        cleaned.append(parts[0] if parts else "\u200b")
    if all(token == "\u200b" for token in cleaned):
        raise checker.error(index, None, "'tokens' has no non-blank token; remove the record.")
    return cleaned


def read_memory(records: Sequence[Any], *, name: str = IN_MEMORY_NAME) -> Iterator[SpanRecord]:
    """Read in-memory records of either shape.

    Args:
        records: A list of ``{"context": str, "span_posLabel": {"start;end": label}}`` dicts and/or
            ``{"tokens": [str, ...], "spans": [{"start": int, "end": int, "label": str}, ...]}`` dicts
            (``end`` inclusive).
        name: Name of the records in messages.

    Yields:
        One :class:`SpanRecord` per record.

    Raises:
        SpanDataError: For invalid records (the message names the record index).
    """
    checker = _RecordChecker(name, "record")
    for index, obj in enumerate(records):
        if isinstance(obj, Mapping) and "context" not in obj and "tokens" in obj:
            yield _tokens_record(checker, index, obj)
        elif isinstance(obj, Mapping) and "context" not in obj and "span_posLabel" not in obj:
            raise checker.error(
                index,
                None,
                "the record has neither 'context' nor 'tokens'; use {'context': str, 'span_posLabel': "
                "{'start;end': label}} or {'tokens': [...], 'spans': [{'start', 'end', 'label'}]}.",
            )
        else:
            yield _context_record(checker, index, None, obj)
    checker.emit_warnings()


def read_dataset(
    dataset: Any,
    *,
    spans_column: str | None = None,
    label_names: Sequence[str] | None = None,
    name: str = DATASET_NAME,
) -> Iterator[SpanRecord]:
    """Read a ``datasets.Dataset``.

    Two layouts are accepted: ``tokens`` + ``ner_tags`` (per-word tags of any scheme, as ``ClassLabel`` ids or
    strings, as in Hub NER datasets such as conll2003), or ``tokens`` + a span column in this package's own layout
    (``spans``, or ``gold_spans``; labels as ``ClassLabel`` ids or strings).

    Args:
        dataset: The dataset (one split; not a ``DatasetDict``).
        spans_column: Span column to read; default ``"spans"`` if present, else ``ner_tags`` is used.
        label_names: Names for integer labels when the column has no ``ClassLabel`` names (ignored otherwise).
        name: Name of the dataset in messages.

    Yields:
        One :class:`SpanRecord` per row (``sentence_id`` = row index).

    Raises:
        SpanDataError: For missing columns, integer labels without names, and invalid rows.
    """
    checker = _RecordChecker(name, "row")
    columns = dataset.column_names
    if spans_column is None:
        spans_column = "spans" if "spans" in columns else "ner_tags"
    if "tokens" not in columns or spans_column not in columns:
        raise SpanDataError(
            f"{name}: expected columns 'tokens' and {spans_column!r} ('ner_tags' with per-word tags, or "
            f"'spans'), found {columns}."
        )
    names = class_label_names(dataset.features[spans_column])
    if names is None and label_names is not None:
        names = list(label_names)
    rows = dataset.select_columns(["tokens", spans_column]).with_format(None)
    index = 0
    for batch in rows.iter(batch_size=1000):
        for tokens, annotation in zip(batch["tokens"], batch[spans_column]):
            if spans_column == "ner_tags":
                yield _tagged_row(checker, index, tokens, annotation, names)
            else:
                spans = [
                    dict(span, label=_label_name(checker, index, span.get("label"), names)) for span in annotation
                ]
                yield _tokens_record(checker, index, {"tokens": tokens, "spans": spans})
            index += 1
    checker.emit_warnings()


def class_label_names(feature: Any) -> list[str] | None:
    """The ``ClassLabel`` names of a tag column (a list of ``ClassLabel``) or of a span column (a list of span dicts
    whose ``label`` is a ``ClassLabel``); ``None`` without them."""
    inner = getattr(feature, "feature", None)
    if isinstance(inner, Mapping):
        inner = inner.get("label")
    return list(inner.names) if hasattr(inner, "names") else None


def _label_name(checker: _RecordChecker, index: int, label: Any, names: list[str] | None) -> Any:
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        return label
    label = int(label)
    if names is None:
        raise checker.error(
            index,
            None,
            f"label {label} is an integer but the column has no ClassLabel names; cast the column to "
            "ClassLabel or pass the label names.",
        )
    if not 0 <= label < len(names):
        raise checker.error(index, None, f"label id {label} is outside the {len(names)} ClassLabel names.")
    return names[label]


def _tagged_row(checker: _RecordChecker, index: int, tokens: Any, tags: Any, names: list[str] | None) -> SpanRecord:
    if not isinstance(tags, (list, tuple)):
        raise checker.error(index, None, "'ner_tags' must be a list with one tag per token.")
    tags = [_label_name(checker, index, tag, names) for tag in tags]
    if not isinstance(tokens, (list, tuple)) or len(tags) != len(tokens):
        count = len(tokens) if isinstance(tokens, (list, tuple)) else "?"
        raise checker.error(index, None, f"{len(tags)} tags for {count} tokens; give exactly one tag per token.")
    try:
        spans = tags_to_spans([str(tag) for tag in tags])
    except TagError as error:
        raise checker.error(index, None, f"ner_tags[{error.args[1]}]: {error.args[0]}") from None
    raw_spans = [_RawSpan(start, end, label, f"'{start};{end}' ({label})") for start, end, label in spans]
    words = _check_tokens(checker, index, tokens)
    return checker.finish(index, None, words, raw_spans)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------------------


def source_name(source: Any) -> str:
    """Name of a source in messages: the path for files, ``"in-memory data"`` or ``"dataset"``."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (list, tuple)):
        return IN_MEMORY_NAME
    return DATASET_NAME


def _is_dataset(source: Any) -> bool:
    return hasattr(source, "column_names") and hasattr(source, "features") and hasattr(source, "iter")


def _resolve_format(source: Any, data_format: str | None) -> str:
    if data_format is not None and data_format not in DATA_FORMATS:
        raise SpanDataError(
            f"parameter data_format: unknown value {data_format!r}; use None (auto) or one of "
            f"{', '.join(DATA_FORMATS)}."
        )
    if isinstance(source, (str, Path)):
        actual = "file"
    elif isinstance(source, (list, tuple)):
        actual = "memory"
    elif _is_dataset(source):
        actual = "dataset"
    elif hasattr(source, "keys") and hasattr(source, "values"):
        raise SpanDataError(
            "parameter source: got a dict (or DatasetDict); pass one split, e.g. source=dataset_dict['train'], or "
            "wrap a single record in a list."
        )
    else:
        raise SpanDataError(
            f"parameter source: got {type(source).__name__}; pass a file path, a list of records or a "
            "datasets.Dataset."
        )
    allowed = {"file": (None, "span_json", "conll"), "memory": (None, "memory"), "dataset": (None, "dataset")}
    if data_format not in allowed[actual]:
        raise SpanDataError(
            f"parameter data_format: {data_format!r} does not fit a source of type {type(source).__name__}; "
            f"use one of {', '.join(repr(value) for value in allowed[actual])}."
        )
    return data_format or actual


def iter_records(source: Any, data_format: str | None = None, name: str | None = None) -> Iterator[SpanRecord]:
    """Yield the validated records of any supported source.

    Args:
        source: A path (``str``/``Path``) to a span JSON or CoNLL file, a list of in-memory records, or a
            ``datasets.Dataset``.
        data_format: ``None`` (auto-detect), ``"span_json"``, ``"conll"``, ``"memory"`` or ``"dataset"``. For files
            auto-detection reads the first non-whitespace character: ``[`` means span JSON, anything else CoNLL.
        name: Name of the source in messages (default: :func:`source_name`).

    Returns:
        An iterator of :class:`SpanRecord` tuples in source order.

    Raises:
        SpanDataError: For any invalid input (file-level problems at once, record-level ones during iteration).
    """
    resolved = _resolve_format(source, data_format)
    name = name or source_name(source)
    if resolved == "memory":
        return read_memory(source, name=name)
    if resolved == "dataset":
        return read_dataset(source, name=name)
    text = _read_text(Path(source), name)
    if resolved == "file":  # a .json file is span JSON whatever it holds (malformed JSON is an error, not CoNLL)
        resolved = "span_json" if Path(source).suffix.lower() == ".json" else detect_file_format(text)
    return _span_json_records(text, name) if resolved == "span_json" else _conll_records(text, name)
