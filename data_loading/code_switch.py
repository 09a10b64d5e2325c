"""Code-switched counterparts of source sentences, for MCL-NER's sentence- and relation-level contrast.

Two ways to get them, both returning ``{source sentence_id: {"tokens": [...], "spans": [...]}}`` where the i-th span
of a counterpart corresponds to the i-th gold span of its source sentence (same label):

- :func:`load_code_switched_file`: a span JSON file the user aligned or translated, each record with a
  ``source_id`` (the ``sentence_id`` of its source sentence, i.e. its 0-based record index in the source file)::

      [{"source_id": 0, "context": "EU lehnt German call", "span_posLabel": {"0;0": "ORG"}}, ...]

- :func:`code_switch_dataset`: word-by-word substitution from a bilingual word list
  (:func:`read_bilingual_dictionary`), e.g. MUSE's ``en-de.txt``.

Example:
    >>> dictionary = read_bilingual_dictionary("en-de.txt")
    >>> counterparts = code_switch_dataset(source_train, dictionary, rate=0.5, seed=42)
    >>> counterparts[0]["tokens"]
    ['EU', 'lehnt', 'German', 'Aufruf', ...]
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .dataset import load_spans
from .errors import SpanDataError

__all__ = ["code_switch_dataset", "code_switch_sentence", "load_code_switched_file", "read_bilingual_dictionary"]

BilingualDictionary = dict[str, list[str]]


def read_bilingual_dictionary(path: str | Path) -> BilingualDictionary:
    """Reads a bilingual word list: UTF-8 text, one pair per line, the source word, whitespace (tab or spaces), then
    its translation (one or more words). Blank lines and lines starting with ``#`` are skipped; a source word on
    several lines keeps every translation.

    Raises:
        SpanDataError: naming the file and line of a line without a translation, or an empty list.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        message = f"{path}: cannot read the bilingual dictionary ({error}); give a UTF-8 text file."
        raise SpanDataError(message) from None
    dictionary: BilingualDictionary = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise SpanDataError(
                f"{path} (line {number}): {line.strip()!r} has no translation; write 'source_word<TAB>translation'."
            )
        dictionary.setdefault(parts[0], []).append(parts[1].strip())
    if not dictionary:
        raise SpanDataError(f"{path}: the bilingual dictionary has no entries.")
    return dictionary


def code_switch_sentence(
    tokens: list[str], spans: list[dict[str, int]], dictionary: BilingualDictionary, rate: float, rng: random.Random
) -> tuple[list[str], list[dict[str, int]]]:
    """Replaces each word found in `dictionary` (exactly, else lower-cased) by a random translation with
    probability `rate`, and moves the spans onto the new words (a translation may have several words).

    Returns:
        `(tokens, spans)` of the code-switched sentence; spans keep their order and labels.
    """
    new_tokens: list[str] = []
    first_word, last_word = [], []
    for word in tokens:
        translations = dictionary.get(word) or dictionary.get(word.lower())
        replacement = rng.choice(translations).split() if translations and rng.random() < rate else [word]
        first_word.append(len(new_tokens))
        new_tokens.extend(replacement)
        last_word.append(len(new_tokens) - 1)
    new_spans = [
        {"start": first_word[span["start"]], "end": last_word[span["end"]], "label": span["label"]} for span in spans
    ]
    return new_tokens, new_spans


def code_switch_dataset(source_dataset, dictionary: BilingualDictionary, rate: float = 0.5, seed: int = 0):
    """Code-switched counterpart of every sentence of a labelled source dataset (see `code_switch_sentence`).

    Returns:
        `{sentence_id: {"tokens", "spans"}}`.
    """
    if not 0 < rate <= 1:
        raise SpanDataError(f"parameter code_switch_rate: got {rate!r}; use a probability in (0, 1].")
    rng = random.Random(seed)
    counterparts = {}
    for row in source_dataset:
        tokens, spans = code_switch_sentence(row["tokens"], row["spans"], dictionary, rate, rng)
        counterparts[row["sentence_id"]] = {"tokens": tokens, "spans": spans}
    return counterparts


def load_code_switched_file(path: str | Path, labels: list[str], source_dataset) -> dict[int, dict[str, Any]]:
    """Reads user-given counterparts (span JSON with a `source_id` per record) and checks them against the source.

    Raises:
        SpanDataError: naming the file and record when `source_id` is missing, negative or given twice, or when the
            record's spans do not match its source sentence's gold spans one to one (same labels, same order).
            Records whose source sentence is not in `source_dataset` are skipped; none matching is an error.
    """
    records = load_spans(str(path), labels=labels, drop_docstart=False)
    raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    source_spans = {
        row["sentence_id"]: row["spans"] for row in source_dataset.select_columns(["sentence_id", "spans"])
    }
    counterparts: dict[int, dict[str, Any]] = {}
    for index, (element, row) in enumerate(zip(raw, records)):
        where = f"{path}, record {index}"
        source_id = element.get("source_id")
        if isinstance(source_id, bool) or not isinstance(source_id, int):
            raise SpanDataError(
                f"{where}: 'source_id' is {source_id!r}; give the index of the source sentence it translates."
            )
        if source_id < 0:
            raise SpanDataError(f"{where}: source_id {source_id} is negative; give a 0-based source record index.")
        if source_id not in source_spans:
            continue  # a sentence left out of this run (e.g. by --max_train_samples)
        if source_id in counterparts:
            raise SpanDataError(f"{where}: source_id {source_id} appears twice; keep one counterpart per sentence.")
        expected = [span["label"] for span in source_spans[source_id]]
        if [span["label"] for span in row["spans"]] != expected:
            names = [labels[label] for label in expected]
            raise SpanDataError(
                f"{where}: its spans {[labels[span['label']] for span in row['spans']]} do not match the source "
                f"sentence's gold spans {names}; a counterpart needs the same entities in the same order."
            )
        counterparts[source_id] = {"tokens": row["tokens"], "spans": row["spans"]}
    if not counterparts:
        raise SpanDataError(f"{path}: no record's source_id names a sentence of the source training data.")
    return counterparts
