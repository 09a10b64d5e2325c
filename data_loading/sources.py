"""Where the datasets of a run come from: data files, or the splits of a named dataset (a Hub dataset id or a local
folder that ``datasets`` loads), one per language role.

A run has up to five datasets: ``source_train``, ``source_dev``, ``target_unlabeled``, ``target_dev`` and
``target_test``. Each has a file flag (``--source_train_file``, ...); a named dataset feeds several of them by split:

    ========================================  =============  =================  =============
    named dataset                             ``train``      ``validation``     ``test``
    ========================================  =============  =================  =============
    ``--dataset_name`` (source language)      source_train   source_dev         not used
    ``--target_dataset_name`` (target)        target text    target_dev         target_test
    ========================================  =============  =================  =============

The target ``train`` split is used as unlabelled text: its tags are dropped (only its words are read). A file flag
replaces the split that would feed the same dataset. Words come from the column ``tokens`` (or ``words``), tags from
``ner_tags`` (or ``tags``; per-word tags of any scheme, as ``ClassLabel`` ids or strings) or ``spans`` (this package's
own layout), unless named. Everything is checked before any row is read, and errors name the flag, the dataset, the
split and the column:

    >>> sources = data_sources({"dataset_name": "wikiann", "dataset_config_name": "en",
    ...                         "target_dataset_config_name": "de"})  # doctest: +SKIP
    >>> labels = source_labels(sources["source_train"])  # doctest: +SKIP
    >>> target_test = load_source(sources["target_test"], labels)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import infer_labels, load_spans
from .readers import class_label_names
from .tag_schemes import TagError, parse_tag

__all__ = [
    "DATASET_SPLITS",
    "DATA_FILE_FLAGS",
    "FILE_FLAG_ALIASES",
    "DatasetSplit",
    "NamedDataset",
    "data_sources",
    "file_flags",
    "hub_split_references",
    "load_source",
    "datasets_named",
    "source_labels",
]

logger = logging.getLogger(__name__)

DATA_FILE_FLAGS = {
    "source_train": "source_train_file",
    "source_dev": "source_validation_file",
    "target_unlabeled": "target_unlabeled_file",
    "target_dev": "target_validation_file",
    "target_test": "target_test_file",
}
"""The datasets of a run, in order, and the flag of each one's file."""
FILE_FLAG_ALIASES = {
    "train_file": "source_train_file",
    "validation_file": "source_validation_file",
    "test_file": "target_test_file",
}
"""`run_ner.py`'s file flags and the flags they stand for."""
DATASET_SPLITS = {
    "source": {"train": "source_train", "validation": "source_dev"},
    "target": {"train": "target_unlabeled", "validation": "target_dev", "test": "target_test"},
}
"""`{language role: {split: dataset of the run}}`: which split of a named dataset feeds which dataset."""
UNLABELED_DATASETS = frozenset({"target_unlabeled"})
"""Datasets read as text whose annotations are never trained on."""
TEXT_COLUMNS = ("tokens", "words")
LABEL_COLUMNS = ("ner_tags", "tags", "spans")
SAVED_DATASET_DICT = "dataset_dict.json"
"""The file that marks a folder written by `DatasetDict.save_to_disk`."""


def file_flags(settings: Mapping[str, Any]) -> dict[str, str]:
    """`{file flag: path}` of a run's settings, with `--train_file`, `--validation_file` and `--test_file` standing
    for `--source_train_file`, `--source_validation_file` and `--target_test_file`.

    Raises:
        ValueError: naming both flags when an alias and its flag name different files.
    """
    files = {flag: settings[flag] for flag in DATA_FILE_FLAGS.values() if settings.get(flag)}
    for alias, flag in FILE_FLAG_ALIASES.items():
        value = settings.get(alias)
        if not value:
            continue
        if files.get(flag, value) != value:
            raise ValueError(
                f"--{alias} {value} and --{flag} {files[flag]} name different files for the same data "
                f"(--{alias} stands for --{flag}): pass one of them."
            )
        files[flag] = value
    return files


@dataclass(frozen=True)
class NamedDataset:
    """A dataset named on the command line for one language role.

    Attributes:
        role: `"source"` (`--dataset_name`) or `"target"` (`--target_dataset_name`).
        path: a Hub dataset id, a local folder of data files (`load_dataset`'s json or parquet builders) or a
            folder written by `DatasetDict.save_to_disk`.
        config: the dataset's configuration (`--dataset_config_name`, `--target_dataset_config_name`).
    """

    role: str
    path: str
    config: str | None = None

    @property
    def flag(self) -> str:
        return "--dataset_name" if self.role == "source" else "--target_dataset_name"

    @property
    def config_flag(self) -> str:
        return "--dataset_config_name" if self.role == "source" else "--target_dataset_config_name"

    @property
    def is_local(self) -> bool:
        """Whether `path` is on this machine (else it is a Hub dataset id)."""
        return Path(self.path).exists()

    def describe(self, split: str | None = None) -> str:
        """`--dataset_name wikiann --dataset_config_name en, split 'train'`, for messages."""
        text = f"{self.flag} {self.path}" + (f" {self.config_flag} {self.config}" if self.config else "")
        return f"{text}, split {split!r}" if split else text


