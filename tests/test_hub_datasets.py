"""Datasets that `datasets` loads as the data of a run (`data_loading.sources`): local folders here, offline (the
Hub is covered by `tests/test_hub.py`). Split mapping, column detection, label names, aliases of the file flags, and
the errors that name the flag, the dataset, the split and the column."""

from __future__ import annotations

import dataclasses
import json

import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

import run_xner
from data_loading.sources import (
    NamedDataset,
    data_sources,
    datasets_named,
    file_flags,
    hub_split_references,
    load_source,
    source_labels,
)
from self_training_maral import dataset_fingerprint
from tests.test_cli import COMMON_FLAGS, SOURCE_TRAIN, write_json

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
ROWS = [
    (["Peter", "Blackburn", "visited", "Brussels", "."], [1, 2, 0, 5, 0]),
    (["EU", "rejects", "it", "."], [3, 0, 0, 0]),
    (["Angela", "Merkel", "besuchte", "Paris", "."], [1, 2, 0, 5, 0]),
    (["Reuters", "sagte", "nein", "."], [3, 0, 0, 0]),
]
TAG_ORDER = ["O", "PER", "ORG", "LOC"]  # --labels that name the integer ids of TAGS
TAGGED = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=TAGS)), "id": Value("string")})


def tagged_split(rows=ROWS, features=TAGGED, text="tokens", tags="ner_tags") -> Dataset:
    columns = {
        text: [words for words, _ in rows],
        tags: [ids for _, ids in rows],
        "id": list(map(str, range(len(rows)))),
    }
    return Dataset.from_dict(columns, features=features)


def write_folder(folder, splits: dict[str, Dataset]) -> str:
    """A local dataset folder of parquet files, one per split, as `load_dataset(folder)` reads it."""
    folder.mkdir(parents=True)
    for split, dataset in splits.items():
        dataset.to_parquet(str(folder / f"{split}.parquet"))
    return str(folder)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "datasets"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dataset_folders")
    three = {split: tagged_split() for split in ("train", "validation", "test")}
    words = Features({"words": List(Value("string")), "tags": List(Value("int64")), "id": Value("string")})
    strings = Features({"tokens": List(Value("string")), "ner_tags": List(Value("string")), "id": Value("string")})
    string_rows = [(words, [TAGS[index] for index in ids]) for words, ids in ROWS]
    bad = List(ClassLabel(names=["O", "PER", *TAGS[2:]]))
    return {
        "en": write_folder(root / "en", three),
        "de": write_folder(root / "de", three),
        "no_train": write_folder(root / "no_train", {"validation": tagged_split()}),
        "integer_tags": write_folder(
            root / "integer", {"train": tagged_split(features=words, text="words", tags="tags")}
        ),
        "string_tags": write_folder(root / "strings", {"train": tagged_split(string_rows, strings)}),
        "bad_names": write_folder(
            root / "bad", {"train": tagged_split(features=Features({**TAGGED, "ner_tags": bad}))}
        ),
    }


def test_a_source_and_a_target_dataset_feed_the_run_by_split(folders):
    sources = data_sources({"dataset_name": folders["en"], "target_dataset_name": folders["de"]})
    assert list(sources) == ["source_train", "source_dev", "target_unlabeled", "target_dev", "target_test"]
    assert sources["source_dev"].where == f"--dataset_name {folders['en']}, split 'validation'"
    labels = source_labels(sources["source_train"])
    assert labels == ["O", "LOC", "ORG", "PER"]  # from the ClassLabel names, sorted
    test = load_source(sources["target_test"], labels)
    assert test[0]["spans"] == [{"start": 0, "end": 1, "label": 3}, {"start": 3, "end": 3, "label": 1}]
    text = load_source(sources["target_unlabeled"], labels, unlabeled=True)
    assert text.column_names == ["sentence_id", "tokens", "spans", "gold_spans"]
    assert text["tokens"] == [words for words, _ in ROWS]
    assert all(row["spans"] == [] and row["gold_spans"] == [] for row in text)  # the target tags are dropped
    assert len(load_source(sources["source_train"], labels, max_samples=2)) == 2


def test_a_file_flag_replaces_its_split_and_aliases_stand_for_their_flags(folders, tmp_path):
    train = write_json(tmp_path / "train.json", SOURCE_TRAIN)
    settings = {"dataset_name": folders["en"], "train_file": train}
    sources = data_sources(settings)
    assert sources["source_train"] == train and sources["source_dev"].where.endswith("split 'validation'")
    assert file_flags({"test_file": "t.json", "target_test_file": "t.json"}) == {"target_test_file": "t.json"}
    args = run_xner.DataArguments(train_file=train, validation_file="dev.json")
    assert (args.source_train_file, args.source_validation_file) == (train, "dev.json")
    with pytest.raises(ValueError, match="--train_file a.json and --source_train_file b.json name different files"):
        run_xner.DataArguments(train_file="a.json", source_train_file="b.json")


