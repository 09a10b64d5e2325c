"""Loading configs, checkpoints and pseudo-labels never forwards untrusted keys to a loader or runs pickled code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import transformers

from model_cards.collect import pseudo_label_statistics
from modeling_maral import MaralConfig, MaralForSpanNER
from objectives import PseudoLabelStore
from tests.tiny_models import TINY_LABELS

REPO_ROOT = Path(__file__).resolve().parents[1]
UNTRUSTED = {
    "trust_remote_code": True,
    "auto_map": {"AutoModel": "attacker/repo--modeling_evil.EvilModel"},
    "_name_or_path": "attacker/repo",
    "custom_pipelines": {"ner": {"impl": "evil.Pipeline"}},
}


@pytest.fixture()
def tampered_model_dir(tmp_path, tiny_encoder_dir):
    """A saved MARAL model whose nested encoder config was edited to carry remote-code keys."""
    MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS)).save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["encoder_config"].update(UNTRUSTED)
    config_file.write_text(json.dumps(config))
    return tmp_path


def test_nested_encoder_config_drops_remote_code_keys(tampered_model_dir):
    config = MaralConfig.from_pretrained(tampered_model_dir)
    nested = config.encoder_config.to_dict()
    assert not set(UNTRUSTED) & {key for key, value in nested.items() if value}
    assert getattr(config.encoder_config, "auto_map", None) is None


def test_loading_a_tampered_model_never_asks_a_loader_for_remote_code(tampered_model_dir, monkeypatch):
    calls = []
    for auto_class in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModel):
        original = auto_class.from_pretrained.__func__

        def recording(cls, *args, _original=original, **kwargs):
            calls.append((cls.__name__, kwargs.get("trust_remote_code")))
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", classmethod(recording))
    model = MaralForSpanNER.from_pretrained(tampered_model_dir)
    assert model.tokenizer is not None  # loads the tokenizer lazily, through AutoTokenizer
    assert calls, "the tokenizer load must go through a recorded loader"
    assert all(trust is not True for _, trust in calls), calls
    saved = tampered_model_dir / "resaved"
    model.save_pretrained(saved)
    assert "trust_remote_code" not in json.loads((saved / "config.json").read_text())["encoder_config"]


class Payload:
    """Pickled code that would leave a marker file if it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_in_pseudo_labels_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pseudo_labels.pt"
    torch.save({"probabilities": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        PseudoLabelStore.load(path)
    assert pseudo_label_statistics(path, list(TINY_LABELS)) is None  # the model card skips an unreadable store
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    sources = [*REPO_ROOT.glob("*.py"), *REPO_ROOT.glob("data_loading/*.py"), *REPO_ROOT.glob("model_cards/*.py")]
    calls = [line for path in sources for line in path.read_text().splitlines() if "torch.load(" in line]
    assert calls and all("weights_only=True" in line for line in calls), calls