def datasets_named(settings: Mapping[str, Any]) -> list[NamedDataset]:
    """The datasets a run's settings name, source first. `--target_dataset_config_name` without
    `--target_dataset_name` names a configuration of `--dataset_name` (e.g. `wikiann` `en` -> `de`).

    Raises:
        ValueError: for a configuration without a dataset to take it from.
    """
    source, source_config = settings.get("dataset_name"), settings.get("dataset_config_name")
    target_config = settings.get("target_dataset_config_name")
    target = settings.get("target_dataset_name") or (source if target_config else None)
    if source_config and not source:
        raise ValueError(f"--dataset_config_name {source_config} needs --dataset_name (the dataset it configures).")
    if target_config and not target:
        raise ValueError(
            f"--target_dataset_config_name {target_config} needs --target_dataset_name (or --dataset_name, whose "
            "configuration it then names)."
        )
    named = [NamedDataset("source", source, source_config)] if source else []
    return named + ([NamedDataset("target", target, target_config)] if target else [])


def hub_split_references(settings: Mapping[str, Any]) -> dict[str, list[str | None]]:
    """`{dataset of the run: [Hub dataset id, configuration, split]}` for the datasets that may come from a Hub dataset
    (not a local folder) and have no file flag, for the model card."""
    files = file_flags(settings)
    return {
        name: [named.path, named.config, split]
        for named in datasets_named(settings)
        if not named.is_local
        for split, name in DATASET_SPLITS[named.role].items()
        if DATA_FILE_FLAGS[name] not in files
    }


