"""Span-NER data loading for maral-xner.

Reads span JSON files (``[{"context": "words joined by spaces", "span_posLabel": {"start;end": "TYPE"}}]`` with
0-based inclusive word indices), CoNLL/BIO column files (IOB1, IOB2, BIOES, BILOU; auto-detected), in-memory
records and ``datasets.Dataset`` objects with ``tokens`` + ``ner_tags`` into one ``datasets.Dataset`` layout::

    sentence_id: int64                     # index of the sentence in its source (before any dropping)
    tokens:      list of string
    spans:       list of {start: int32, end: int32, label: ClassLabel(names=labels)}   # end inclusive, sorted

Example:
    >>> from data_loading import count_span_labels, load_spans, write_span_json
    >>> labels = ["O", "PER", "ORG", "LOC"]  # the WikiANN sample in examples/data/
    >>> train = load_spans("examples/data/en_train.json", labels=labels)
    >>> target = load_spans("examples/data/de_unlabeled.json", labels=labels, unlabeled=True)  # gold -> gold_spans
    >>> conll = load_spans("train.txt", data_format="conll", max_samples=100)  # labels inferred: O + sorted types
    >>> counts = count_span_labels(train, max_span_width=4)  # [n_O, n_PER, n_ORG, n_LOC]
    >>> write_span_json(train, "out/train.json")  # atomic; refuses to overwrite without overwrite=True

Datasets that ``datasets`` loads (a Hub id or a local folder with ``tokens`` and ``ner_tags``) feed a run by split,
see :mod:`data_loading.sources` (``data_sources``, ``source_labels``, ``load_source``).

``-DOCSTART-`` separator sentences are dropped by default (``drop_docstart=False`` keeps them, e.g. to match the
reference statistics). Invalid input raises :class:`SpanDataError` (a ``ValueError``) whose message names the
file (or ``"in-memory data"`` / ``"dataset"`` / the parameter), the record and the line where known.
"""

from .builder import SpanNERBuilder, SpanNERConfig
from .code_switch import (
    code_switch_dataset,
    code_switch_sentence,
    load_code_switched_file,
    read_bilingual_dictionary,
)
from .dataset import infer_labels, load_spans, normalize_labels, span_features, write_span_json
from .errors import SpanDataError, SpanDataWarning
from .readers import SpanRecord, iter_records
from .sources import DatasetSplit, NamedDataset, data_sources, load_source, source_labels
from .statistics import count_span_labels, num_enumerated_spans
from .tag_schemes import detect_tag_scheme, tags_to_spans

__all__ = [
    "DatasetSplit",
    "NamedDataset",
    "SpanDataError",
    "SpanDataWarning",
    "SpanNERBuilder",
    "SpanNERConfig",
    "SpanRecord",
    "code_switch_dataset",
    "code_switch_sentence",
    "count_span_labels",
    "data_sources",
    "detect_tag_scheme",
    "infer_labels",
    "iter_records",
    "load_code_switched_file",
    "load_source",
    "load_spans",
    "normalize_labels",
    "num_enumerated_spans",
    "read_bilingual_dictionary",
    "source_labels",
    "span_features",
    "tags_to_spans",
    "write_span_json",
]
