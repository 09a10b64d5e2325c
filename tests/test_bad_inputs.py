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
from data_loading import SpanDataError, SpanDataWarning, load_spans, write_span_json
from modeling_maral import MaralForSpanNER, featurize_words
from objectives import MaralObjective, PseudoLabelStore
from output_layout import TRAINER_STATE_FILE, UnreadableFileError
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
    "top-level object": ('{"context": "a b", "span_posLabel": {}}', r"data.json: the top level is an object"),
    "empty list": ("[]", r"data.json: the list contains no records"),
    "empty file": ("\n\n", r"data.json: the file is empty"),
    "missing span_posLabel": ('[{"context": "a b"}]', r"record 0 \(line 1\): missing key\(s\) 'span_posLabel'"),
    "negative index": ('[{"context": "a b", "span_posLabel": {"-1;0": "PER"}}]', r"record 0 \(line 1\).*negative"),
    "span key without separator": ('[{"context": "a b", "span_posLabel": {"0": "PER"}}]', r"record 0.*span key '0'"),
    "context not a string": ('[{"context": 5, "span_posLabel": {}}]', r"record 0 \(line 1\): 'context' is a number"),
    "span_posLabel a list": ('[{"context": "a b", "span_posLabel": []}]', r"record 0.*'span_posLabel' is a list"),
    "record not an object": ("[5]", r"record 0 \(line 1\): the record is a number"),
    "label not a string": ('[{"context": "a b", "span_posLabel": {"0;0": 5}}]', r"record 0.*span '0;0' has label 5"),
    "span labelled O": ('[{"context": "a b", "span_posLabel": {"0;0": "O"}}]', r"record 0.*labeled 'O'"),
    "extra data after the list": (
        '[{"context": "a b", "span_posLabel": {}}] x',
        r"data.json \(line 1, column 43\): malformed JSON: extra data",
    ),
    "unclosed list": ('[{"context": "a b", "span_posLabel": {}}', r"data.json \(line 1, column 41\).*closed with"),
    "a .json file that is not JSON": (
        "EU B-ORG\nrejects O\n",
        r"data.json \(line 1, column 1\): malformed JSON: the file starts with 'E'.*suffix other than .json",
    ),
}
CONLL_FILE_CASES = {
    "only -DOCSTART-": ("-DOCSTART- O\n\n", r"data.conll: contains only -DOCSTART- records"),
    "CoNLL tag without prefix": ("EU B-ORG\nrejects PER\n", r"data.conll, sentence 0 \(line 2\).*'PER'"),
    "CoNLL line with one column": ("EU B-ORG\nx\n", r"data.conll, sentence 0 \(line 2\): the line has one column"),
}


@pytest.mark.parametrize("case", sorted(DATA_FILE_CASES))
def test_bad_data_files_name_the_place(tmp_path, case):
    text, message = DATA_FILE_CASES[case]
    path = write(tmp_path / "data.json", text)
    with pytest.raises(SpanDataError, match=message):
        load_spans(path, labels=LABELS)


@pytest.mark.parametrize("case", sorted(CONLL_FILE_CASES))
def test_bad_conll_files_name_the_place(tmp_path, case):
    text, message = CONLL_FILE_CASES[case]
    with pytest.raises(SpanDataError, match=message):
        load_spans(write(tmp_path / "data.conll", text), labels=LABELS)