def open_named_dataset(named: NamedDataset) -> Any:
    """All splits of a named dataset (`datasets.load_dataset`, or `load_from_disk` for a saved `DatasetDict`).

    Raises:
        ValueError: naming the flags when the dataset cannot be loaded or is not a dictionary of splits.
    """
    import datasets

    path = Path(named.path)
    if path.is_file():
        raise ValueError(
            f"{named.describe()}: is a file. Pass the folder that holds the data (one file per split, named train, "
            "validation and test: .json, .jsonl or .parquet) or a Hub dataset id; span JSON and CoNLL files go to "
            "the file flags (--source_train_file, ...)."
        )
    saved = (path / SAVED_DATASET_DICT).is_file()
    if saved and named.config:
        raise ValueError(
            f"{named.describe()}: a folder saved by `save_to_disk` has no configurations; leave "
            f"{named.config_flag} out."
        )
    try:
        loaded = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(named.path, named.config)
    except Exception as error:  # noqa: BLE001 - datasets and the Hub client raise many types
        raise ValueError(
            f"{named.describe()}: cannot be loaded ({type(error).__name__}: {error}). Check the dataset id and "
            f"{named.config_flag}; offline, only local folders and datasets in the cache load."
        ) from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"{named.describe()}: holds a single dataset, not named splits (train, validation, test).")
    return loaded


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a named dataset, checked and ready for `load_source`.

    Attributes:
        data: the split with its word column as `tokens` and its tags as `ner_tags` (or spans as `spans`); only
            `tokens` for unlabelled text.
        where: the flags, dataset and split, for messages.
        label_column: the split's own name of the tag or span column (None for unlabelled text).
    """

    data: Any
    where: str
    label_column: str | None = None

    def entity_types(self, used_in: Any = None) -> list[str] | None:
        """The entity types of its `ClassLabel` names (None without them): all it declares, or only those that rows
        of `used_in` (the split or a selection of it) use.
        """
        if self.label_column is None:
            return None
        column = "spans" if "spans" in self.data.column_names else "ner_tags"
        names = class_label_names(self.data.features[column])
        if names is None:
            return None
        if used_in is not None:
            names = [names[index] for index in class_label_ids(used_in, column) if 0 <= index < len(names)]
        types = (parse_tag(name)[1] for name in names) if column == "ner_tags" else names
        return sorted({name for name in types if name and name != "O"})


def class_label_ids(dataset: Any, column: str) -> list[int]:
    """The distinct `ClassLabel` ids of a tag column (or of the `label` of a span column), read from Arrow."""
    import pyarrow.compute as pc

    values = pc.list_flatten(dataset.with_format("arrow")[column])
    values = pc.struct_field(values, "label") if column == "spans" else values
    return [value for value in pc.unique(values).to_pylist() if value is not None]


def find_column(dataset: Any, given: str | None, candidates: Sequence[str], flag: str, where: str) -> str:
    """The column `given` by `flag`, else the first of `candidates` the split has.

    Raises:
        ValueError: naming the flag, the dataset and split, and the split's columns.
    """
    columns = dataset.column_names
    if given is not None and given not in columns:
        raise ValueError(f"{where}: no column {given!r} ({flag} {given}); its columns are {', '.join(columns)}.")
    found = given or next((name for name in candidates if name in columns), None)
    if found is None:
        raise ValueError(
            f"{where}: no column {' or '.join(map(repr, candidates))}; its columns are {', '.join(columns)}: name "
            f"the one to read with {flag}."
        )
    return found


def bio_tag_names(labels: Sequence[str]) -> list[str]:
    """IOB2 tag names in the order of `labels`: `O, B-<first type>, I-<first type>, B-<second type>, ...`."""
    return ["O", *(f"{prefix}-{label}" for label in labels[1:] for prefix in "BI")]


def tagged_split(dataset: Any, tag_column: str, labels: Sequence[str] | None, where: str) -> Any:
    """`dataset` (columns `tokens` and `tag_column`) with the tags as `ner_tags`, checked: `ClassLabel` names must be
    tags; integer tags without them are named by `--labels` (`bio_tag_names`).

    Raises:
        ValueError: naming the dataset, split and column for a name that is not a tag, or for integer tags without
            `ClassLabel` names when `--labels` is not given.
    """
    from datasets import ClassLabel, List

    feature = dataset.features[tag_column]
    names = class_label_names(feature)
    for name in names or ():
        try:
            parse_tag(name)
        except TagError as error:
            raise ValueError(f"{where}: column {tag_column!r} has the ClassLabel name {name!r}: {error}") from None
    dataset = dataset.rename_column(tag_column, "ner_tags") if tag_column != "ner_tags" else dataset
    if names is not None or not str(getattr(feature.feature, "dtype", "")).startswith(("int", "uint")):
        return dataset
    if labels is None:
        example = ", ".join(f"{index} = {tag}" for index, tag in enumerate(bio_tag_names(["O", "PER", "LOC"])))
        raise ValueError(
            f"{where}: column {tag_column!r} holds integer tags without ClassLabel names: pass --labels in the order "
            f"of the tag ids (with --labels O,PER,LOC: {example}), or cast the column to ClassLabel."
        )
    return dataset.cast_column("ner_tags", List(ClassLabel(names=bio_tag_names(labels))))


def dataset_split(
    named: NamedDataset,
    split: str,
    dataset: Any,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
) -> DatasetSplit:
    """One split of `named`, its columns found and checked (`find_column`, `tagged_split`); the tags of the
    dataset that `UNLABELED_DATASETS` names are dropped.

    Args:
        named: the dataset.
        split: the split's name.
        dataset: the split.
        text_column: `--text_column_name` (default: `tokens` or `words`).
        label_column: `--label_column_name` (default: `ner_tags`, `tags` or `spans`).
        labels: `--labels`, to name integer tags without `ClassLabel` names.
    """
    where = named.describe(split)
    text = find_column(dataset, text_column, TEXT_COLUMNS, "--text_column_name", where)
    if DATASET_SPLITS[named.role][split] in UNLABELED_DATASETS:
        words = dataset.select_columns([text])
        return DatasetSplit(words.rename_column(text, "tokens") if text != "tokens" else words, where)
    tags = find_column(dataset, label_column, LABEL_COLUMNS, "--label_column_name", where)
    if tags == text:
        raise ValueError(f"{where}: the words and the tags are both read from column {text!r}; name them apart.")
    if not hasattr(dataset.features[tags], "feature"):
        raise ValueError(
            f"{where}: column {tags!r} holds {dataset.features[tags]}, not a list of tags (one per word) or of spans: "
            "name the tag column with --label_column_name."
        )
    dataset = dataset.select_columns([text, tags])
    dataset = dataset.rename_column(text, "tokens") if text != "tokens" else dataset
    if isinstance(dataset.features[tags].feature, Mapping):  # spans in this package's layout
        return DatasetSplit(dataset.rename_column(tags, "spans") if tags != "spans" else dataset, where, tags)
    return DatasetSplit(tagged_split(dataset, tags, labels, where), where, tags)


def named_dataset_splits(
    named: NamedDataset,
    splits: Mapping[str, Any],
    *,
    required: Mapping[str, str] | None = None,
    **columns: Any,
) -> dict[str, DatasetSplit]:
    """The datasets of the run that the splits of `named` feed (`DATASET_SPLITS`), checked.

    Args:
        named: the dataset.
        splits: its splits (a `DatasetDict`).
        required: `{dataset of the run: why it is needed}`; its split must exist.
        **columns: `text_column`, `label_column` and `labels` of `dataset_split`.

    Raises:
        ValueError: naming the flags and the split for a required split that is missing, and naming the splits when
            none of them feeds the run.
    """
    mapping = DATASET_SPLITS[named.role]
    for split, name in mapping.items():
        if split not in splits and name in (required or {}):
            raise ValueError(
                f"{required[name]} needs {name.replace('_', ' ')} data: {named.describe()} has no split {split!r} "
                f"(its splits: {', '.join(splits)}). Pass --{DATA_FILE_FLAGS[name]}, or a dataset with that split."
            )
    found = {
        mapping[split]: dataset_split(named, split, dataset, **columns)
        for split, dataset in splits.items()
        if split in mapping
    }
    if not found:
        raise ValueError(
            f"{named.describe()} has none of the splits {', '.join(mapping)} (its splits: {', '.join(splits)})."
        )
    unused = [split for split in splits if split not in mapping]
    if unused:
        fed = ", ".join(f"{split} -> {name}" for split, name in mapping.items())
        logger.info("%s: split(s) %s not used (a %s dataset feeds %s).", named.describe(), ", ".join(unused),
                    named.role, fed)  # fmt: skip
    return found


def data_sources(
    settings: Mapping[str, Any],
    *,
    labels: Sequence[str] | None = None,
    required: Mapping[str, str] | None = None,
) -> dict[str, str | DatasetSplit]:
    """Where each dataset of a run comes from, in run order: its file flag (`file_flags`), else a split of the
    dataset that `--dataset_name` / `--target_dataset_name` name (`named_dataset_splits`).

    Args:
        settings: the run's settings (the fields of `run_xner.DataArguments`, or a run config).
        labels: the run's `--labels` (`O` first), to name integer tags without `ClassLabel` names.
        required: `{dataset of the run: why it is needed}`, checked where a named dataset should give it.

    Returns:
        `{dataset of the run: file path or DatasetSplit}`.

    Raises:
        ValueError: naming the flags, for the checks of `file_flags`, `datasets_named`, `open_named_dataset` and
            `named_dataset_splits`.
    """
    given = file_flags(settings)
    files = {name: given[flag] for name, flag in DATA_FILE_FLAGS.items() if flag in given}
    required = {name: reason for name, reason in (required or {}).items() if name not in files}
    columns = {"text_column": settings.get("text_column_name"), "label_column": settings.get("label_column_name")}
    splits: dict[str, DatasetSplit] = {}
    for named in datasets_named(settings):
        dataset_dict = open_named_dataset(named)
        splits.update(named_dataset_splits(named, dataset_dict, required=required, labels=labels, **columns))
    for name in files.keys() & splits.keys():
        logger.info("--%s replaces %s.", DATA_FILE_FLAGS[name], splits[name].where)
    return {name: files.get(name) or splits[name] for name in DATA_FILE_FLAGS if name in files or name in splits}


def source_labels(source: str | DatasetSplit) -> list[str]:
    """The label list a run infers from its source training data: `O`, then the entity types in alphabetical order,
    those the `ClassLabel` names of a dataset split declare, else those found in the data."""
    if isinstance(source, DatasetSplit):
        declared = source.entity_types()
        return ["O", *declared] if declared is not None else infer_labels(source.data, name=source.where)
    return infer_labels(source)


def load_source(
    source: str | DatasetSplit, labels: Sequence[str], *, unlabeled: bool = False, max_samples: int | None = None
) -> Any:
    """A dataset of the run (`load_spans`) from its file or dataset split; unlabelled target text keeps the gold
    spans of a file as diagnostics (`gold_spans`), a dataset split has none (its tags were dropped).

    Raises:
        ValueError: for a split whose `ClassLabel` names declare an entity type outside `labels` (naming the
            flags, split and column), and the errors of `load_spans`.
    """
    if not isinstance(source, DatasetSplit):
        return load_spans(source, labels=labels, unlabeled=unlabeled, max_samples=max_samples)
    data = source.data if max_samples is None else source.data.select(range(min(max_samples, len(source.data))))
    if source.label_column is None:
        records = [{"tokens": tokens, "spans": []} for tokens in data["tokens"]]
        return load_spans(records, labels=labels, unlabeled=True, name=source.where)
    unknown = sorted(set(source.entity_types(used_in=data) or ()) - set(labels))
    if unknown:
        raise ValueError(
            f"{source.where}: column {source.label_column!r} has entities of type(s) {', '.join(unknown)} (ClassLabel "
            f"names) outside the run's labels {','.join(labels)}: pass --labels with them."
        )
    return load_spans(data, labels=labels, unlabeled=unlabeled, max_samples=max_samples, name=source.where)
