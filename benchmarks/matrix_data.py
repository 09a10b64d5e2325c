"""Data of the benchmark matrix: the datasets (source and target files, labels, span width), reading WikiANN and
CoNLL span JSON, the WikiANN zh space-marker repair, the seeded sample of each role and the prepared span JSON
folder of one (dataset, seed) that `benchmarks/matrix.py` feeds to `run_xner.py`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_loading import write_span_json
from data_loading.dataset import _write_atomically
from data_loading.readers import DOCSTART, iter_records
from data_loading.tag_schemes import tags_to_spans

# ---------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------

ROLES = ("source_train", "source_dev", "target_unlabeled", "target_test")
"""The four data files of a cell, in the order of `run_xner.py`'s flags."""


@dataclass(frozen=True)
class DatasetSpec:
    """One source -> target language pair.

    Attributes:
        files: Path of each role's file, relative to the data root.
        file_format: `span_json` (the project's format) or `wikiann` (`token<TAB>tag` lines, IOB2).
        labels: The label list, `O` first.
        target_language: ISO code of the target language (the source is English).
        max_span_width: Longest span in words.
        space_marker: Token that stands for a space (WikiANN zh's `#`); inside a name it takes the name's tag.
    """

    files: Mapping[str, str]
    file_format: str
    labels: tuple[str, ...]
    target_language: str
    max_span_width: int = 4
    space_marker: str | None = None


def wikiann(language: str, max_span_width: int = 4, space_marker: str | None = None) -> DatasetSpec:
    """WikiANN English -> `language`: English train/dev, the target's train as unlabelled text, its full test."""
    files = {
        "source_train": "wikiann/en/train.txt",
        "source_dev": "wikiann/en/dev.txt",
        "target_unlabeled": f"wikiann/{language}/train.txt",
        "target_test": f"wikiann/{language}/test.txt",
    }
    return DatasetSpec(files, "wikiann", ("O", "LOC", "ORG", "PER"), language, max_span_width, space_marker)


DATASETS: dict[str, DatasetSpec] = {
    "conll_de": DatasetSpec(
        {role: f"conll03_en_de/spanner.{suffix}" for role, suffix in zip(ROLES, ("train", "dev", "unlabel", "test"))},
        "span_json",
        ("O", "LOC", "MISC", "ORG", "PER"),
        "de",
    ),
    "wikiann_de": wikiann("de"),
    "wikiann_ar": wikiann("ar"),
    "wikiann_hi": wikiann("hi"),
    # Characters are the words of WikiANN zh: ~2 characters per word x 4 words (a priori, not tuned).
    "wikiann_zh": wikiann("zh", max_span_width=8, space_marker="#"),
}

# ---------------------------------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------------------------------

Sentence = dict[str, Any]
"""`{"tokens": [...], "spans": [{"start", "end", "label"}, ...]}` (end inclusive), the in-memory record shape."""

DATA_VERSION = 2
"""Bump when the preparation changes, so that prepared folders are written again (2: samples in file order keep the
file's `-DOCSTART-` separators; random samples are written as before)."""


