"""The `"maral-ner"` pipeline task (`pipeline_maral`): loading by path without remote code, and the same entities as
`MaralForSpanNER.predict` for every input shape and option."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import pipeline

import pipeline_maral
from modeling_maral import MaralForSpanNER
from tests.tiny_models import TINY_LABELS

TEXTS = ["Angela Merkel besuchte Paris .", "El presidente de España viajó a Madrid con Naciones Unidas ."]


@pytest.fixture(scope="module")
def model_dir(tiny_encoder_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS))
    with torch.no_grad():  # every span scores PER: predictions are not empty
        model.span_classifier.output.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0]))
    folder = tmp_path_factory.mktemp("pipeline_model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ner(model_dir):
    return pipeline(pipeline_maral.TASK, model=str(model_dir))  # no trust_remote_code: the installed code is used


@pytest.fixture(scope="module")
def model(model_dir):
    return MaralForSpanNER.from_pretrained(model_dir)


def test_pipeline_loads_the_installed_model_class(ner):
    assert isinstance(ner, pipeline_maral.MaralNERPipeline)
    assert type(ner.model) is MaralForSpanNER
    assert ner.model.tokenizer is ner.tokenizer


def test_pipeline_matches_predict(ner, model):
    assert ner(TEXTS[0]) == model.predict(TEXTS[0])
    assert ner(TEXTS) == model.predict(TEXTS)
    assert ner(TEXTS, batch_size=1, threshold=0.3) == model.predict(TEXTS, batch_size=1, threshold=0.3)
    assert ner(TEXTS[0], decoding="none") == model.predict(TEXTS[0], decoding="none")
    words = TEXTS[1].split()
    assert ner(words, is_split_into_words=True) == model.predict(words, is_split_into_words=True)
    assert ner(TEXTS[0])[0]["label"] == "PER"


def test_pipeline_from_a_model_instance(model):
    ner = pipeline(pipeline_maral.TASK, model=model, tokenizer=model.tokenizer)
    assert ner(TEXTS) == model.predict(TEXTS)


def test_pipeline_rejects_unknown_options(ner):
    with pytest.raises(TypeError, match="aggregation_strategy"):
        ner(TEXTS[0], aggregation_strategy="simple")


def test_pipeline_reads_long_texts_in_windows_like_predict(ner, model):
    long_text = " ".join(TEXTS * 12)
    assert len(model.tokenizer(long_text)["input_ids"]) > model.config.max_seq_length
    entities = ner(long_text, decoding="none")
    assert entities == model.predict(long_text, decoding="none")
    assert max(entity["end"] for entity in entities) > len(long_text) - 5  # the end of the text is read
    assert ner([long_text, ""], stride=0, show_progress_bar=False) == [model.predict(long_text, stride=0), []]


def test_installed_pipeline_is_used_although_config_declares_the_uploaded_one(model_dir):
    declared = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["custom_pipelines"]
    assert set(declared) == {"maral-ner", "token-classification"}
    config = MaralForSpanNER.config_class.from_pretrained(model_dir)
    assert set(config.custom_pipelines) == {"token-classification"}  # "maral-ner" is served by this process
