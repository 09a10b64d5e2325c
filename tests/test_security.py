"""Loading configs, checkpoints and pseudo-labels never forwards untrusted keys to a loader or runs pickled code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from model_cards.collect import pseudo_label_statistics
from modeling_maral import MaralConfig, MaralForSpanNER
from objectives import PseudoLabelStore
from output_layout import UnreadableFileError
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
    with pytest.raises(UnreadableFileError, match=r"pseudo_labels.pt: cannot be read as a pseudo-label store"):
        PseudoLabelStore.load(path)
    assert pseudo_label_statistics(path, list(TINY_LABELS)) is None  # the model card skips an unreadable store
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    sources = [*REPO_ROOT.glob("*.py"), *REPO_ROOT.glob("data_loading/*.py"), *REPO_ROOT.glob("model_cards/*.py")]
    calls = [line for path in sources for line in path.read_text().splitlines() if "torch.load(" in line]
    assert calls and all("weights_only=True" in line for line in calls), calls


def test_saved_files_carry_no_remote_code_key_or_local_path_of_the_encoder(tmp_path, tiny_encoder_dir):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    for path in tiny_encoder_dir.iterdir():
        (encoder / path.name).write_bytes(path.read_bytes())
    for name, key in (("config.json", "AutoModel"), ("tokenizer_config.json", "AutoTokenizer")):
        content = json.loads((encoder / name).read_text())
        content.update(trust_remote_code=True, auto_map={key: UNTRUSTED["auto_map"]["AutoModel"]})
        (encoder / name).write_text(json.dumps(content))
    saved = tmp_path / "saved"
    MaralForSpanNER.from_encoder(str(encoder), labels=list(TINY_LABELS)).save_pretrained(saved)
    config = json.loads((saved / "config.json").read_text())
    tokenizer_config = json.loads((saved / "tokenizer_config.json").read_text())
    assert not {"trust_remote_code", "auto_map", "_name_or_path"} & set(config["encoder_config"])
    assert set(config["auto_map"].values()) == {"modeling_maral.MaralConfig", "modeling_maral.MaralForSpanNER"}
    assert not {"trust_remote_code", "auto_map"} & set(tokenizer_config)
    assert str(encoder) not in (saved / "config.json").read_text() + (saved / "tokenizer_config.json").read_text()


@pytest.mark.parametrize(
    "key", ["hub_token", "HF_TOKEN", "wandb_api_key", "db_password", "client_secret", "access_token", "HUB_TOKEN"]
)
def test_credential_keys_are_redacted_for_cards(key):
    from model_cards.collect import command_line, redact

    settings = redact({key: "value-1", "nested": {key: "value-2"}, "tokenizer_name": "kept"})
    assert settings == {key: "<redacted>", "nested": {key: "<redacted>"}, "tokenizer_name": "kept"}
    command = command_line([f"--{key}", "value-3", f"--{key}=value-4", "--seed", "1"])
    assert "value-3" not in command and "value-4" not in command and "--seed 1" in command


def test_token_values_and_absolute_paths_are_never_published():
    from model_cards.collect import command_line, redact

    secret = "hf_abcdefghijklmnopqrstuvwxyz012345"
    assert redact({"note": f"uses {secret}"}) == {"note": "uses <redacted>"}
    assert redact({"train_file": "/data/private/en_train.json"}) == {"train_file": "<local>/en_train.json"}
    command = command_line(["--output_dir=/home/user/runs/de", "--model_name_or_path", "/models/e5"])
    assert "/home/user" not in command and "--output_dir=<local>/de" in command and "<local>/e5" in command