@pytest.mark.parametrize("name", ["missing.json", "a_folder"])
def test_a_data_path_that_is_not_a_file_is_named(tmp_path, name):
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(SpanDataError, match=rf"{name}: (file not found|is a directory)"):
        load_spans(str(tmp_path / name), labels=LABELS)


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
    # Degenerate settings: refused before training, naming the flag.
    "zero temperature": (["--contrastive_temperature=0"], r"`--contrastive_temperature` must be a number > 0; got 0"),
    "negative temperature": (["--contrastive_temperature=-0.5"], r"`--contrastive_temperature` must be a number > 0"),
    "NaN temperature": (["--contrastive_temperature=nan"], r"`--contrastive_temperature` must be a number > 0"),
    "zero epochs with do_train": (
        ["--num_train_epochs=0", "--do_train"],
        r"`--num_train_epochs` must be > 0 to train \(or give --max_steps\); got 0",
    ),
    "zero batch size": (["--per_device_train_batch_size=0"], r"`--per_device_train_batch_size` must be >= 1; got 0"),
    "zero eval batch size": (["--per_device_eval_batch_size=0"], r"`--per_device_eval_batch_size` must be >= 1"),
    "zero accumulation": (["--gradient_accumulation_steps=0"], r"`--gradient_accumulation_steps` must be >= 1"),
    "zero target batch": (["--target_batch_size=0"], r"`--target_batch_size` must be >= 1"),
    "NaN learning rate": (["--learning_rate=nan"], r"`--learning_rate` must be a number > 0; got nan"),
    "negative learning rate": (["--learning_rate=-1e-5"], r"`--learning_rate` must be a number > 0"),
    "infinite head learning rate": (["--head_learning_rate=inf"], r"`--head_learning_rate` must be > 0; got inf"),
    "NaN weight decay": (["--weight_decay=nan"], r"`--weight_decay` must be a number >= 0"),
    "classifier dropout 1": (["--classifier_dropout=1"], r"`--classifier_dropout` must be in \[0, 1\); got 1"),
    "negative classifier dropout": (["--classifier_dropout=-0.1"], r"`--classifier_dropout` must be in \[0, 1\)"),
    "encoder dropout 1.5": (["--encoder_dropout=1.5"], r"`--encoder_dropout` must be in \[0, 1\); got 1.5"),
    "NaN MLM weight": (["--mlm_weight=nan"], r"`--mlm_weight` must be >= 0; got nan"),
    "negative MLM weight": (["--mlm_weight=-1"], r"`--mlm_weight` must be >= 0"),
    "negative student MLM weight": (["--student_mlm_weight=-0.5"], r"`--student_mlm_weight` must be >= 0"),
    "NaN PRAM source weight": (["--pram_source_weight=nan"], r"`--pram_source_weight` must be >= 0"),
    "negative MCL distillation weight": (["--mcl_distill_weight=-1"], r"`--mcl_distill_weight` must be >= 0"),
    "NaN ContProto consistency weight": (
        ["--contproto_consistency_weight=nan"],
        r"`--contproto_consistency_weight` must be >= 0",
    ),
    "zero projection": (["--projection_dim=0"], r"`--projection_dim` must be >= 1"),
    "unknown decoding": (["--decoding=fancy"], r"--decoding.*invalid choice: 'fancy' \(choose from 'greedy'"),
    "unknown eval decoding": (["--eval_decoding=fancy"], r"--eval_decoding.*invalid choice: 'fancy'"),
    "code-switch rate 2": (["--code_switch_rate=2"], r"`--code_switch_rate` must be in \[0, 1\]"),
    "sequence length 2": (["--max_seq_length=2"], r"`--max_seq_length` must be at least 3"),
    "zero eval samples": (["--max_eval_samples=0"], r"`--max_eval_samples` must be a positive number"),
    "zero teacher epochs": (["--teacher_epochs=0"], r"`--teacher_epochs` must be > 0"),
    "EMA momentum 2": (["--ema_start=2"], r"`--ema_start` must be in \[0, 1\]"),
    "zero neighbours": (["--knn_k=0"], r"`--knn_k` must be >= 1"),
    "labels with O not first": (["--labels=LOC,O,PER"], r"`--labels LOC,O,PER`: O \(no entity\) must come first"),
    "repeated label": (["--labels=PER,LOC,PER"], r"`--labels PER,LOC,PER`: PER given more than once"),
    "labels without an entity type": (["--labels=O"], r"`--labels O` names no entity type"),
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
    args = MaralTrainingArguments(str(tmp_path), method="maral", use_cpu=True, report_to="none", ul_tau=5.0)
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


# -- configuration files -------------------------------------------------------------------------------------------