def read_token_tag_sentences(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """Words and tags of a `token<TAB>tag` file; blank lines end sentences (word = first column, tag = last)."""
    tokens: list[str] = []
    tags: list[str] = []
    for line in path.read_text(encoding="utf-8-sig").split("\n"):
        columns = line.split()
        if columns:
            tokens.append(columns[0])
            tags.append(columns[-1])
        elif tokens:
            yield tokens, tags
            tokens, tags = [], []
    if tokens:
        yield tokens, tags


def join_names_across_space_markers(tokens: Sequence[str], tags: Sequence[str], marker: str) -> list[str]:
    """Tags where each `O`-tagged `marker` token between two words of one name takes the name's `I-` tag.

    Args:
        tokens: The words of a sentence.
        tags: Their IOB2 tags.
        marker: The token that stands for a space (WikiANN zh: `#`).

    Returns:
        The repaired tags: `B-PER # I-PER` (`B-PER O I-PER`) becomes `B-PER I-PER I-PER`, one entity instead of two.
    """
    repaired = list(tags)
    for position in range(1, len(tokens) - 1):
        previous, following = repaired[position - 1], tags[position + 1]
        if tokens[position] == marker and tags[position] == "O" and previous != "O" and following.startswith("I-"):
            entity_type = following[2:]
            if previous[2:] == entity_type:
                repaired[position] = f"I-{entity_type}"
    return repaired


def span_sentence(tokens: list[str], spans: Iterable[tuple[int, int, str]]) -> Sentence:
    """The in-memory record of words and `(start, end, label)` spans (end inclusive)."""
    return {"tokens": tokens, "spans": [{"start": start, "end": end, "label": label} for start, end, label in spans]}


def is_separator(sentence: Sentence) -> bool:
    """Whether a record is a `-DOCSTART-` document separator (one word `-DOCSTART-`), not a sentence."""
    return sentence["tokens"] == [DOCSTART]


def read_records(path: Path, spec: DatasetSpec) -> list[Sentence]:
    """Every record of one data file in file order, `-DOCSTART-` separators included (see `is_separator`).

    Args:
        path: A span JSON file or a WikiANN `token<TAB>tag` file.
        spec: The dataset (format and space marker).
    """
    if spec.file_format == "span_json":
        return [span_sentence(record.tokens, record.spans) for record in iter_records(path)]
    records = []
    for tokens, tags in read_token_tag_sentences(path):
        if tokens == [DOCSTART]:
            records.append(span_sentence(tokens, []))
            continue
        if spec.space_marker is not None:
            tags = join_names_across_space_markers(tokens, tags, spec.space_marker)
        records.append(span_sentence(tokens, tags_to_spans(tags)))
    return records


def sample_indices(available: int, size: int | None, seed: int, role: str, random_sample: bool = True) -> list[int]:
    """Indices of the sentences a cell uses, in file order.

    Args:
        available: Number of sentences in the file.
        size: How many to keep (`None` or more than available: all).
        seed: The cell's seed.
        role: The file's role; each role draws from its own stream, `random.Random("<seed>/<role>")` (string seeds
            are hashed with SHA-512, so the stream is the same in every process).
        random_sample: Draw at random; otherwise take the first `size` sentences.
    """
    if size is None or size >= available:
        return list(range(available))
    if not random_sample:
        return list(range(size))
    return sorted(random.Random(f"{seed}/{role}").sample(range(available), size))


def sample_records(
    records: Sequence[Sentence], size: int | None, seed: int, role: str, random_sample: bool = True
) -> tuple[list[Sentence], int]:
    """The records of a role's sample file and the number of sentences among them.

    Sentences are counted without the `-DOCSTART-` separators. A random sample holds its sentences only (a cell's
    `sentence_id`s then count them from 0). A sample in file order holds the file's records up to its last sentence,
    separators included: `load_spans` drops them again and numbers the sentences by their record in the file, so
    `run_xner.py` sees the same sentences under the same `sentence_id`s as with `--max_*_samples` on the file itself.

    Args:
        records: Every record of the file (`read_records`).
        size, seed, role, random_sample: As in `sample_indices`.
    """
    positions = [index for index, record in enumerate(records) if not is_separator(record)]
    chosen = sample_indices(len(positions), size, seed, role, random_sample)
    if random_sample:
        return [records[positions[index]] for index in chosen], len(chosen)
    return list(records[: positions[chosen[-1]] + 1] if chosen else []), len(chosen)


def data_manifest(
    dataset: str, data_root: Path, seed: int, sample_sizes: Mapping[str, int | None], random_sample: bool
) -> dict:
    """What a prepared data folder holds; a folder whose manifest differs is prepared again."""
    spec = DATASETS[dataset]
    sizes = {role: sample_sizes.get(role) for role in ROLES}
    return {
        "version": DATA_VERSION,
        "dataset": dataset,
        "seed": seed,
        "sources": {role: str(data_root / spec.files[role]) for role in ROLES},
        "sample_sizes": sizes,
        "random_sample": random_sample,
        "space_marker": spec.space_marker,
    }


def prepare_data(
    dataset: str,
    data_root: Path,
    data_dir: Path,
    seed: int,
    sample_sizes: Mapping[str, int | None],
    random_sample: bool = True,
) -> tuple[dict[str, Path], dict[str, int]]:
    """Writes the sample of one (dataset, seed) as span JSON files (atomically), unless already there.

    Args:
        dataset: Name in `DATASETS`.
        data_root: Folder with `conll03_en_de/` and `wikiann/`.
        data_dir: Folder of the sample (`.../<dataset>/data_seed<k>`).
        seed: The cell's seed.
        sample_sizes: Sentences per role; a role that is missing or `None` keeps the whole file.
        random_sample: Draw each role's sentences at random (seeded by `seed`); otherwise take the first ones.

    Returns:
        The file of each role and its number of sentences.
    """
    spec = DATASETS[dataset]
    files = {role: data_dir / f"{role}.json" for role in ROLES}
    manifest = data_manifest(dataset, data_root, seed, sample_sizes, random_sample)
    manifest_file = data_dir / "manifest.json"
    if manifest_file.is_file() and all(path.is_file() for path in files.values()):
        written = json.loads(manifest_file.read_text(encoding="utf-8"))
        if {key: written.get(key) for key in manifest} == manifest:
            return files, written["sentences"]
    counts = {}
    for role in ROLES:
        records = read_records(data_root / spec.files[role], spec)
        sample, counts[role] = sample_records(records, manifest["sample_sizes"][role], seed, role, random_sample)
        write_span_json(sample, files[role], spec.labels, overwrite=True)
    write_json_atomically(manifest_file, {**manifest, "sentences": counts})
    return files, counts


def write_json_atomically(path: Path, record: Any) -> None:
    """Writes `record` as indented JSON to a temporary file next to `path` and renames it into place."""
    _write_atomically(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n", overwrite=True)