def test_the_target_configuration_alone_names_a_configuration_of_the_source_dataset():
    named = datasets_named(
        {"dataset_name": "wikiann", "dataset_config_name": "en", "target_dataset_config_name": "de"}
    )
    assert named == [NamedDataset("source", "wikiann", "en"), NamedDataset("target", "wikiann", "de")]
    assert hub_split_references(
        {"dataset_name": "wikiann", "dataset_config_name": "en", "source_train_file": "x"}
    ) == {"source_dev": ["wikiann", "en", "validation"]}  # the file replaces the train split
    with pytest.raises(ValueError, match="--dataset_config_name en needs --dataset_name"):
        run_xner.DataArguments(dataset_config_name="en")


def test_columns_are_detected_or_named(folders):
    integer = data_sources({"dataset_name": folders["integer_tags"]}, labels=TAG_ORDER)["source_train"]
    assert integer.label_column == "tags"  # `words` and `tags` are detected
    spans = load_source(integer, TAG_ORDER)[0]["spans"]
    assert spans == [{"start": 0, "end": 1, "label": 1}, {"start": 3, "end": 3, "label": 3}]  # PER, LOC
    strings = data_sources({"dataset_name": folders["string_tags"], "label_column_name": "ner_tags"})["source_train"]
    assert source_labels(strings) == ["O", "LOC", "ORG", "PER"]  # string tags: the types found in the data
    renamed = data_sources(
        {"dataset_name": folders["en"], "text_column_name": "tokens", "label_column_name": "ner_tags"}
    )
    assert renamed["source_train"].data.column_names == ["tokens", "ner_tags"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"text_column_name": "text"}, r"no column 'text' \(--text_column_name text\); its columns are tokens"),
        ({"label_column_name": "pos"}, r"no column 'pos' \(--label_column_name pos\)"),
        ({"label_column_name": "id"}, r"column 'id' holds Value\('string'\), not a list of tags"),
    ],
)
def test_a_missing_column_names_the_flag_the_dataset_the_split_and_the_column(folders, settings, message):
    with pytest.raises(ValueError, match=rf"^--dataset_name {folders['en']}, split 'train': {message}"):
        data_sources({"dataset_name": folders["en"], **settings})


def test_integer_tags_without_names_need_labels(folders):
    with pytest.raises(ValueError, match=r"column 'tags' holds integer tags without ClassLabel names: pass --labels"):
        data_sources({"dataset_name": folders["integer_tags"]})


def test_a_class_label_name_that_is_no_tag_is_refused(folders):
    with pytest.raises(ValueError, match=r"split 'train': column 'ner_tags' has the ClassLabel name 'PER': tag 'PER'"):
        data_sources({"dataset_name": folders["bad_names"]})


def test_an_entity_type_outside_the_labels_is_refused(folders):
    source = data_sources({"dataset_name": folders["en"]})["source_dev"]
    with pytest.raises(ValueError, match=r"split 'validation': column 'ner_tags' has entities of type\(s\) LOC"):
        load_source(source, ["O", "ORG", "PER"])
    only_organisations = dataclasses.replace(source, data=source.data.select([1, 3]))  # declared, but not used: LOC
    assert len(load_source(only_organisations, ["O", "ORG", "PER"])) == 2


def test_a_missing_split_the_run_needs_names_the_dataset_and_the_split(folders, tiny_encoder_dir, tmp_path):
    args = ["--model_name_or_path", str(tiny_encoder_dir), "--output_dir", str(tmp_path / "out"), "--do_train"]
    args += ["--dataset_name", folders["no_train"], *COMMON_FLAGS]
    message = rf"--do_train needs source train data: --dataset_name {folders['no_train']} has no split 'train'"
    with pytest.raises(ValueError, match=message + r" \(its splits: validation\)"):
        run_xner.main(args)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_the_stage_fingerprint_follows_the_data_flags(folders):
    def loaded(setting: str, folder: str, name: str):
        return load_source(data_sources({setting: folders[folder]}, labels=TAG_ORDER)[name], TAG_ORDER)

    tags = loaded("dataset_name", "string_tags", "source_train")
    assert dataset_fingerprint(tags) != dataset_fingerprint(
        loaded("target_dataset_name", "string_tags", "target_unlabeled")
    )
    # the same words and entities, whatever the columns are called
    assert dataset_fingerprint(tags) == dataset_fingerprint(loaded("dataset_name", "integer_tags", "source_train"))


def test_cli_run_with_an_alias_and_a_local_target_dataset(folders, tiny_encoder_dir, tmp_path):
    output_dir = tmp_path / "out"
    args = ["--model_name_or_path", str(tiny_encoder_dir), "--output_dir", str(output_dir)]
    args += ["--train_file", write_json(tmp_path / "train.json", SOURCE_TRAIN), "--target_dataset_name", folders["de"]]
    results = run_xner.main(args + COMMON_FLAGS + ["--max_steps", "1", "--do_train", "--do_eval", "--do_predict"])
    assert {"eval_target_dev_span_f1", "predict_target_test_span_f1"} <= set(results)
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "--train_file '<local>/train.json'" in card and "\ndatasets:" not in card  # a local folder: no Hub id
    saved = json.loads((output_dir / "run_info.json").read_text(encoding="utf-8"))
    assert saved["run_config"]["source_train_file"] == "<local>/train.json" and saved["hub_datasets"] is None
