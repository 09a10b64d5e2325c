"""Tests of the ``data_loading`` package: readers, validation messages, builder, writer and statistics."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value  # noqa: E402

from data_loading import (  # noqa: E402
    SpanDataError,
    SpanDataWarning,
    SpanNERBuilder,
    count_span_labels,
    detect_tag_scheme,
    infer_labels,
    load_spans,
    num_enumerated_spans,
    span_features,
    tags_to_spans,
    write_span_json,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPANS_SMALL = FIXTURES / "spans_small.json"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conll03_en_de"
CONLL_LABELS = ["O", "ORG", "PER", "LOC", "MISC"]

# Expected content of the fixtures (sentence_id, tokens, spans as (start, end, label)), -DOCSTART- dropped.
EXPECTED = [
    (
        1,
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        [(0, 0, "ORG"), (2, 2, "MISC"), (6, 6, "MISC")],
    ),
    (2, ["Peter", "Blackburn"], [(0, 1, "PER")]),
    (
        3,
        ["Angela", "Merkel", "Olaf", "Scholz", "besuchen", "São", "Paulo", "."],
        [(0, 1, "PER"), (2, 3, "PER"), (5, 6, "LOC")],
    ),
    (4, ["Kein", "Name", "hier", "."], []),
    (6, ["The", "New", "York", "Stock", "Exchange", "opened", "."], [(1, 4, "ORG")]),
]


def rows(dataset, column="spans"):
    """(sentence_id, tokens, spans with label names) for every row."""
    names = dataset.features[column].feature["label"].names
    return [
        (row["sentence_id"], row["tokens"], [(s["start"], s["end"], names[s["label"]]) for s in row[column]])
        for row in dataset
    ]


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def located(path, record, line, unit="record"):
    """Regex for the location prefix of an error message."""
    return re.escape(f"{path}, {unit} {record} (line {line}): ")


# ---------------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------------


def test_span_json_reader():
    dataset = load_spans(SPANS_SMALL)
    assert dataset.features == span_features(["O", "LOC", "MISC", "ORG", "PER"])
    assert dataset.features["sentence_id"] == Value("int64")
    assert dataset.features["spans"].feature["start"] == Value("int32")
    assert "gold_spans" not in dataset.column_names
    assert rows(dataset) == EXPECTED


def test_span_json_keeps_docstart_and_max_samples():
    dataset = load_spans(SPANS_SMALL, drop_docstart=False)
    assert len(dataset) == 7 and dataset[0]["tokens"] == ["-DOCSTART-"] and dataset[0]["sentence_id"] == 0
    first_two = load_spans(SPANS_SMALL, max_samples=2)
    assert first_two["sentence_id"] == [1, 2]
    with pytest.raises(SpanDataError, match="parameter max_samples"):
        load_spans(SPANS_SMALL, max_samples=0)


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "bioes", "bilou"])
def test_conll_readers_match_span_json(scheme):
    path = FIXTURES / f"conll_{scheme}.txt"
    assert rows(load_spans(path)) == EXPECTED
    assert rows(load_spans(path, data_format="conll", labels=CONLL_LABELS)) == EXPECTED
    assert load_spans(path, drop_docstart=False)["sentence_id"] == list(range(7))


def test_tag_scheme_detection_and_decoding():
    def tags(name):
        lines = (FIXTURES / f"conll_{name}.txt").read_text(encoding="utf-8").split("\n\n")
        return [[line.split()[-1] for line in block.splitlines()] for block in lines if block.strip()]

    assert [detect_tag_scheme(tags(name)) for name in ("iob1", "iob2", "bioes", "bilou")] == [
        "IOB1",
        "IOB2",
        "BIOES",
        "BILOU",
    ]
    # IOB1/IOB2-tolerant chunking (method spec §2.4): a type change or B- starts a new chunk.
    assert tags_to_spans(["I-PER", "I-LOC", "B-LOC", "O", "I-PER"]) == [
        (0, 0, "PER"),
        (1, 1, "LOC"),
        (2, 2, "LOC"),
        (4, 4, "PER"),
    ]
    assert tags_to_spans(["E-PER", "B-ORG", "I-ORG"]) == [(0, 0, "PER"), (1, 2, "ORG")]


def test_memory_records_both_shapes():
    context_records = [
        {"context": "Peter Blackburn visits Paris", "span_posLabel": {"3;3": "LOC", "0;1": "PER"}},
        {"context": "nothing here", "span_posLabel": {}},
    ]
    token_records = [
        {
            "tokens": ["Peter", "Blackburn", "visits", "Paris"],
            "spans": [{"start": 3, "end": 3, "label": "LOC"}, {"start": 0, "end": 1, "label": "PER"}],
        },
        {"tokens": ["nothing", "here"], "spans": []},
    ]
    expected = [
        (0, ["Peter", "Blackburn", "visits", "Paris"], [(0, 1, "PER"), (3, 3, "LOC")]),
        (1, ["nothing", "here"], []),
    ]
    assert rows(load_spans(context_records)) == expected
    assert rows(load_spans(token_records, data_format="memory")) == expected
    assert rows(load_spans(context_records[:1] + token_records[1:])) == expected


def test_hf_dataset_with_classlabel_ner_tags():
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    hub_like = Dataset.from_dict(
        {"tokens": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]], "ner_tags": [[3, 0, 7, 0], [1, 2]]},
        features=features,
    )
    expected = [
        (0, ["EU", "rejects", "German", "call"], [(0, 0, "ORG"), (2, 2, "MISC")]),
        (1, ["Peter", "Blackburn"], [(0, 1, "PER")]),
    ]
    loaded = load_spans(hub_like, labels=CONLL_LABELS)
    assert loaded.features["spans"].feature["label"].names == CONLL_LABELS
    assert rows(loaded) == expected
    # a shuffled/selected view is read through its indices mapping
    assert rows(load_spans(hub_like.select([1]), labels=CONLL_LABELS))[0][1] == ["Peter", "Blackburn"]
    string_tags = Dataset.from_dict({"tokens": [["Peter", "Blackburn"]], "ner_tags": [["S-PER", "O"]]})
    assert rows(load_spans(string_tags, data_format="dataset")) == [(0, ["Peter", "Blackburn"], [(0, 0, "PER")])]
    # our own layout reads back as is
    assert rows(load_spans(loaded)) == expected


def test_hf_dataset_errors():
    bad_tags = Dataset.from_dict({"tokens": [["a"], ["b", "c"]], "ner_tags": [["O"], ["O", "X-PER"]]})
    with pytest.raises(SpanDataError, match=r"dataset, row 1: ner_tags\[1\]: tag 'X-PER' has no valid prefix"):
        load_spans(bad_tags)
    no_names = Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[1]]})
    with pytest.raises(SpanDataError, match="dataset, row 0: .*no ClassLabel names"):
        load_spans(no_names)
    with pytest.raises(SpanDataError, match="expected columns 'tokens'"):
        load_spans(Dataset.from_dict({"text": ["a b"]}))
    with pytest.raises(SpanDataError, match="pass one split"):
        load_spans(DatasetDict({"train": no_names}))


def test_data_format_mismatch():
    with pytest.raises(SpanDataError, match="parameter data_format"):
        load_spans([{"context": "a", "span_posLabel": {}}], data_format="conll")
    with pytest.raises(SpanDataError, match="parameter data_format: unknown value 'bio'"):
        load_spans(SPANS_SMALL, data_format="bio")
    with pytest.raises(SpanDataError, match="parameter source"):
        load_spans(42)


def test_explicit_span_json_format_rejects_conll(tmp_path):
    message = f"{FIXTURES / 'conll_iob2.txt'} (line 1, column 1): malformed JSON: the file starts with '-'"
    with pytest.raises(SpanDataError, match=re.escape(message)):
        load_spans(FIXTURES / "conll_iob2.txt", data_format="span_json")


# ---------------------------------------------------------------------------------------------------------------
# Labels, unlabeled data
# ---------------------------------------------------------------------------------------------------------------


def test_label_inference_and_normalisation():
    assert infer_labels(SPANS_SMALL) == ["O", "LOC", "MISC", "ORG", "PER"]
    assert infer_labels(FIXTURES / "conll_bioes.txt") == ["O", "LOC", "MISC", "ORG", "PER"]
    assert infer_labels([{"tokens": ["a"], "spans": []}]) == ["O"]
    dataset = load_spans(SPANS_SMALL, labels=["ORG", "PER", "LOC", "MISC"])
    assert dataset.features["spans"].feature["label"].names == CONLL_LABELS
    assert dataset[0]["spans"][0]["label"] == 1  # ORG
    # labels are inferred from the whole source, not only from the kept records
    assert load_spans(SPANS_SMALL, max_samples=1).features["spans"].feature["label"].names[-1] == "PER"
    with pytest.raises(SpanDataError, match="parameter labels: 'O' must come first"):
        load_spans(SPANS_SMALL, labels=["PER", "O"])
    with pytest.raises(SpanDataError, match="parameter labels: duplicate"):
        load_spans(SPANS_SMALL, labels=["O", "PER", "PER"])


def test_unknown_label_names_record_and_known_labels():
    with pytest.raises(
        SpanDataError,
        match=located(SPANS_SMALL, 1, 6) + r"span '0;0' has unknown label 'ORG'; "
        r"known labels: PER, LOC\. Pass labels=",
    ):
        load_spans(SPANS_SMALL, labels=["O", "PER", "LOC"])


def test_unlabeled_moves_annotations_to_gold_spans():
    dataset = load_spans(SPANS_SMALL, labels=CONLL_LABELS, unlabeled=True)
    assert dataset.column_names == ["sentence_id", "tokens", "spans", "gold_spans"]
    assert all(spans == [] for spans in dataset["spans"])
    assert rows(dataset, "gold_spans") == EXPECTED
    assert dataset.features["gold_spans"] == dataset.features["spans"]


# ---------------------------------------------------------------------------------------------------------------
# Validation of bad input
# ---------------------------------------------------------------------------------------------------------------

GOOD = '{"context": "Peter Blackburn", "span_posLabel": {"0;1": "PER"}}'

# (file content, expected message regex after the location prefix "<file>, record 1 (line 3): ")
BAD_RECORDS = {
    "not_object": ('"just a string"', "the record is a string, not an object"),
    "missing_key": ('{"context": "a b"}', r"missing key\(s\) 'span_posLabel'"),
    "context_not_string": ('{"context": ["a"], "span_posLabel": {}}', "'context' is a list; it must be a string"),
    "empty_context": ('{"context": "  ", "span_posLabel": {}}', "'context' is empty"),
    "labels_not_object": ('{"context": "a", "span_posLabel": []}', "'span_posLabel' is a list"),
    "key_format": ('{"context": "a b", "span_posLabel": {"0-1": "PER"}}', "span key '0-1' is not of the form"),
    "key_non_integer": ('{"context": "a b", "span_posLabel": {"0;x": "PER"}}', "span key '0;x' has a non-integer"),
    "key_float": (
        '{"context": "a b", "span_posLabel": {"0;1.0": "PER"}}',
        "span key '0;1.0' has a non-integer index '1.0'",
    ),
    "negative": ('{"context": "a b", "span_posLabel": {"-1;1": "PER"}}', "span '-1;1' has a negative index"),
    "out_of_range": (
        '{"context": "a b", "span_posLabel": {"1;2": "PER"}}',
        r"span '1;2' is out of range: the sentence has 2 words \(valid indices 0\.\.1\)",
    ),
    "start_after_end": ('{"context": "a b", "span_posLabel": {"1;0": "PER"}}', "span '1;0' has start 1 > end 0"),
    "label_not_string": ('{"context": "a b", "span_posLabel": {"0;0": 3}}', "span '0;0' has label 3"),
    "label_o": ('{"context": "a b", "span_posLabel": {"0;0": "O"}}', "span '0;0' is labeled 'O', which is reserved"),
    "duplicate_key": (
        '{"context": "a b", "span_posLabel": {"0;1": "PER", "0;1": "ORG"}}',
        "duplicate key '0;1' in one JSON object",
    ),
    "duplicate_after_parsing": (
        '{"context": "a b", "span_posLabel": {"1;1": "PER", "01;1": "ORG"}}',
        "spans '1;1' and '01;1' both denote words 1..1",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_span_json_records(tmp_path, case):
    record, message = BAD_RECORDS[case]
    path = write(tmp_path, f"{case}.json", f"[\n{GOOD},\n  {record}\n]\n")
    with pytest.raises(SpanDataError, match=located(path, 1, 3) + message):
        load_spans(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"[\n{GOOD},\n{GOOD}\n", r" \(line 4, column 1\): malformed JSON: the file ends before"),
        (f"[\n{GOOD}\n{GOOD}]", r" \(line 3, column 1\): malformed JSON: expected ',' or ']'"),
        (
            f'[\n{GOOD},\n{{"context": "a" "span_posLabel": {{}}}}]',
            r" \(line 3, column 17\): malformed JSON: Expecting ',' delimiter",
        ),
        (f"[{GOOD},]", r" \(line 1, column \d+\): malformed JSON: Expecting value"),
        (f"[{GOOD}] x", r" \(line 1, column \d+\): malformed JSON: extra data"),
        (f"{GOOD}\n", ": the top level is an object; a span JSON file must be a list of records"),
        ("[]", ": the list contains no records"),
        ("  \n", ": the file is empty"),
    ],
)
def test_malformed_span_json(tmp_path, text, message):
    path = write(tmp_path, "bad.json", text)
    with pytest.raises(SpanDataError, match=re.escape(str(path)) + message):
        load_spans(path)


def test_file_level_errors(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(SpanDataError, match=re.escape(f"{missing}: file not found")):
        load_spans(missing)
    latin1 = write(tmp_path, "latin1.json", '[\n{"context": "Düsseldorf", "span_posLabel": {}}]', encoding="latin-1")
    with pytest.raises(SpanDataError, match=re.escape(f"{latin1} (line 2): not valid UTF-8 at byte offset 16")):
        load_spans(latin1)
    only_docstart = write(tmp_path, "docstart.json", '[{"context": "-DOCSTART-", "span_posLabel": {}}]')
    with pytest.raises(SpanDataError, match="contains only -DOCSTART- records"):
        load_spans(only_docstart)
    assert len(load_spans(only_docstart, drop_docstart=False)) == 1
    with pytest.raises(SpanDataError, match="in-memory data: contains no records"):
        load_spans([])


def test_bad_memory_records():
    with pytest.raises(SpanDataError, match=r"in-memory data, record 1: missing key\(s\) 'span_posLabel'"):
        load_spans([{"context": "a", "span_posLabel": {}}, {"context": "a"}])
    with pytest.raises(SpanDataError, match=r"in-memory data, record 0: span spans\[0\] is out of range"):
        load_spans([{"tokens": ["a"], "spans": [{"start": 0, "end": 1, "label": "PER"}]}])
    with pytest.raises(SpanDataError, match=r"in-memory data, record 0: spans\[0\] misses key\(s\) 'label'"):
        load_spans([{"tokens": ["a"], "spans": [{"start": 0, "end": 0}]}])
    with pytest.raises(SpanDataError, match=r"in-memory data, record 0: token 0 \('New York'\) contains whitespace"):
        load_spans([{"tokens": ["New York"], "spans": []}])
    with pytest.raises(SpanDataError, match="in-memory data, record 0: missing key 'spans'"):
        load_spans([{"tokens": ["a"]}])
    with pytest.raises(SpanDataError, match="in-memory data, record 0: span spans.0. has a non-integer index True"):
        load_spans([{"tokens": ["a"], "spans": [{"start": True, "end": 0, "label": "PER"}]}])


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-PER"])
def test_bad_conll_tag_names_file_and_line(tmp_path, tag):
    path = write(tmp_path, "bad.conll", f"-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn {tag}\n")
    with pytest.raises(SpanDataError, match=located(path, 2, 7, unit="sentence") + f"tag '{tag}'"):
        load_spans(path)


def test_conll_single_column_line(tmp_path):
    path = write(tmp_path, "bad.conll", "EU B-ORG\nrejects\n")
    with pytest.raises(SpanDataError, match=located(path, 0, 2, unit="sentence") + "the line has one column"):
        load_spans(path)


# ---------------------------------------------------------------------------------------------------------------
# Warnings and cleanup
# ---------------------------------------------------------------------------------------------------------------


def test_overlapping_spans_give_one_summary_warning(tmp_path):
    records = [
        {"context": "a b c d", "span_posLabel": {"0;2": "ORG", "1;1": "PER", "2;3": "LOC"}},
        {"context": "a b", "span_posLabel": {"0;1": "ORG", "1;1": "PER"}},
    ]
    path = write(tmp_path, "overlap.json", json.dumps(records, indent=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_spans(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, SpanDataWarning)]
    assert len(messages) == 1
    assert re.search(
        r"3 gold span\(s\) overlap .*first in .*overlap\.json, record 0 \(line 2\): '0;2' and '1;1'", messages[0]
    )
    assert [len(spans) for spans in dataset["spans"]] == [3, 2]  # overlaps are kept


def test_utf8_bom_is_accepted(tmp_path):
    text = SPANS_SMALL.read_text(encoding="utf-8")
    path = write(tmp_path, "bom.json", "\ufeff" + text)
    conll = write(tmp_path, "bom.conll", "\ufeff" + (FIXTURES / "conll_iob2.txt").read_text(encoding="utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rows(load_spans(path)) == EXPECTED
        assert rows(load_spans(conll)) == EXPECTED


def test_zero_width_characters(tmp_path):
    records = [
        {
            "context": "Ange\u200bla Merkel \u200b \u200e\u200f besucht Paris",
            "span_posLabel": {"0;1": "PER", "5;5": "LOC"},
        },
        {"context": "\ufeffBonn \u200d", "span_posLabel": {"0;1": "LOC"}},
    ]
    path = write(tmp_path, "zw.json", json.dumps(records, ensure_ascii=False, indent=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_spans(path)
    assert rows(dataset) == [
        (0, ["Angela", "Merkel", "besucht", "Paris"], [(0, 1, "PER"), (3, 3, "LOC")]),
        (1, ["Bonn"], [(0, 0, "LOC")]),
    ]
    messages = [str(w.message) for w in caught if issubclass(w.category, SpanDataWarning)]
    assert len(messages) == 1 and "dropped 3 word(s) consisting only of zero-width characters" in messages[0]
    blank_token = [{"tokens": ["a", "\xa0", "b\u200b"], "spans": [{"start": 2, "end": 2, "label": "PER"}]}]
    with pytest.warns(SpanDataWarning, match="in-memory data: dropped 1 word"):
        assert rows(load_spans(blank_token)) == [(0, ["a", "b"], [(1, 1, "PER")])]
    bad = write(tmp_path, "zw_bad.json", json.dumps([{"context": "a \u200b b", "span_posLabel": {"1;1": "PER"}}]))
    with pytest.raises(SpanDataError, match=re.escape(f"{bad}, record 0 (line 1): span '1;1' covers only words")):
        load_spans(bad)


# ---------------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------------


def test_write_then_load_round_trip(tmp_path):
    dataset = load_spans(SPANS_SMALL, labels=CONLL_LABELS)
    path = write_span_json(dataset, tmp_path / "out" / "train.json")
    text = path.read_text(encoding="utf-8")
    assert "São Paulo" in text and '"2;3": "PER"' in text
    assert json.loads(text)[0] == {
        "context": dataset[0]["tokens"][0] + " rejects German call to boycott British lamb .",
        "span_posLabel": {"0;0": "ORG", "2;2": "MISC", "6;6": "MISC"},
    }
    reloaded = load_spans(path, labels=CONLL_LABELS)
    assert reloaded["tokens"] == dataset["tokens"] and reloaded["spans"] == dataset["spans"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.json"]  # no temporary file left
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_span_json(dataset, path)
    write_span_json(dataset.select([0]), path, overwrite=True)
    assert len(json.loads(path.read_text(encoding="utf-8"))) == 1
    unlabeled = load_spans(SPANS_SMALL, unlabeled=True)
    gold = write_span_json(unlabeled, tmp_path / "gold.json", column="gold_spans")
    assert rows(load_spans(gold)) == [(i, tokens, spans) for i, (_, tokens, spans) in enumerate(EXPECTED)]


def test_write_memory_records_validates(tmp_path):
    records = [{"tokens": ["Peter", "Blackburn"], "spans": [{"start": 0, "end": 1, "label": "PER"}]}]
    path = write_span_json(records, tmp_path / "memory.json")
    expected = [{"context": "Peter Blackburn", "span_posLabel": {"0;1": "PER"}}]
    assert json.loads(path.read_text(encoding="utf-8")) == expected
    with pytest.raises(SpanDataError, match="in-memory data, record 0: span '0;1' has label 'PER', which is not in"):
        write_span_json(records, tmp_path / "other.json", labels=["O", "LOC"])
    assert not (tmp_path / "other.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------------------------


def test_builder_matches_load_spans(tmp_path):
    builder = SpanNERBuilder(
        cache_dir=str(tmp_path / "cache"),
        data_files={
            "train": str(SPANS_SMALL),
            "validation": str(FIXTURES / "conll_iob1.txt"),
            "unlabeled": str(FIXTURES / "conll_bioes.txt"),
        },
        labels=["ORG", "PER", "LOC", "MISC"],
    )
    builder.download_and_prepare()
    splits = builder.as_dataset()
    assert set(splits) == {"train", "validation", "unlabeled"}
    for split in ("train", "validation"):
        assert splits[split].column_names == ["sentence_id", "tokens", "spans"]
        assert rows(splits[split]) == EXPECTED
    assert splits["train"].features["spans"].feature["label"].names == CONLL_LABELS
    assert all(spans == [] for spans in splits["unlabeled"]["spans"])
    assert rows(splits["unlabeled"], "gold_spans") == EXPECTED
    assert builder.as_dataset(split="train").column_names == ["sentence_id", "tokens", "spans"]
    streamed = builder.as_streaming_dataset(split="validation")
    assert [row["sentence_id"] for row in streamed] == [1, 2, 3, 4, 6]


def test_builder_infers_labels(tmp_path):
    builder = SpanNERBuilder(cache_dir=str(tmp_path / "cache"), data_files={"train": str(SPANS_SMALL)})
    builder.download_and_prepare()
    train = builder.as_dataset(split="train")
    assert train.features["spans"].feature["label"].names == ["O", "LOC", "MISC", "ORG", "PER"]
    assert rows(train) == EXPECTED


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------


def test_num_enumerated_spans():
    for n in range(4, 40):
        assert num_enumerated_spans(n, 4) == 4 * n - 6
    assert [num_enumerated_spans(n, 4) for n in range(4)] == [0, 1, 3, 6]
    assert num_enumerated_spans(10, 1) == 10
    assert num_enumerated_spans(5, 8) == 15
    with pytest.raises(SpanDataError, match="parameter max_span_width"):
        num_enumerated_spans(3, 0)


def test_count_span_labels_small():
    dataset = load_spans(SPANS_SMALL, labels=CONLL_LABELS)
    counts = count_span_labels(dataset, max_span_width=4)
    assert counts.dtype == np.int64
    enumerated = sum(num_enumerated_spans(len(tokens), 4) for tokens in dataset["tokens"])
    # ORG: EU + the 4-word NYSE entity (wider entities count too, and are subtracted from O)
    assert counts.tolist() == [enumerated - 8, 2, 3, 1, 2]
    unlabeled = load_spans(SPANS_SMALL, labels=CONLL_LABELS, unlabeled=True)
    assert count_span_labels(unlabeled, column="gold_spans").tolist() == counts.tolist()


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared CoNLL data not available")
def test_count_span_labels_on_real_english_train():
    train = load_spans(SHARED_DATA / "spanner.train", labels=CONLL_LABELS, drop_docstart=False)
    assert len(train) == 14987
    assert count_span_labels(train, max_span_width=4).tolist() == [709351, 6321, 6600, 7140, 3438]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared CoNLL data not available")
def test_real_conll_file_matches_span_json():
    from_json = load_spans(SHARED_DATA / "spanner.dev", labels=CONLL_LABELS)
    from_conll = load_spans(SHARED_DATA / "dev.txt", labels=CONLL_LABELS)
    assert from_json["sentence_id"] == from_conll["sentence_id"]
    assert from_json["tokens"] == from_conll["tokens"] and from_json["spans"] == from_conll["spans"]
