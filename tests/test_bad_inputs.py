"""Bad input across data files, flags, configs and models: each case gets a message that says where and what, and
nothing the user had is overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizer

import run_xner
from data_loading import SpanDataError, load_spans, write_span_json
from modeling_maral import MaralForSpanNER, featurize_words
from objectives import MaralObjective, PseudoLabelStore
from self_training_maral import SelfTrainingPipeline
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS
from trainer_maral import MaralTrainingArguments

LABELS = list(TINY_LABELS)


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


# -- data files ---------------------------------------------------------------------------------------------------

DATA_FILE_CASES = {
    "malformed JSON": (
        '[{"context": "a b", "span_posLabel": {}},\n {"context": "c" "span_posLabel": {}}]',
        r"data.json \(line 2, column 18\): malformed JSON: Expecting ','",
    ),
    "span out of range": ('[{"context": "a b", "span_posLabel": {"1;2": "PER"}}]', r"record 0 \(line 1\).*'1;2'"),
    "end before start": ('[{"context": "a b c", "span_posLabel": {"2;1": "PER"}}]', r"record 0 \(line 1\).*'2;1'"),
    "unknown label": ('[{"context": "a b", "span_posLabel": {"0;0": "PERSON"}}]', r"unknown label 'PERSON'"),
    "empty context": ('[{"context": "  ", "span_posLabel": {}}]', r"record 0 \(line 1\): 'context' is empty"),
    "duplicate span key": (
        '[{"context": "a b", "span_posLabel": {"0;0": "PER", "0;0": "LOC"}}]',
        r"record 0 \(line 1\): duplicate key '0;0'",
    ),
    "non-integer span key": ('[{"context": "a b", "span_posLabel": {"0;x": "PER"}}]', r"non-integer index 'x'"),
    "top-level object": ('{"context": "a b", "span_posLabel": {}}', r"the top level is an object"),
    "empty list": ("[]", r"the list contains no records"),
    "empty file": ("\n\n", r"the file is empty"),
    "missing span_posLabel": ('[{"context": "a b"}]', r"missing key\(s\) 'span_posLabel'"),
    "only -DOCSTART-": ("-DOCSTART- O\n\n", r"contains only -DOCSTART- records"),
    "CoNLL tag without prefix": ("EU B-ORG\nrejects PER\n", r"sentence 0 \(line 2\).*'PER'"),
}


@pytest.mark.parametrize("case", sorted(DATA_FILE_CASES))
def test_bad_data_files_name_the_place(tmp_path, case):
    text, message = DATA_FILE_CASES[case]
    path = write(tmp_path / "data.json", text)
    with pytest.raises(SpanDataError, match=message):
        load_spans(path, labels=LABELS)


def test_non_utf8_file_names_the_line_and_the_fix(tmp_path):
    path = write(tmp_path / "latin1.txt", "EU B-ORG\nM\xfcnchen B-LOC\n".encode("latin-1"))
    with pytest.raises(SpanDataError, match=r"latin1.txt \(line 2\): not valid UTF-8.*iconv"):
        load_spans(path)


def test_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path / "bom.json", "\ufeff" + json.dumps(TINY_SOURCE_RECORDS[:2]))
    assert load_spans(path, labels=LABELS)["tokens"][0][0] == "Peter"


def test_zero_width_characters_inside_words_are_removed(tmp_path):
    records = [{"context": "Pe\u200bter visited \u200d Brussels .", "span_posLabel": {"0;0": "PER", "3;3": "LOC"}}]
    with pytest.warns(UserWarning, match="zero-width"):
        dataset = load_spans(records, labels=LABELS)
    assert dataset["tokens"][0] == ["Peter", "visited", "Brussels", "."]
    assert [(span["start"], span["end"]) for span in dataset["spans"][0]] == [(0, 0), (2, 2)]


def test_docstart_separators_are_dropped():
    records = [{"context": "-DOCSTART-", "span_posLabel": {}}, *TINY_SOURCE_RECORDS[:2]]
    dataset = load_spans(records, labels=LABELS)
    assert len(dataset) == 2 and dataset["sentence_id"] == [1, 2]


def test_empty_unlabeled_file_is_refused(tmp_path):
    with pytest.raises(SpanDataError, match=r"empty.json: the file is empty"):
        load_spans(write(tmp_path / "empty.json", ""), labels=LABELS, unlabeled=True)


def test_writing_span_json_never_overwrites_without_consent(tmp_path):
    path = tmp_path / "kept.json"
    path.write_text("user data")
    with pytest.raises(FileExistsError, match="kept.json: the file exists; pass overwrite=True"):
        write_span_json(load_spans(TINY_SOURCE_RECORDS[:1], labels=LABELS), path)
    assert path.read_text() == "user data"


# -- models and tokenizers ------------------------------------------------------------------------------------------


def test_word_longer_than_a_window_is_refused_unless_truncation_is_allowed(tiny_encoder_dir):
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=LABELS, max_seq_length=8)
    long_text = "Peter Blackburn visitedvisitedvisited Brussels on Monday and London on Tuesday ."
    with pytest.raises(ValueError, match=r"inputs\[0\]: word 2 .*max_seq_length=8.*allow_truncation=True"):
        model.predict(long_text)
    with torch.no_grad():  # every span is PER
        model.span_classifier.output.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 9.0]))
    entities = model.predict(long_text, allow_truncation=True, decoding="none")
    assert all(long_text[entity["start"] : entity["end"]] == entity["text"] for entity in entities)
    # every span but those with the long word, which is not read
    assert {entity["word_start"] for entity in entities} == set(range(11)) - {2}
    assert not any(entity["word_start"] <= 2 <= entity["word_end"] for entity in entities)


class WhitespaceSlowTokenizer(PreTrainedTokenizer):
    """A minimal Python ("slow") tokenizer: no `word_ids`, so no word alignment."""

    def __init__(self, **kwargs):
        self.vocab = {"[PAD]": 0, "[UNK]": 1}
        super().__init__(pad_token="[PAD]", unk_token="[UNK]", **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _tokenize(self, text, **kwargs):
        return text.split()

    def _convert_token_to_id(self, token):
        return self.vocab.get(token, 1)

    def _convert_id_to_token(self, index):
        return {value: key for key, value in self.vocab.items()}.get(index, "[UNK]")


def test_slow_tokenizer_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"fast tokenizer is required.*WhitespaceSlowTokenizer.*use_fast=True"):
        featurize_words(WhitespaceSlowTokenizer(), [["Peter", "visited"]], 4, 32)


# -- flags ----------------------------------------------------------------------------------------------------------

FLAG_CASES = {
    "negative tau": (["--tau=-1"], r"`--tau` must be >= 0"),
    "NaN tau": (["--tau=nan"], r"`--tau` must be >= 0; got nan"),
    "NaN ul_tau": (["--ul_tau=nan"], r"`--ul_tau` must be >= 0"),
    "unknown method": (["--method=bert"], r"--method.*invalid choice: 'bert' \(choose from 'source_only'"),
    "zero rounds": (["--self_training_rounds=0"], r"`--self_training_rounds` must be >= 1"),
    "bad pruning": (["--pseudo_label_pruning=some"], r"--pseudo_label_pruning.*invalid choice: 'some'"),
    "mask rate 1": (["--mlm_mask_rate=1"], r"`--mlm_mask_rate` must be in \(0, 1\)"),
    "zero span width": (["--max_span_width=0"], r"`--max_span_width` must be at least 1"),
    "zero samples": (["--max_train_samples=0"], r"`--max_train_samples` must be a positive number"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flags_name_the_flag(tmp_path, tiny_encoder_dir, case):
    flags, message = FLAG_CASES[case]
    argv = [f"--model_name_or_path={tiny_encoder_dir}", f"--output_dir={tmp_path / 'out'}", "--use_cpu", *flags]
    with pytest.raises(ValueError, match=message):
        run_xner.main(argv)
    assert not (tmp_path / "out").exists()


def test_existing_output_folder_is_never_overwritten_without_consent(tmp_path, tiny_encoder_dir):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "model.safetensors").write_text("a trained model")
    source = write(tmp_path / "source.json", json.dumps(TINY_SOURCE_RECORDS))
    argv = [f"--model_name_or_path={tiny_encoder_dir}", f"--source_train_file={source}", f"--output_dir={output_dir}"]
    with pytest.raises(ValueError, match="already exists and is not empty.*--overwrite_output_dir"):
        run_xner.main([*argv, "--do_train", "--use_cpu", "--report_to=none"])
    assert (output_dir / "model.safetensors").read_text() == "a trained model"


def test_both_code_switch_sources_are_refused(tmp_path, tiny_encoder_dir):
    source = write(tmp_path / "source.json", json.dumps(TINY_SOURCE_RECORDS))
    target = write(tmp_path / "target.json", json.dumps(TINY_TARGET_RECORDS))
    argv = [
        f"--model_name_or_path={tiny_encoder_dir}",
        f"--source_train_file={source}",
        f"--target_unlabeled_file={target}",
        f"--output_dir={tmp_path / 'out'}",
        "--method=mcl",
        f"--code_switched_file={source}",
        f"--bilingual_dictionary={source}",
        "--do_train",
        "--use_cpu",
        "--report_to=none",
        "--num_train_epochs=1",
    ]
    with pytest.raises(ValueError, match="either --code_switched_file or --bilingual_dictionary"):
        run_xner.main(argv)


# -- teacher / student consistency ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_teacher(tmp_path_factory, tiny_encoder_dir):
    directory = tmp_path_factory.mktemp("teacher")
    MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=["O", "LOC", "PER"]).save_pretrained(directory)
    return directory


def test_teacher_with_other_labels_is_refused(tmp_path, tiny_encoder_dir, saved_teacher):
    source = write(tmp_path / "source.json", json.dumps(TINY_SOURCE_RECORDS))
    target = write(tmp_path / "target.json", json.dumps(TINY_TARGET_RECORDS))
    argv = [
        f"--model_name_or_path={tiny_encoder_dir}",
        f"--source_train_file={source}",
        f"--target_unlabeled_file={target}",
        f"--output_dir={tmp_path / 'out'}",
        f"--teacher_checkpoint={saved_teacher}",
        f"--labels={','.join(LABELS)}",
        "--method=maral",
        "--do_train",
        "--use_cpu",
        "--report_to=none",
    ]
    with pytest.raises(ValueError, match=r"trained with labels \['O', 'LOC', 'PER'\].*same --labels"):
        run_xner.main(argv)
    assert not (tmp_path / "out" / "teacher").exists(), "a failed stage must not look finished"


def test_labels_flag_differing_from_a_trained_model_is_refused(tmp_path, saved_teacher):
    argv = [f"--model_name_or_path={saved_teacher}", f"--output_dir={tmp_path / 'out'}", "--labels=LOC,ORG"]
    with pytest.raises(ValueError, match=r"--labels \['O', 'LOC', 'ORG'\] differ from the labels"):
        run_xner.main(argv)


def test_a_class_with_zero_pseudo_label_mass_gives_finite_priors(tmp_path):
    probabilities = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.8, 0.0]])  # class 2 never predicted
    store = PseudoLabelStore(
        sentence_ids=torch.tensor([0]),
        span_counts=torch.tensor([3]),
        span_words=torch.tensor([[0, 0], [1, 1], [0, 1]]),
        probabilities=probabilities,
    )
    args = MaralTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", ul_tau=5.0)
    objective = MaralObjective(store, np.array([10, 5, 0]), None, settings=args, num_epochs=2)
    adjustment = args.ul_tau * torch.log(objective.target_prior)
    assert torch.isfinite(adjustment).all() and torch.isfinite(objective.source_log_prior).all()
    assert objective.target_prior[2] > 0


def test_a_failed_stage_leaves_no_output_that_looks_complete(tmp_path, tiny_encoder_dir):
    source = load_spans(TINY_SOURCE_RECORDS, labels=LABELS)
    target = load_spans(TINY_TARGET_RECORDS, labels=LABELS, unlabeled=True)
    args = MaralTrainingArguments(
        output_dir=str(tmp_path / "run"), method="maral", num_train_epochs=1, use_cpu=True, report_to="none"
    )

    def build_model(path):
        if path is not None:
            raise RuntimeError("disk full while loading the teacher")  # fails inside the student stage
        return MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=LABELS)

    pipeline = SelfTrainingPipeline(args, build_model, source, target, np.array([50, 3, 2, 3, 4]), None)
    args.student_init = "teacher"
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.run()
    run = tmp_path / "run"
    assert (run / "teacher" / "stage.json").is_file()
    assert (
        not (run / "rounds" / "round_1").exists() and not (run / "rounds" / "round_1.partial" / "stage.json").exists()
    )
    assert not (run / "config.json").exists()