CONFIG_CASES = {
    "bool that is not a bool": ("run.yaml", "do_train: maybe\n", r"run.yaml: key 'do_train': expected true or false"),
    "int that is a word": ("run.yaml", "max_span_width: four\n", r"run.yaml: key 'max_span_width': expected an int"),
    "float that is a word": ("run.json", '{"learning_rate": "fast"}', r"run.json: key 'learning_rate': expected a"),
    "list for a string": ("run.yaml", "labels: [O, PER]\n", r"run.yaml: key 'labels': expected a string"),
    "unknown strategy": ("run.yaml", "save_strategy: sometimes\n", r"run.yaml: key 'save_strategy': expected one of"),
    "unknown key": ("run.json", '{"learning_rat": 1e-4}', r"run.json: unknown key\(s\) learning_rat"),
    "malformed JSON": ("run.json", '{"do_train": true,\n "seed" 1}', r"run.json \(line 2, column 9\): malformed JSON"),
    "malformed YAML": ("run.yaml", "do_train: true\nseed: [1\n", r"run.yaml \(line 6, column 1\): malformed YAML"),
    "top-level list": ("run.json", "[1, 2]", r"run.json: the top level must be a mapping"),
    "degenerate value": ("run.yaml", "contrastive_temperature: 0\n", r"`--contrastive_temperature` must be a number"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_files_name_the_file_and_key(tmp_path, tiny_encoder_dir, case):
    name, text, message = CONFIG_CASES[case]
    prefix = f"model_name_or_path: {tiny_encoder_dir}\noutput_dir: {tmp_path / 'out'}\nuse_cpu: true\n"
    if name.endswith(".yaml"):
        text = prefix + text
    path = write(tmp_path / name, text)
    with pytest.raises(ValueError, match=message):
        run_xner.main([path])
    assert not (tmp_path / "out").exists()


def test_config_values_are_typed(tmp_path):
    text = "model_name_or_path: enc\noutput_dir: out\nlearning_rate: 5e-5\ndo_train: 'false'\nmax_span_width: '3'\n"
    model_args, data_args, training_args, _ = run_xner.parse_arguments([write(tmp_path / "run.yaml", text)])
    assert training_args.learning_rate == 5e-5 and isinstance(training_args.learning_rate, float)
    assert training_args.do_train is False and data_args.max_span_width == 3
    json_text = json.dumps({"model_name_or_path": "enc", "output_dir": "out", "do_train": "false", "seed": "7"})
    _, _, training_args, _ = run_xner.parse_arguments([write(tmp_path / "run.json", json_text)])
    assert training_args.do_train is False and training_args.seed == 7


# -- labels --------------------------------------------------------------------------------------------------------


def test_a_source_file_without_entities_is_refused(tmp_path, tiny_encoder_dir):
    source = write(tmp_path / "plain.json", json.dumps([{"context": "a b c", "span_posLabel": {}}]))
    argv = [f"--model_name_or_path={tiny_encoder_dir}", f"--source_train_file={source}", "--do_train"]
    with pytest.raises(ValueError, match=r"--source_train_file .*plain.json has no entity spans.*only O"):
        run_xner.main([*argv, f"--output_dir={tmp_path / 'out'}", "--use_cpu"])
    assert not (tmp_path / "out").exists()


# -- checkpoints and resuming ----------------------------------------------------------------------------------------


def fake_checkpoint(folder: Path, complete: bool = True) -> Path:
    """A checkpoint folder with the files that make it complete (their content is not read)."""
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        (folder / TRAINER_STATE_FILE).write_bytes(b"")
    return folder


def single_stage_argv(tmp_path: Path, encoder: Path, *extra: str) -> list[str]:
    source = write(tmp_path / "source.json", json.dumps(TINY_SOURCE_RECORDS))
    return [
        f"--model_name_or_path={encoder}",
        f"--source_train_file={source}",
        f"--output_dir={tmp_path / 'out'}",
        "--do_train",
        "--use_cpu",
        "--report_to=none",
        *extra,
    ]


@pytest.mark.parametrize(
    "checkpoint, message",
    [
        ("missing/checkpoint-4", r"--resume_from_checkpoint .*missing/checkpoint-4: no such folder"),
        ("not_a_checkpoint", r"--resume_from_checkpoint .*not_a_checkpoint: not a checkpoint folder"),
        ("torn/checkpoint-4", r"--resume_from_checkpoint .*torn/checkpoint-4: the checkpoint is incomplete"),
    ],
)
def test_an_unusable_explicit_checkpoint_is_refused_before_training(tmp_path, tiny_encoder_dir, checkpoint, message):
    (tmp_path / "not_a_checkpoint").mkdir()
    fake_checkpoint(tmp_path / "torn" / "checkpoint-4", complete=False)
    argv = single_stage_argv(tmp_path, tiny_encoder_dir, f"--resume_from_checkpoint={tmp_path / checkpoint}")
    with pytest.raises(ValueError, match=message):
        run_xner.main(argv)
    assert not (tmp_path / "out").exists()


def test_resume_does_not_bypass_the_non_empty_folder_guard(tmp_path, tiny_encoder_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("a finished model")
    with pytest.raises(ValueError, match=r"out already exists and is not empty and holds nothing that --resume_from"):
        run_xner.main(single_stage_argv(tmp_path, tiny_encoder_dir, "--resume_from_checkpoint=true"))
    other = fake_checkpoint(tmp_path / "other_run" / "checkpoint-2")
    with pytest.raises(ValueError, match=r"out already exists and is not empty"):
        run_xner.main(single_stage_argv(tmp_path, tiny_encoder_dir, f"--resume_from_checkpoint={other}"))
    assert (tmp_path / "out" / "model.safetensors").read_text() == "a finished model"


@pytest.fixture()
def student_pipeline(tmp_path):
    """A self-training pipeline whose fingerprint is known, for the checks of its resume plan (nothing trains)."""

    def build(**overrides) -> SelfTrainingPipeline:
        settings = dict(method="maral", use_cpu=True, report_to="none", resume_from_checkpoint="true")
        args = MaralTrainingArguments(str(tmp_path / "run"), **{**settings, **overrides})
        pipeline = SelfTrainingPipeline(
            args,
            None,
            load_spans(TINY_SOURCE_RECORDS, labels=LABELS),
            load_spans(TINY_TARGET_RECORDS, labels=LABELS, unlabeled=True),
            np.array([50, 3, 2, 3, 4]),
            None,
        )
        pipeline.fingerprint = pipeline._settings_fingerprint()
        return pipeline

    return build


def finish_stage(pipeline: SelfTrainingPipeline, relative: str) -> None:
    folder = pipeline.output_dir / relative
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stage.json").write_text(json.dumps({"fingerprint": pipeline.fingerprint, "metrics": {}}))


@pytest.mark.parametrize(
    "case, message",
    [
        ("outside", r"--resume_from_checkpoint .*elsewhere/checkpoint-2: not a checkpoint of a stage of --output_dir"),
        ("teacher unfinished", r"belongs to stage rounds/round_1, but stage teacher before it is not finished"),
        ("stage finished", r"stage teacher is finished with these settings .* its checkpoint would not be used"),
        ("teacher loaded", r"the teacher is loaded from --teacher_checkpoint, it is not trained"),
        ("other settings", r"the unfinished stage teacher .* was started with other settings, data or teacher"),
    ],
)
def test_a_stage_checkpoint_that_cannot_be_used_is_refused(tmp_path, student_pipeline, case, message):
    run = tmp_path / "run"
    checkpoints = {
        "outside": fake_checkpoint(tmp_path / "elsewhere" / "checkpoint-2"),
        "teacher unfinished": fake_checkpoint(run / "rounds" / "round_1.partial" / "checkpoint-2"),
    }
    teacher_checkpoint = fake_checkpoint(run / "teacher.partial" / "checkpoint-2")
    overrides = {"teacher_checkpoint": str(tmp_path)} if case == "teacher loaded" else {}
    pipeline = student_pipeline(resume_from_checkpoint=str(checkpoints.get(case, teacher_checkpoint)), **overrides)
    if case == "stage finished":
        finish_stage(pipeline, "teacher")
    if case == "other settings":
        (run / "teacher.partial" / "stage_fingerprint.json").write_text(json.dumps({"fingerprint": "other"}))
    with pytest.raises(ValueError, match=message):
        pipeline._resume_plan()


def test_an_explicit_stage_checkpoint_resumes_that_stage_and_retrains_the_later_ones(tmp_path, student_pipeline):
    checkpoint = fake_checkpoint(tmp_path / "run" / "rounds" / "round_1.partial" / "checkpoint-2")
    pipeline = student_pipeline(resume_from_checkpoint=str(checkpoint), self_training_rounds=2)
    finish_stage(pipeline, "teacher")
    assert pipeline._resume_plan() == {"rounds/round_1": str(checkpoint)}


# -- trained models and teachers -------------------------------------------------------------------------------------


def self_training_argv(tmp_path: Path, encoder: Path, *extra: str) -> list[str]:
    source = write(tmp_path / "source.json", json.dumps(TINY_SOURCE_RECORDS))
    target = write(tmp_path / "target.json", json.dumps(TINY_TARGET_RECORDS))
    return [
        f"--model_name_or_path={encoder}",
        f"--source_train_file={source}",
        f"--target_unlabeled_file={target}",
        f"--output_dir={tmp_path / 'out'}",
        f"--labels={','.join(LABELS)}",
        "--method=maral",
        "--do_train",
        "--use_cpu",
        "--report_to=none",
        *extra,
    ]


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory, saved_teacher, tiny_encoder_dir):
    """Model folders that cannot be loaded: empty, an encoder, truncated weights, mistyped or malformed config."""
    root = tmp_path_factory.mktemp("damaged")
    (root / "empty").mkdir()
    folders = {"empty": root / "empty", "encoder": tiny_encoder_dir}
    for name in ("truncated", "mistyped", "malformed"):
        folder = root / name
        folder.mkdir()
        for path in saved_teacher.iterdir():
            if path.is_file():
                (folder / path.name).write_bytes(path.read_bytes())
        folders[name] = folder
    weights = folders["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = json.loads((folders["mistyped"] / "config.json").read_text())
    (folders["mistyped"] / "config.json").write_text(json.dumps({**config, "max_span_width": "four"}))
    (folders["malformed"] / "config.json").write_text('{"model_type": "maral",\n "labels": [}')
    return folders


TEACHER_CASES = {
    "missing": r"--teacher_checkpoint .*no_such_teacher: no such folder",
    "empty": r"--teacher_checkpoint .*empty holds no saved model \(no config.json\)",
    "encoder": r"--teacher_checkpoint .* is not a MARAL span model \(.*config.json has model_type 'bert'\)",
    "truncated": r"--teacher_checkpoint: .*truncated/model.safetensors is damaged",
    "mistyped": r"mistyped/config.json: key 'max_span_width': expected an integer, got 'four'",
    "malformed": r"malformed/config.json \(line 2, column 13\): malformed JSON",
}


@pytest.mark.parametrize("case", sorted(TEACHER_CASES))
def test_an_unusable_teacher_checkpoint_is_refused_by_name_before_training(
    tmp_path, tiny_encoder_dir, damaged_models, case
):
    teacher = damaged_models.get(case, tmp_path / "no_such_teacher")
    with pytest.raises(ValueError, match=TEACHER_CASES[case]):
        run_xner.main(self_training_argv(tmp_path, tiny_encoder_dir, f"--teacher_checkpoint={teacher}"))
    assert not (tmp_path / "out").exists()  # no teacher.partial/ blocks the corrected rerun


@pytest.mark.parametrize("case", ["truncated", "mistyped"])
def test_a_damaged_trained_model_is_named_as_model_name_or_path(tmp_path, damaged_models, case):
    argv = [f"--model_name_or_path={damaged_models[case]}", f"--output_dir={tmp_path / 'out'}", "--use_cpu"]
    with pytest.raises(ValueError, match=rf"{case}/(model.safetensors is damaged|config.json: key 'max_span_width')"):
        run_xner.main(argv)


def test_a_teacher_that_fails_to_load_leaves_no_partial_stage(tmp_path, tiny_encoder_dir):
    args = MaralTrainingArguments(
        str(tmp_path / "run"), method="maral", teacher_checkpoint=str(tmp_path), use_cpu=True, report_to="none"
    )

    def build_model(path):
        raise OSError(f"cannot read {path}")

    source = load_spans(TINY_SOURCE_RECORDS, labels=LABELS)
    target = load_spans(TINY_TARGET_RECORDS, labels=LABELS, unlabeled=True)
    pipeline = SelfTrainingPipeline(args, build_model, source, target, np.array([50, 3, 2, 3, 4]), None)
    with pytest.raises(OSError, match="cannot read"):
        pipeline.run()
    assert not (tmp_path / "run").exists()


def test_a_corrupted_pseudo_label_store_is_named(tmp_path):
    path = write(tmp_path / "pseudo_labels.pt", b"\x80\x04 not a torch file")
    with pytest.raises(UnreadableFileError, match=r"pseudo_labels.pt: cannot be read as a pseudo-label store"):
        PseudoLabelStore.load(path)


def test_predict_refuses_a_batch_size_of_zero(saved_teacher):
    model = MaralForSpanNER.from_pretrained(saved_teacher)
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive number of sentences; got 0"):
        model.predict("Angela Merkel besuchte Paris .", batch_size=0)


# -- the output folder -----------------------------------------------------------------------------------------------


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, tiny_encoder_dir):
    output = write(tmp_path / "out", "a file")
    argv = [*single_stage_argv(tmp_path, tiny_encoder_dir)[:-4], f"--output_dir={output}", "--do_train", "--use_cpu"]
    with pytest.raises(ValueError, match=r"--output_dir .*out is a file, not a folder"):
        run_xner.main(argv)
    assert Path(output).read_text() == "a file"


def test_an_output_dir_that_cannot_be_written_is_refused_before_training(tmp_path, tiny_encoder_dir, monkeypatch):
    trained = []
    monkeypatch.setattr(run_xner, "train", lambda *args, **kwargs: trained.append(True))
    blocked = write(tmp_path / "blocked", "a file")
    argv = single_stage_argv(tmp_path, tiny_encoder_dir)
    argv = [word for word in argv if not word.startswith("--output_dir")] + [f"--output_dir={blocked}/out"]
    with pytest.raises(ValueError, match=r"--output_dir .*blocked/out is not writable"):
        run_xner.main(argv)
    assert not trained


# -- warnings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"knn_k": 5}, r"`--knn_k` is a setting of maral; --method source_only does not use it"),
        ({"teacher_checkpoint": "teacher"}, r"`--teacher_checkpoint` is a setting of self_training, maral"),
        ({"pram_temperature": 0.5, "method": "maral"}, r"`--pram_temperature` is a setting of pram; --method maral"),
    ],
)
def test_method_specific_flags_with_another_method_warn(tmp_path, flags, message):
    with pytest.warns(UserWarning, match=message):
        MaralTrainingArguments(str(tmp_path), use_cpu=True, **flags)


