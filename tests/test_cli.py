"""End-to-end tests of `run_xner.main` on tiny span JSON files and the tiny random encoder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import run_xner
from modeling_maral import MaralForSpanNER
from tests.tiny_models import TINY_SOURCE_RECORDS, build_span_marking_model

SOURCE_TRAIN = TINY_SOURCE_RECORDS[:6]
SOURCE_DEV = [TINY_SOURCE_RECORDS[7], TINY_SOURCE_RECORDS[6]]
TARGET_UNLABELED = [
    {"context": "Die Europäische Kommission sagte am Donnerstag in Berlin .", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Naciones Unidas en Madrid .", "span_posLabel": {"0;1": "ORG"}},
    {"context": "Merkel sagte am Donnerstag .", "span_posLabel": {}},
]
TARGET_TEST = [
    {
        "context": "Angela Merkel besuchte Paris und London mit der UNO .",
        "span_posLabel": {"0;1": "PER", "3;3": "LOC"},
    },
    {"context": "El presidente de España viajó a Madrid .", "span_posLabel": {"3;3": "LOC", "6;6": "LOC"}},
    # a six-word entity: never scorable (seqeval counts it, span F1 does not)
    {"context": "Die Europäische Kommission in Berlin sagte nein .", "span_posLabel": {"0;5": "MISC"}},
]
INFERRED_LABELS = ["O", "LOC", "MISC", "ORG", "PER"]


def write_json(path: Path, records) -> str:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cli_data")
    return {
        "source_train_file": write_json(folder / "en_train.json", SOURCE_TRAIN),
        "source_validation_file": write_json(folder / "en_dev.json", SOURCE_DEV),
        "target_unlabeled_file": write_json(folder / "de_unlabeled.json", TARGET_UNLABELED),
        "target_test_file": write_json(folder / "de_test.json", TARGET_TEST),
    }


COMMON_FLAGS = [
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "4",
    "--use_cpu",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--disable_tqdm",
    "true",
    "--seed",
    "0",
]


def cli_args(encoder_dir, data_files, output_dir, *extra) -> list[str]:
    args = ["--model_name_or_path", str(encoder_dir), "--output_dir", str(output_dir)]
    for key, value in data_files.items():
        args += [f"--{key}", value]
    return args + COMMON_FLAGS + list(extra)


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(path.relative_to(folder)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def cli_run(tiny_encoder_dir, data_files, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("cli_run") / "out"
    results = run_xner.main(
        cli_args(tiny_encoder_dir, data_files, output_dir, "--do_train", "--do_eval", "--do_predict")
    )
    return output_dir, results


def test_end_to_end_writes_results(cli_run):
    output_dir, results = cli_run
    all_results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    for key in (
        "train_loss",
        "predict_target_test_span_f1",
        "predict_target_test_seqeval_f1",
        "eval_source_dev_span_f1",
        "eval_source_dev_seqeval_f1",
        "predict_target_test_PER_seqeval_f1",
    ):
        assert key in all_results, key
        assert key in results
    for key, value in all_results.items():
        if key.endswith(("_f1", "_precision", "_recall")):
            assert 0.0 <= value <= 1.0, key
    assert all_results["train_samples"] == len(SOURCE_TRAIN)
    for name in ("train_results.json", "eval_results.json", "predict_results.json"):
        assert (output_dir / name).is_file()


def test_end_to_end_writes_predictions(cli_run):
    output_dir, _ = cli_run
    lines = (output_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(TARGET_TEST)
    for index, (line, record) in enumerate(zip(lines, TARGET_TEST)):
        prediction = json.loads(line)
        assert prediction["sentence_id"] == index
        assert prediction["tokens"] == record["context"].split()
        assert prediction["text"] == record["context"]
        for entity in prediction["entities"]:
            assert 0 <= entity["word_start"] <= entity["word_end"] < len(prediction["tokens"])
            assert entity["word_end"] - entity["word_start"] < 4
            assert entity["label"] in INFERRED_LABELS[1:]
            assert entity["text"] == " ".join(prediction["tokens"][entity["word_start"] : entity["word_end"] + 1])
            assert entity["text"] == prediction["text"][entity["start"] : entity["end"]]  # character offsets
            assert 0.0 < entity["score"] <= 1.0
        gold = [(e["word_start"], e["word_end"], e["label"], e["text"]) for e in prediction["gold"]]
        assert gold == [
            (int(key.split(";")[0]), int(key.split(";")[1]), label, prediction["text"][e["start"] : e["end"]])
            for (key, label), e in zip(record["span_posLabel"].items(), prediction["gold"])
        ]


def test_end_to_end_writes_a_loadable_model(cli_run):
    output_dir, _ = cli_run
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "maral"
    assert config["labels"] == INFERRED_LABELS
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    assert (output_dir / "modeling_maral.py").is_file()
    assert (output_dir / "tokenizer.json").is_file()
    assert any(output_dir.glob("*.safetensors"))
    model = MaralForSpanNER.from_pretrained(output_dir)
    assert isinstance(model.predict("Angela Merkel besuchte Paris ."), list)


def test_evaluating_the_saved_model_reproduces_the_metrics(cli_run, data_files, tmp_path):
    output_dir, results = cli_run
    again = run_xner.main(
        [
            "--model_name_or_path",
            str(output_dir),
            "--source_validation_file",
            data_files["source_validation_file"],
            "--target_test_file",
            data_files["target_test_file"],
            "--output_dir",
            str(tmp_path / "eval_only"),
            "--do_eval",
            "--do_predict",
            "--use_cpu",
            "--report_to",
            "none",
        ]
    )
    for key in ("eval_source_dev_span_f1", "eval_source_dev_seqeval_f1", "predict_target_test_span_f1"):
        assert again[key] == pytest.approx(results[key]), key
    assert (tmp_path / "eval_only" / "predictions.jsonl").read_text(encoding="utf-8") == (
        output_dir / "predictions.jsonl"
    ).read_text(encoding="utf-8")


def test_student_started_from_a_given_teacher_checkpoint(cli_run, tiny_encoder_dir, data_files, tmp_path):
    teacher_dir, _ = cli_run
    output_dir = tmp_path / "student"
    flags = ["--method", "self_training", "--teacher_checkpoint", str(teacher_dir), "--student_init", "teacher"]
    results = run_xner.main(cli_args(tiny_encoder_dir, data_files, output_dir, "--do_train", *flags))
    assert "round_1_target_test_span_f1" in results
    # the teacher stage's copy of the checkpoint carries its tokenizer, so the student can start from it
    assert (output_dir / "teacher" / "tokenizer.json").is_file()
    assert MaralForSpanNER.from_pretrained(output_dir).predict("Angela Merkel besuchte Paris .") is not None


def test_rerun_into_non_empty_output_dir_fails_and_keeps_files(cli_run, tiny_encoder_dir, data_files):
    output_dir, _ = cli_run
    before = snapshot(output_dir)
    assert "all_results.json" in before
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        run_xner.main(cli_args(tiny_encoder_dir, data_files, output_dir, "--do_train", "--do_predict"))
    assert snapshot(output_dir) == before


def test_labels_different_from_the_trained_model_fail(cli_run, data_files, tmp_path):
    output_dir, _ = cli_run
    with pytest.raises(ValueError, match="differ"):
        run_xner.main(
            [
                "--model_name_or_path",
                str(output_dir),
                "--labels",
                "O,PER,LOC",
                "--source_validation_file",
                data_files["source_validation_file"],
                "--output_dir",
                str(tmp_path / "other"),
                "--do_eval",
                "--use_cpu",
            ]
        )
    assert not (tmp_path / "other" / "all_results.json").exists()


def test_same_labels_without_o_are_accepted_for_a_trained_model(cli_run, data_files, tmp_path):
    output_dir, results = cli_run
    again = run_xner.main(
        [
            "--model_name_or_path",
            str(output_dir),
            "--labels",
            ",".join(INFERRED_LABELS[1:]),  # "O" is optional on the command line
            "--source_validation_file",
            data_files["source_validation_file"],
            "--output_dir",
            str(tmp_path / "same_labels"),
            "--do_eval",
            "--use_cpu",
        ]
    )
    assert again["eval_source_dev_span_f1"] == pytest.approx(results["eval_source_dev_span_f1"])


def test_json_config_file_as_the_only_argument(tiny_encoder_dir, data_files, tmp_path):
    output_dir = tmp_path / "from_json"
    config = {
        "model_name_or_path": str(tiny_encoder_dir),
        "output_dir": str(output_dir),
        **data_files,
        "labels": "O,PER,ORG,LOC,MISC",
        "do_train": True,
        "do_predict": True,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "max_span_width": 3,
        "disable_tqdm": True,
    }
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    results = run_xner.main([str(config_file)])
    assert "predict_target_test_span_f1" in results
    saved = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert saved["labels"] == ["O", "PER", "ORG", "LOC", "MISC"]
    assert saved["max_span_width"] == 3
    lines = (output_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(TARGET_TEST)
    for line in lines:
        assert all(entity["word_end"] - entity["word_start"] < 3 for entity in json.loads(line)["entities"])


def test_unknown_flag_fails(tmp_path):
    with pytest.raises(ValueError, match="no_such_flag"):
        run_xner.main(["--model_name_or_path", "x", "--output_dir", str(tmp_path), "--no_such_flag", "1"])


def test_results_table_lists_every_stage_and_dataset_once():
    metrics = {}
    for prefix, value in (("teacher_target_test", 0.5), ("round_1_target_test", 0.625), ("eval_source_dev", 0.75)):
        for key in ("span_f1", "seqeval_precision", "seqeval_recall", "seqeval_f1"):
            metrics[f"{prefix}_{key}"] = value
    metrics["eval_source_dev_LOC_span_f1"] = 0.1  # a per-label score: not a row
    lines = run_xner.results_table(metrics).splitlines()
    assert [line.split("  ")[0].strip() for line in lines[1:]] == [
        "teacher target test",
        "round 1 target test",
        "source dev",
    ]
    assert "62.50" in lines[2] and "75.00" in lines[3]


def test_inference_settings_apply_to_a_trained_model(tmp_path, tiny_encoder_dir):
    trained = tmp_path / "trained"
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=INFERRED_LABELS, max_span_width=3)
    model.config.decoding = "none"
    model.save_pretrained(trained)
    kept = run_xner.build_model(
        run_xner.ModelArguments(model_name_or_path=str(trained)), run_xner.DataArguments(), INFERRED_LABELS
    )
    assert (kept.config.decoding, kept.config.max_seq_length, kept.config.max_span_width) == ("none", 128, 3)
    changed = run_xner.build_model(
        run_xner.ModelArguments(model_name_or_path=str(trained), decoding="legacy"),
        run_xner.DataArguments(max_seq_length=64),
        INFERRED_LABELS,
    )
    assert (changed.config.decoding, changed.config.max_seq_length) == ("legacy", 64)
    with pytest.raises(ValueError, match=r"--max_span_width 4 differs from the trained model .* cover 3 words"):
        run_xner.build_model(
            run_xner.ModelArguments(model_name_or_path=str(trained)),
            run_xner.DataArguments(max_span_width=4),
            INFERRED_LABELS,
        )


@pytest.fixture(scope="module")
def brussels_model_dir(wordpiece_tokenizer, tmp_path_factory) -> Path:
    """A saved model that labels the word "Brussels" LOC and nothing else."""
    folder = tmp_path_factory.mktemp("brussels_model")
    build_span_marking_model(wordpiece_tokenizer, ["Brussels"], "LOC").save_pretrained(folder)
    return folder


def predict_only(model_dir: Path, output_dir: Path, predict_file: Path) -> dict[str, float]:
    return run_xner.main(
        ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), "--do_predict", "--predict_file",
         str(predict_file), "--use_cpu", "--report_to", "none", "--disable_tqdm", "true"]
    )  # fmt: skip


def read_predictions(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def test_predict_file_of_raw_text_writes_character_offsets_and_no_metrics(brussels_model_dir, tmp_path, capsys):
    long_line = " ".join(["the committee said on Monday ,"] * 100 + ["Brussels ."])  # 602 words
    lines = ["Peter Blackburn visited  Brussels on Monday.", "", "   ", "(Brussels) Brussels-based", long_line]
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = predict_only(brussels_model_dir, tmp_path / "out", texts)
    assert results == {}
    assert "span F1" not in capsys.readouterr().out  # no metrics table without labels
    assert not (tmp_path / "out" / "predict_results.json").exists()
    records = read_predictions(tmp_path / "out")
    assert [record["text"] for record in records] == lines
    assert [record["sentence_id"] for record in records] == list(range(len(lines)))
    found = [[(e["text"], e["label"], e["start"], e["end"]) for e in record["entities"]] for record in records]
    assert found == [
        [("Brussels", "LOC", 25, 33)],
        [],
        [],
        [("Brussels", "LOC", 1, 9)],  # "Brussels-based" is one word
        [("Brussels", "LOC", len(long_line) - 10, len(long_line) - 2)],
    ]
    for record in records:
        for entity in record["entities"]:
            assert record["tokens"][entity["word_start"]] == entity["text"]
    assert "gold" not in records[0]


def test_predict_file_of_json_lines_keeps_ids(brussels_model_dir, tmp_path):
    texts = tmp_path / "texts.jsonl"
    items = [{"id": "a", "text": "Brussels said", "lang": "en"}, {"text": "nothing here"}]
    texts.write_text("\n".join(json.dumps(item) for item in items) + "\n\n", encoding="utf-8")
    predict_only(brussels_model_dir, tmp_path / "out", texts)
    records = read_predictions(tmp_path / "out")
    assert [(record.get("id"), record["text"], len(record["entities"])) for record in records] == [
        ("a", "Brussels said", 1),
        (None, "nothing here", 0),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl \(line 2\): expected a JSON object with a string field 'text'"):
        predict_only(brussels_model_dir, tmp_path / "bad_out", bad)


def test_predict_file_of_labelled_data_carries_gold_and_metrics(brussels_model_dir, tmp_path, capsys):
    records = [
        {"context": "Peter visited Brussels on Monday .", "span_posLabel": {"2;2": "LOC", "0;0": "PER"}},
        {"context": "Brussels and Paris", "span_posLabel": {"2;2": "LOC"}},
    ]
    results = predict_only(brussels_model_dir, tmp_path / "out", Path(write_json(tmp_path / "test.json", records)))
    assert results["predict_file_span_precision"] == pytest.approx(0.5)
    assert results["predict_file_span_recall"] == pytest.approx(1 / 3)
    assert "span F1" in capsys.readouterr().out
    first, second = read_predictions(tmp_path / "out")
    assert [(e["text"], e["start"], e["end"], e["word_start"]) for e in first["entities"]] == [("Brussels", 14, 22, 2)]
    gold = [(e["text"], e["label"], e["start"]) for e in first["gold"]]
    assert gold == [("Peter", "PER", 0), ("Brussels", "LOC", 14)]
    assert "score" not in first["gold"][0]
    assert [e["text"] for e in second["gold"]] == ["Paris"]


def test_predict_file_needs_do_predict(brussels_model_dir, tmp_path):
    with pytest.raises(ValueError, match="--predict_file is predicted under --do_predict"):
        run_xner.main(["--model_name_or_path", str(brussels_model_dir), "--output_dir", str(tmp_path),
                       "--predict_file", str(tmp_path / "x.txt")])  # fmt: skip


def test_predict_file_replaces_the_target_test_file_under_do_predict(brussels_model_dir, data_files, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("Brussels\n", encoding="utf-8")
    results = run_xner.main(
        ["--model_name_or_path", str(brussels_model_dir), "--output_dir", str(tmp_path / "out"), "--do_predict",
         "--predict_file", str(texts), "--target_test_file", data_files["target_test_file"], "--use_cpu",
         "--report_to", "none", "--disable_tqdm", "true"]
    )  # fmt: skip
    assert not any(key.startswith("predict_target_test") for key in results)
    assert [record["text"] for record in read_predictions(tmp_path / "out")] == ["Brussels"]


def test_help_groups_the_flags_with_the_method_first(capsys):
    with pytest.raises(SystemExit):
        run_xner.parse_arguments(["--help"])
    text = capsys.readouterr().out
    titles = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles[:4] == ["Method", "Data", "Model", "Teacher -> student self-training"]
    assert titles[-1] == "Trainer (transformers.TrainingArguments)"
    method_section = text.split("\nMethod:\n", 1)[1].split("\n\n", 1)[0]
    assert "--method {source_only," in method_section and "--version" in method_section
    assert "--learning_rate" in text.split("\nTrainer (transformers.TrainingArguments):\n", 1)[1]
    with pytest.raises(SystemExit):
        run_xner.parse_arguments(["--version"])
    assert capsys.readouterr().out.startswith("maral-xner ")


def test_overwrite_output_dir_removes_the_previous_results_before_writing(cli_run, tiny_encoder_dir, tmp_path):
    previous, _ = cli_run
    output_dir = tmp_path / "out"
    shutil.copytree(previous, output_dir)
    (output_dir / "checkpoint-7").mkdir()  # a checkpoint of the earlier run
    data = {"source_train_file": str(tmp_path / "train.json")}
    write_json(tmp_path / "train.json", SOURCE_TRAIN)
    run_xner.main(cli_args(tiny_encoder_dir, data, output_dir, "--do_train", "--max_steps", "1",
                           "--overwrite_output_dir"))  # fmt: skip
    all_results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    assert "train_loss" in all_results and not [key for key in all_results if key.startswith(("predict", "eval"))]
    for stale in ("predictions.jsonl", "predict_results.json", "eval_results.json", "checkpoint-7"):
        assert not (output_dir / stale).exists(), stale
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "target_test" not in card and "source_dev" not in card
