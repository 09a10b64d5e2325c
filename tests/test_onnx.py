"""ONNX export (`python -m onnx_maral export-onnx`) and the ONNX Runtime inference path: the same entities and
scores as PyTorch on tiny models (MLP and vMF heads), short and long texts. Skipped without the `onnx` extra."""

from __future__ import annotations

import pytest
import torch

import onnx_maral
from modeling_maral import MaralForSpanNER
from tests.tiny_models import TINY_LABELS

pytest.importorskip("onnxruntime", reason=onnx_maral.INSTALL_HINT)
pytest.importorskip("onnxscript", reason=onnx_maral.INSTALL_HINT)

TEXTS = [
    "Angela Merkel besuchte Paris und London mit der UNO .",
    "",
    "EU rejects German call to boycott British lamb .",
    " ".join(["Peter Blackburn visited Brussels on Monday ."] * 40),  # several windows
]


@pytest.fixture(scope="module", params=["mlp", "vmf"])
def exported(request, tiny_encoder_dir, tmp_path_factory):
    """A random tiny model (MLP head, or vMF head with random class statistics), saved and exported."""
    torch.manual_seed(0)
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS)).eval()
    if request.param == "vmf":
        model.config.prediction_head = "vmf"
        generator = torch.Generator().manual_seed(0)
        model.reset_vmf_estimator(0, generator)
        model.vmf_counts[0] = 10.0
    folder = tmp_path_factory.mktemp(f"onnx_{request.param}")
    model.save_pretrained(folder / "model")
    assert onnx_maral.main(["export-onnx", str(folder / "model"), str(folder / "onnx")]) == 0
    return MaralForSpanNER.from_pretrained(folder / "model"), onnx_maral.OnnxMaralForSpanNER.from_pretrained(
        folder / "onnx"
    )


def test_export_writes_a_self_contained_folder(exported, tmp_path):
    _, onnx_model = exported
    assert isinstance(onnx_model.config, type(exported[0].config))
    assert onnx_model.session.get_outputs()[0].name == "probabilities"
    assert [item.name for item in onnx_model.session.get_inputs()] == list(onnx_maral.ONNX_INPUT_NAMES)


@pytest.mark.parametrize("decoding", ["none", "greedy"])
def test_onnx_runtime_gives_the_entities_and_scores_of_pytorch(exported, decoding):
    model, onnx_model = exported
    expected = model.predict(TEXTS, decoding=decoding, batch_size=3)
    got = onnx_model.predict(TEXTS, decoding=decoding, batch_size=3)
    assert sum(map(len, expected)) > 100 and expected[1] == [] and max(e["word_end"] for e in expected[3]) > 200
    for got_entities, expected_entities in zip(got, expected):
        assert [{k: v for k, v in e.items() if k != "score"} for e in got_entities] == [
            {k: v for k, v in e.items() if k != "score"} for e in expected_entities
        ]
        assert [e["score"] for e in got_entities] == pytest.approx([e["score"] for e in expected_entities], abs=1e-4)


def test_onnx_runtime_span_probabilities_match(exported):
    model, onnx_model = exported
    words = [text.split() for text in TEXTS[:3] if text]
    for got, want in zip(onnx_model.predict_words(words), model.predict_words(words)):
        assert (got.span_words == want.span_words).all()
        assert abs(got.probabilities - want.probabilities).max() < 1e-4


def test_missing_extra_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "maral-xner\[onnx\]"'):
        onnx_maral.OnnxMaralForSpanNER.from_pretrained("nowhere")
