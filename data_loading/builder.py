"""A ``datasets`` builder for span-NER files, usable directly and offline.

Example:
    >>> builder = SpanNERBuilder(
    ...     cache_dir="cache",
    ...     data_files={"train": "en_train.json", "validation": "en_dev.json", "unlabeled": "de_unlabeled.json"},
    ...     labels=["O", "ORG", "PER", "LOC", "MISC"],
    ... )
    >>> builder.download_and_prepare()
    >>> splits = builder.as_dataset()  # DatasetDict; "unlabeled" has empty spans and a gold_spans column

The builder iterates the same record readers as :func:`~data_loading.load_spans`, so both give the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
from datasets.builder import Key

from .dataset import encode_record, normalize_labels, span_features
from .errors import SpanDataError
from .readers import DATA_FORMATS, iter_records

__all__ = ["SpanNERBuilder", "SpanNERConfig"]


@dataclass
class SpanNERConfig(datasets.BuilderConfig):
    """Configuration of :class:`SpanNERBuilder`; the fields are passed as keyword arguments to the builder.

    Attributes:
        labels: Label names, ``"O"`` first (prepended if missing). ``None`` infers ``["O"]`` + the sorted entity
            types found in all data files.
        data_format: ``None`` (auto-detect per file), ``"span_json"`` or ``"conll"``, for every file.
        drop_docstart: Drop the ``-DOCSTART-`` separator sentences.
        unlabeled_splits: Names of splits loaded as unlabeled target text: empty ``spans``, annotations in
            ``gold_spans``.
    """

    labels: Sequence[str] | None = None
    data_format: str | None = None
    drop_docstart: bool = True
    unlabeled_splits: Sequence[str] = ("unlabeled",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data_format not in (None, "span_json", "conll"):
            allowed = ", ".join(repr(value) for value in DATA_FORMATS[:2])
            raise SpanDataError(f"parameter data_format: got {self.data_format!r}; use None (auto) or {allowed}.")
        if isinstance(self.unlabeled_splits, str):
            self.unlabeled_splits = (self.unlabeled_splits,)
        self.unlabeled_splits = tuple(self.unlabeled_splits)
        if self.labels is not None:
            self.labels = normalize_labels(self.labels)


class SpanNERBuilder(datasets.GeneratorBasedBuilder):
    """Builds span-NER splits from span JSON or CoNLL files given as ``data_files``.

    Every split has the columns of :func:`~data_loading.span_features`. When an unlabeled split is present, the
    prepared data carries a ``gold_spans`` column; :meth:`as_dataset` and :meth:`as_streaming_dataset` remove it
    again from labeled splits, so labeled splits look like :func:`~data_loading.load_spans` output. Within a split
    made of several files, ``sentence_id`` restarts at 0 for each file.
    """

    BUILDER_CONFIG_CLASS = SpanNERConfig
    config: SpanNERConfig

    def _split_files(self) -> dict[str, list[str]]:
        if not self.config.data_files:
            raise SpanDataError('parameter data_files: SpanNERBuilder needs data_files, e.g. {"train": "train.json"}.')
        return {str(split): [str(path) for path in files] for split, files in self.config.data_files.items()}

    def _labels(self) -> list[str]:
        if self.config.labels is not None:
            return list(self.config.labels)
        found: set[str] = set()
        for files in self._split_files().values():
            for path in files:
                found.update(
                    label for record in iter_records(path, self.config.data_format) for _, _, label in record.spans
                )
        return ["O", *sorted(found)]

    def _has_unlabeled_split(self) -> bool:
        return any(split in self.config.unlabeled_splits for split in self._split_files())

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Span-level NER data (word spans with inclusive end indices).",
            features=span_features(self._labels(), with_gold_spans=self._has_unlabeled_split()),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        files = dl_manager.download(self._split_files())
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={"files": split_files, "unlabeled": split in self.config.unlabeled_splits},
            )
            for split, split_files in files.items()
        ]

    def _generate_examples(self, files: Sequence[str], unlabeled: bool) -> Iterator[tuple[Key, dict[str, Any]]]:
        label_to_id = {label: index for index, label in enumerate(self.info.features["spans"].feature["label"].names)}
        with_gold_column = "gold_spans" in self.info.features
        for file_index, path in enumerate(files):
            for record in iter_records(path, self.config.data_format):
                if self.config.drop_docstart and record.is_docstart:
                    continue
                example = encode_record(record, label_to_id, unlabeled=unlabeled)
                if with_gold_column and not unlabeled:
                    example["gold_spans"] = []
                yield Key(file_index, record.sentence_id), example

    def _labeled_split(self, split: Any) -> bool:
        names = [re.sub(r"\[.*\]$", "", part.strip()) for part in str(split).split("+")]
        return not any(name in self.config.unlabeled_splits for name in names)

    def _drop_gold_column(self, split: Any, dataset: Any) -> Any:
        if "gold_spans" in (dataset.column_names or []) and self._labeled_split(split):
            return dataset.remove_columns(["gold_spans"])  # a list: datasets 5.2 matches a str by substring
        return dataset

    def as_dataset(self, split: Any = None, **kwargs: Any) -> Any:
        """Like ``DatasetBuilder.as_dataset``; labeled splits come without the ``gold_spans`` column."""
        result = super().as_dataset(split=split, **kwargs)
        if isinstance(result, dict):
            return type(result)({name: self._drop_gold_column(name, ds) for name, ds in result.items()})
        return self._drop_gold_column(split, result)

    def as_streaming_dataset(self, split: Any = None, **kwargs: Any) -> Any:
        """Like ``DatasetBuilder.as_streaming_dataset``; labeled splits come without the ``gold_spans`` column."""
        result = super().as_streaming_dataset(split=split, **kwargs)
        if isinstance(result, dict):
            return type(result)({name: self._drop_gold_column(name, ds) for name, ds in result.items()})
        return self._drop_gold_column(split, result)