def test_double_spaces_in_a_context_warn_with_the_place():
    records = [{"context": "Peter  visited Paris", "span_posLabel": {"0;0": "PER", "2;2": "LOC"}}]
    with pytest.warns(SpanDataWarning, match=r"record 0\). Span indices count the words of context.split\(\)"):
        dataset = load_spans(records, labels=LABELS)
    assert dataset["tokens"][0] == ["Peter", "visited", "Paris"]


def test_an_unknown_gold_label_in_target_text_warns_instead_of_aborting(tmp_path):
    target = write(tmp_path / "target.json", json.dumps([{"context": "a b", "span_posLabel": {"0;0": "PERSON"}}]))
    with pytest.warns(SpanDataWarning, match=r"target.json: 1 gold span\(s\) have label\(s\) 'PERSON'.*record 0"):
        dataset = load_spans(target, labels=LABELS, unlabeled=True)
    assert dataset["gold_spans"] == [[]] and dataset["tokens"] == [["a", "b"]]


def test_numpy_integer_span_indices_are_accepted():
    records = [{"tokens": ["Peter", "visited", "Paris"], "spans": [{"start": np.int64(2), "end": np.int32(2),
                                                                   "label": "LOC"}]}]  # fmt: skip
    assert load_spans(records, labels=LABELS)["spans"][0] == [{"start": 2, "end": 2, "label": LABELS.index("LOC")}]


def test_a_degenerate_setting_exits_non_zero_from_the_command_line(tmp_path, tiny_encoder_dir):
    import subprocess
    import sys

    argv = single_stage_argv(tmp_path, tiny_encoder_dir, "--contrastive_temperature=0")
    environment = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    completed = subprocess.run(
        [sys.executable, str(Path(run_xner.__file__)), *argv], capture_output=True, text=True, env=environment
    )
    assert completed.returncode != 0
    assert "`--contrastive_temperature` must be a number > 0; got 0.0" in completed.stderr
    assert not (tmp_path / "out").exists()
