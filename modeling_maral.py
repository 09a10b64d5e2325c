# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""MARAL span-NER model: configuration, span features, model, decoding and `predict`.

This file is uploaded next to `config.json` on the Hugging Face Hub so that

    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("user/maral-xner-de", trust_remote_code=True)
    >>> model.predict("Angela Merkel besuchte Paris .")
    [{'text': 'Angela Merkel', 'label': 'PER', 'score': 0.99, 'start': 0, 'end': 13, ...}, ...]

works without installing anything. It therefore imports only `torch`, `numpy` (a dependency of both) and
`transformers`.

Data flow: words -> `featurize_words` (subword alignment, span enumeration, span features) -> `collate_span_features`
(padded tensors) -> `MaralForSpanNER.forward` (span logits and projections) -> `decode_spans` (entities).

Method: Zhu et al., "Large Margin Representation Learning for Robust Cross-lingual Named Entity Recognition",
ACL 2025. The span representation follows the SpanNER design used there: start and end subword states, a
subword-width bucket embedding, a word-length embedding and summed per-word morphology embeddings.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import shutil
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, logging

__version__ = "0.1.0"

logger = logging.get_logger(__name__)

OUTSIDE_LABEL = "O"
DECODING_MODES = ("greedy", "legacy", "none")
DEFAULT_MAX_SPAN_WIDTH = 4
"""Longest span in words (the paper's 4); a trained model keeps its own (its width embeddings depend on it)."""
DEFAULT_MAX_SEQ_LENGTH = 128
"""Subword budget per sentence, special tokens included."""
PREDICTION_HEADS = ("mlp", "vmf")
# Keys of a loaded nested config that must never reach a loader (remote-code and hub-resolution keys).
UNSAFE_ENCODER_CONFIG_KEYS = ("trust_remote_code", "auto_map", "_name_or_path", "name_or_path", "custom_pipelines")
# The `pipeline()` task of MARAL models, and the file beside this one that implements it (uploaded with the model
# and declared in `config.json` under `custom_pipelines`, also for the Hub's `token-classification` pipeline tag).
PIPELINE_TASK = "maral-ner"
PIPELINE_TASKS = (PIPELINE_TASK, "token-classification")
PIPELINE_MODULE = "pipeline_maral"
PIPELINE_CLASS = "MaralNERPipeline"
# Keys of a saved tokenizer_config.json that would make a loader fetch code or resolve the source's path.
UNSAFE_TOKENIZER_KEYS = ("trust_remote_code", "auto_map", "name_or_path", "_name_or_path")
# Batch keys consumed by `MaralForSpanNER.forward`; collators may add others (labels, word indices, ids).
MODEL_INPUT_NAMES = (
    "input_ids",
    "attention_mask",
    "span_token_starts",
    "span_token_ends",
    "span_word_lengths",
    "span_morph_ids",
    "span_mask",
)

# Morphology categories of a word (§2.9 of the method notes), tested in this order.
MORPH_PAD, MORPH_UPPER, MORPH_LOWER, MORPH_TITLE, MORPH_DIGIT, MORPH_OTHER = range(6)
NUM_MORPH_IDS = 6
# Scripts written without spaces between words, whose raw text `split_into_words` cuts into characters: Han (with
# the ideographic iteration and number marks), Hiragana, Katakana (with its half-width forms), Thai, Lao, Khmer and
# Myanmar. Inclusive code point ranges.
NO_SPACE_SCRIPT_RANGES = (
    (0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF), (0x20000, 0x323AF),  # Han
    (0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F),  # Hiragana, Katakana
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF),  # Thai, Lao
    (0x1780, 0x17FF), (0x19E0, 0x19FF),  # Khmer
    (0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F),  # Myanmar
)  # fmt: skip
_NO_SPACE_CHARACTERS = "".join(f"{chr(first)}-{chr(last)}" for first, last in NO_SPACE_SCRIPT_RANGES)
NO_SPACE_CHARACTER = re.compile(f"[{_NO_SPACE_CHARACTERS}]")
# Raw-text word splitting for `predict`: single characters of the scripts above, runs of other letters/digits
# (inner hyphens, apostrophes and dots kept, as in "U.S.", "co-operation", "don't") and single other non-space
# characters (punctuation). Combining marks are glued back to their letters by `split_into_words`.
_LETTERS = rf"[^\W{_NO_SPACE_CHARACTERS}]+"
WORD_PATTERN = re.compile(rf"[{_NO_SPACE_CHARACTERS}]|{_LETTERS}(?:[-'’.]{_LETTERS})*|[^\w\s]")


class MaralConfig(PretrainedConfig):
    r"""Configuration of a [`MaralForSpanNER`] model.

    Args:
        encoder_config (`dict` or `PretrainedConfig`, *optional*):
            Configuration of the transformer encoder (any BERT/XLM-R-family model known to `AutoConfig`). Loaded
            dictionaries are stripped of remote-code keys (`trust_remote_code`, `auto_map`, ...) before use. Defaults
            to a default `BertConfig`.
        labels (`list[str]`, *optional*, defaults to `["O"]`):
            Span labels, `"O"` (no entity) first. `id2label`/`label2id` are derived from it.
        max_span_width (`int`, *optional*, defaults to 4):
            Longest span, in words, that is enumerated and can be predicted.
        max_seq_length (`int`, *optional*, defaults to 128):
            Subword budget per sentence, special tokens included. Spans ending past it are not scored.
        num_width_buckets (`int`, *optional*, defaults to 4):
            Rows of the subword-width embedding; the width `end_subword - start_subword` is clamped to the last row.
        width_embedding_dim (`int`, *optional*, defaults to 50):
            Size of the subword-width embedding.
        length_embedding_dim (`int`, *optional*, defaults to 100):
            Size of the word-length embedding (0 disables it).
        morphology_embedding_dim (`int`, *optional*, defaults to 100):
            Size of the morphology embedding, summed over the words of a span (0 disables it).
        classifier_dropout (`float`, *optional*, defaults to 0.2):
            Dropout on the span representation and inside the MLP heads.
        projection_dim (`int`, *optional*, defaults to 64):
            Size of the L2-normalised projection used by the contrastive (vMF) head.
        contrastive_temperature (`float`, *optional*, defaults to 0.07):
            Contrastive temperature `T` of the vMF head.
        prediction_head (`str`, *optional*, defaults to `"mlp"`):
            Which scores `predict` and evaluation use: `"mlp"` (the span classifier) or `"vmf"` (the distribution
            -modelling head trained by MARAL's student stage; its class statistics are buffers of the model).
        decoding (`str`, *optional*, defaults to `"greedy"`):
            Default overlap resolution: `"greedy"` (non-overlapping, by descending score), `"legacy"` (the upstream
            heuristic) or `"none"` (overlaps kept).
        o_logit_offset (`float`, *optional*, defaults to 0.0):
            Nats subtracted from the `O` logit before the softmax whenever the model predicts (`predict`, evaluation,
            pseudo-labelling, ONNX). Self-training with `--target_entity_floor` sets it, without target labels, when
            the trained model finds too few entities in the target text; 0 keeps the head's own decisions.
        vmf_kappa_max (`float`, *optional*, defaults to 1e5):
            Upper clamp of the vMF concentrations κ (negative or overflowing estimates are set to it, as upstream).
        vmf_legacy_bessel (`bool`, *optional*, defaults to `False`):
            Compute `log I_ν` with the reference code's Miller recurrence (inexact for κ ≳ 500) instead of the
            exact float64 uniform asymptotic expansion.
        vmf_clip_gradient (`bool`, *optional*, defaults to `True`):
            Clip the Bessel ratio `I_{ν+1}/I_ν` in the backward pass at 1, as the reference code does.
        use_mlm_head (`bool`, *optional*, defaults to `True`):
            Whether the model has a masked-LM head (tied to the input embeddings) for the target-text MLM auxiliary.
        source_language (`str`, *optional*):
            Language code of the labelled training data, for model cards.
        target_language (`str`, *optional*):
            Language code of the unlabelled target text, for model cards.

    A saved model declares its pipeline file in `custom_pipelines` (see `custom_pipelines_declaration`); tasks that
    an installed `pipeline_maral` already serves in this process are dropped from it when the config is loaded.

    Example:

        >>> from transformers import BertConfig
        >>> config = MaralConfig(encoder_config=BertConfig(hidden_size=32, num_hidden_layers=2,
        ...     num_attention_heads=2, intermediate_size=64), labels=["O", "PER", "LOC"])
        >>> config.num_labels
        3
    """

    model_type = "maral"

    def __init__(
        self,
        encoder_config: dict | PretrainedConfig | None = None,
        labels: list[str] | None = None,
        max_span_width: int = DEFAULT_MAX_SPAN_WIDTH,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        num_width_buckets: int = 4,
        width_embedding_dim: int = 50,
        length_embedding_dim: int = 100,
        morphology_embedding_dim: int = 100,
        classifier_dropout: float = 0.2,
        projection_dim: int = 64,
        contrastive_temperature: float = 0.07,
        prediction_head: str = "mlp",
        decoding: str = "greedy",
        o_logit_offset: float = 0.0,
        vmf_kappa_max: float = 1e5,
        vmf_legacy_bessel: bool = False,
        vmf_clip_gradient: bool = True,
        use_mlm_head: bool = True,
        source_language: str | None = None,
        target_language: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.encoder_config = build_encoder_config(encoder_config)
        labels = list(labels) if labels is not None else _labels_from_id2label(kwargs.get("id2label"))
        validate_labels(labels)
        self.labels = labels
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {label: index for index, label in enumerate(labels)}
        _check_choice("prediction_head", prediction_head, PREDICTION_HEADS)
        _check_choice("decoding", decoding, DECODING_MODES)
        check_span_limits(max_span_width, max_seq_length)
        self.max_span_width = max_span_width
        self.max_seq_length = max_seq_length
        self.num_width_buckets = num_width_buckets
        self.width_embedding_dim = width_embedding_dim
        self.length_embedding_dim = length_embedding_dim
        self.morphology_embedding_dim = morphology_embedding_dim
        self.classifier_dropout = classifier_dropout
        self.projection_dim = projection_dim
        self.contrastive_temperature = contrastive_temperature
        self.prediction_head = prediction_head
        self.decoding = decoding
        self.o_logit_offset = float(o_logit_offset)
        self.vmf_kappa_max = vmf_kappa_max
        self.vmf_legacy_bessel = vmf_legacy_bessel
        self.vmf_clip_gradient = vmf_clip_gradient
        self.use_mlm_head = use_mlm_head
        self.source_language = source_language
        self.target_language = target_language
        self.maral_version = kwargs.pop("maral_version", __version__)
        if "custom_pipelines" in kwargs:
            kwargs["custom_pipelines"] = _without_installed_pipelines(kwargs["custom_pipelines"])
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as saved: the nested encoder config without remote-code keys or the local path it was
        loaded from (`UNSAFE_ENCODER_CONFIG_KEYS`), whatever the encoder's own config.json held."""
        output = super().to_dict()
        if isinstance(output.get("encoder_config"), dict):
            output["encoder_config"] = {
                key: value for key, value in output["encoder_config"].items() if key not in UNSAFE_ENCODER_CONFIG_KEYS
            }
        return output

    @property
    def span_representation_size(self) -> int:
        """Size of the concatenated span representation `[h_start; h_end; width; length; morphology]`."""
        return (
            2 * self.encoder_config.hidden_size
            + self.width_embedding_dim
            + self.length_embedding_dim
            + self.morphology_embedding_dim
        )


def check_span_limits(max_span_width: int | None, max_seq_length: int | None, flag_prefix: str = "") -> None:
    """The one check of the span limits (`None` means "not given"); errors name `f"{flag_prefix}max_span_width"`.

    Raises:
        ValueError: when `max_span_width < 1` or `max_seq_length < 3` (two special tokens and a word).
    """
    if max_span_width is not None and max_span_width < 1:
        raise ValueError(f"`{flag_prefix}max_span_width` must be at least 1; got {max_span_width}.")
    if max_seq_length is not None and max_seq_length < 3:
        raise ValueError(
            f"`{flag_prefix}max_seq_length` must be at least 3 (two special tokens and a word); got {max_seq_length}."
        )


def custom_pipelines_declaration() -> dict[str, dict[str, Any]]:
    """The `custom_pipelines` entry of `config.json`: the `pipeline()` tasks served by the uploaded pipeline file."""
    impl = f"{PIPELINE_MODULE}.{PIPELINE_CLASS}"
    return {task: {"impl": impl, "pt": ["AutoModel"], "type": "text"} for task in PIPELINE_TASKS}


def _without_installed_pipelines(custom_pipelines: dict[str, Any]) -> dict[str, Any]:
    """`custom_pipelines` without the tasks that a MARAL pipeline registered in this process already serves.

    Where `pipeline_maral` is imported (maral-xner installed), `pipeline("maral-ner", model=...)` thus uses the
    installed code without `trust_remote_code`; elsewhere the uploaded pipeline file serves the task.
    """
    registry = getattr(sys.modules.get("transformers.pipelines"), "PIPELINE_REGISTRY", None)
    served = registry.supported_tasks if registry is not None else {}
    return {
        task: info
        for task, info in custom_pipelines.items()
        if getattr(served.get(task, {}).get("impl"), "__name__", None) != PIPELINE_CLASS
    }


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}.")


def _labels_from_id2label(id2label: dict | None) -> list[str]:
    if not id2label:
        return [OUTSIDE_LABEL]
    return [id2label[key] for key in sorted(id2label, key=int)]


def validate_labels(labels: list[str]) -> None:
    """Checks that `labels` is a list of distinct strings starting with `"O"`.

    Raises:
        ValueError: naming the offending entry.
    """
    if not labels or labels[0] != OUTSIDE_LABEL:
        raise ValueError(f"`labels` must start with {OUTSIDE_LABEL!r} (no entity); got {labels!r}.")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"`labels` contains duplicates: {duplicates}.")
    if not all(isinstance(label, str) and label for label in labels):
        raise ValueError(f"`labels` must be non-empty strings; got {labels!r}.")


def build_encoder_config(encoder_config: dict | PretrainedConfig | None) -> PretrainedConfig:
    """Builds the nested encoder configuration without forwarding untrusted keys to any loader.

    Only model types known to this `transformers` installation are accepted (no remote code).
    """
    if encoder_config is None:
        return AutoConfig.for_model("bert")
    if isinstance(encoder_config, PretrainedConfig):
        return encoder_config
    if not isinstance(encoder_config, dict) or "model_type" not in encoder_config:
        raise ValueError("`encoder_config` must be a `PretrainedConfig` or a dict with a `model_type` key.")
    safe = {key: value for key, value in encoder_config.items() if key not in UNSAFE_ENCODER_CONFIG_KEYS}
    model_type = safe.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **safe)
    except ValueError as error:
        raise ValueError(
            f"Unknown encoder model type {model_type!r} in `encoder_config`; use a BERT/XLM-R-family encoder."
        ) from error


# ---------------------------------------------------------------------------------------------------------------
# Span features
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def enumerate_spans(num_words: int, max_span_width: int) -> np.ndarray:
    """All word spans of width 1..`max_span_width`, ordered by start then end.

    Returns:
        `np.ndarray` of shape `(num_spans, 2)` with inclusive `(start, end)` word indices; `4n - 6` rows for
        `n >= 4` words at width 4. The array is cached: do not modify it.

    Example:
        >>> enumerate_spans(3, 2).tolist()
        [[0, 0], [0, 1], [1, 1], [1, 2], [2, 2]]
    """
    starts = np.repeat(np.arange(num_words), max_span_width)
    ends = starts + np.tile(np.arange(max_span_width), num_words)
    valid = ends < num_words
    spans = np.stack([starts[valid], ends[valid]], axis=1).astype(np.int64)
    spans.setflags(write=False)
    return spans


@functools.lru_cache(maxsize=1024)
def span_index_offsets(num_words: int, max_span_width: int) -> np.ndarray:
    """Index of the first enumerated span starting at each word: span `(s, e)` is row `offsets[s] + e - s`.

    The array is cached: do not modify it.
    """
    per_start = np.minimum(max_span_width, num_words - np.arange(num_words))
    offsets = np.concatenate([[0], np.cumsum(per_start)[:-1]]).astype(np.int64)
    offsets.setflags(write=False)
    return offsets


def morphology_id(word: str) -> int:
    """Morphology category of a word: upper 1, lower 2, title 3, digits 4, other 5 (Python `str` predicates)."""
    if word.isupper():
        return MORPH_UPPER
    if word.islower():
        return MORPH_LOWER
    if word.istitle():
        return MORPH_TITLE
    if word.isdigit():
        return MORPH_DIGIT
    return MORPH_OTHER


def lone_piece_id(tokenizer) -> int | None:
    """Id of a stand-alone word-boundary piece (XLM-R's `▁`), which never starts a span; `None` if absent."""
    piece_id = tokenizer.convert_tokens_to_ids("▁")
    if piece_id is None or piece_id == tokenizer.unk_token_id:
        return None
    return int(piece_id)


def word_subword_boundaries(word_ids: list[int | None], input_ids: list[int], num_words: int, skip_id: int | None):
    """First and last subword of every word (-1 for a word without subwords).

    The first subword skips a stand-alone `skip_id` piece (XLM-R's `▁`) when the word has another piece.
    """
    word_index = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
    positions = np.arange(len(word_index), dtype=np.int64)
    in_word = word_index >= 0
    last = np.full(num_words, -1, dtype=np.int64)
    np.maximum.at(last, word_index[in_word], positions[in_word])
    sentinel = len(word_index)
    first_any = np.full(num_words, sentinel, dtype=np.int64)
    np.minimum.at(first_any, word_index[in_word], positions[in_word])
    first = first_any.copy()
    if skip_id is not None:
        content = in_word & (np.asarray(input_ids, dtype=np.int64) != skip_id)
        first_content = np.full(num_words, sentinel, dtype=np.int64)
        np.minimum.at(first_content, word_index[content], positions[content])
        first = np.where(first_content < sentinel, first_content, first_any)
    first[first == sentinel] = -1
    return first, last


@dataclass
class SentenceFeatures:
    """Span features of one sentence, before padding.

    Attributes:
        input_ids: subword ids, special tokens included, at most `max_seq_length` long.
        span_words: `(K, 2)` inclusive word indices of the kept (scorable) spans, in enumeration order.
        span_tokens: `(K, 2)` first/last subword position of each kept span.
        morph_ids: `(K, max_span_width)` morphology ids of the words of each span (0 = padding).
        enumerated_index: `(K,)` row of each kept span in `enumerate_spans(num_words, max_span_width)`.
        num_words: number of words.
        num_dropped_spans: enumerated spans that were dropped because they end past `max_seq_length`.
        first_unread_word: index of the first word that does not fit `max_seq_length` (`num_words` if all fit).
    """

    input_ids: list[int]
    span_words: np.ndarray
    span_tokens: np.ndarray
    morph_ids: np.ndarray
    enumerated_index: np.ndarray
    num_words: int
    num_dropped_spans: int
    first_unread_word: int


def featurize_words(
    tokenizer, batch_words: list[list[str]], max_span_width: int, max_seq_length: int
) -> list[SentenceFeatures]:
    """Tokenizes pre-split sentences and computes the features of every scorable span.

    Sentences are tokenized whole and then cut to `max_seq_length` (the final special token is kept), so a span
    is kept only when all of its subwords fit; the others are counted in `num_dropped_spans`.

    Args:
        tokenizer: a fast tokenizer (it must provide `word_ids`).
        batch_words: sentences as lists of words.
        max_span_width: longest span in words.
        max_seq_length: subword budget, special tokens included.
    """
    _require_fast_tokenizer(tokenizer)
    encoding = tokenizer(
        batch_words, is_split_into_words=True, add_special_tokens=True, truncation=False, verbose=False
    )
    skip_id = lone_piece_id(tokenizer)
    return [
        _featurize_sentence(
            words, encoding["input_ids"][index], encoding.word_ids(index), max_span_width, max_seq_length, skip_id
        )
        for index, words in enumerate(batch_words)
    ]


def _require_fast_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"A fast tokenizer is required for word alignment; got {type(tokenizer).__name__}. "
            "Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
        )


def _featurize_sentence(
    words: list[str],
    input_ids: list[int],
    word_ids: list[int | None],
    max_span_width: int,
    max_seq_length: int,
    skip_id: int | None,
) -> SentenceFeatures:
    num_words = len(words)
    first, last = word_subword_boundaries(word_ids, input_ids, num_words, skip_id)
    spans = enumerate_spans(num_words, max_span_width)
    token_starts, token_ends = first[spans[:, 0]], last[spans[:, 1]]
    # The last position is reserved for the closing special token.
    fits = (token_starts >= 0) & (token_ends >= 0) & (token_ends < max_seq_length - 1)
    kept = np.flatnonzero(fits)
    if len(input_ids) > max_seq_length:
        input_ids = input_ids[: max_seq_length - 1] + input_ids[-1:]
    unread = np.flatnonzero(last >= max_seq_length - 1)
    word_morph = np.array([MORPH_PAD] + [morphology_id(word) for word in words], dtype=np.int64)
    slots = spans[kept, :1] + np.arange(max_span_width)[None, :]
    slot_valid = slots <= spans[kept, 1:2]
    morph_ids = np.where(slot_valid, word_morph[np.minimum(slots, num_words - 1) + 1], MORPH_PAD)
    return SentenceFeatures(
        input_ids=list(input_ids),
        span_words=spans[kept],
        span_tokens=np.stack([token_starts[kept], token_ends[kept]], axis=1),
        morph_ids=morph_ids,
        enumerated_index=kept,
        num_words=num_words,
        num_dropped_spans=int(len(spans) - len(kept)),
        first_unread_word=int(unread[0]) if len(unread) else num_words,
    )


def collate_span_features(sentences: list[SentenceFeatures], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pads a batch of `SentenceFeatures` into the model's input tensors (plus `span_words` for decoding)."""
    batch_size = len(sentences)
    seq_len = max(len(sentence.input_ids) for sentence in sentences)
    num_spans = max(1, max(len(sentence.span_words) for sentence in sentences))
    width = sentences[0].morph_ids.shape[1] if sentences[0].morph_ids.ndim == 2 else 1
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
    span_tokens = torch.zeros((batch_size, num_spans, 2), dtype=torch.long)
    span_words = torch.zeros((batch_size, num_spans, 2), dtype=torch.long)
    morph_ids = torch.zeros((batch_size, num_spans, width), dtype=torch.long)
    span_mask = torch.zeros((batch_size, num_spans), dtype=torch.bool)
    for row, sentence in enumerate(sentences):
        length, count = len(sentence.input_ids), len(sentence.span_words)
        input_ids[row, :length] = torch.as_tensor(sentence.input_ids)
        attention_mask[row, :length] = 1
        if count:
            span_tokens[row, :count] = torch.from_numpy(sentence.span_tokens)
            span_words[row, :count] = torch.from_numpy(np.ascontiguousarray(sentence.span_words))
            morph_ids[row, :count] = torch.from_numpy(sentence.morph_ids)
            span_mask[row, :count] = True
    word_lengths = torch.where(span_mask, span_words[..., 1] - span_words[..., 0] + 1, 0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "span_token_starts": span_tokens[..., 0],
        "span_token_ends": span_tokens[..., 1],
        "span_word_lengths": word_lengths,
        "span_morph_ids": morph_ids,
        "span_mask": span_mask,
        "span_words": span_words,
    }


def split_into_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Splits raw text into words and punctuation marks, with character offsets (end exclusive).

    Words are runs of letters and digits (keeping inner hyphens, apostrophes and dots) and every other non-space
    character is a word of its own, matching CoNLL-style tokenization. Text in scripts written without spaces (Han,
    Hiragana/Katakana, Thai, Lao, Khmer, Myanmar; `NO_SPACE_SCRIPT_RANGES`) is split into characters, as the
    character-split WikiANN `zh` data the models are evaluated on; space-separated words around it stay whole. A
    combining mark (a Devanagari or Thai vowel sign, a virama, ...) stays with the letter before it.

    Example:
        >>> split_into_words("Merkel (CDU) visits U.S.")[0]
        ['Merkel', '(', 'CDU', ')', 'visits', 'U.S', '.']
        >>> split_into_words("我在Paris工作。")[0]
        ['我', '在', 'Paris', '工', '作', '。']
    """
    offsets: list[tuple[int, int]] = []
    for match in WORD_PATTERN.finditer(text):
        start, end = match.span()
        if offsets and offsets[-1][1] == start and _continues_word(text[start - 1], text[start]):
            offsets[-1] = (offsets[-1][0], end)
        else:
            offsets.append((start, end))
    return [text[start:end] for start, end in offsets], offsets


def _continues_word(previous: str, char: str) -> bool:
    """Whether `char`, right after `previous`, belongs to the same word: it is a combining mark, or a letter after
    a combining mark outside the no-space scripts (the rest of a Devanagari word after a vowel sign)."""
    if unicodedata.category(char).startswith("M"):
        return True
    return (
        unicodedata.category(previous).startswith("M")
        and (char.isalnum() or char == "_")
        and not NO_SPACE_CHARACTER.match(char)
    )


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text of pre-split words joined by single spaces, and each word's character offsets in it.

    Example:
        >>> join_words(["Angela", "Merkel", "."])
        ('Angela Merkel .', [(0, 6), (7, 13), (14, 15)])
    """
    starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]]).tolist() if words else []
    return " ".join(words), [(start, start + len(word)) for start, word in zip(starts, words)]


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


def decode_span_indices(
    span_words: np.ndarray, probabilities: np.ndarray, mode: str = "greedy", threshold: float = 0.0
) -> list[int]:
    """Rows of the spans kept as entities (see `decode_spans`), sorted by start then end."""
    labels = probabilities.argmax(axis=1)
    scores = probabilities[np.arange(len(labels)), labels]
    candidates = np.flatnonzero((labels != 0) & (scores >= threshold))
    return resolve_overlaps(span_words, scores, candidates, mode)


def resolve_overlaps(span_words: np.ndarray, scores: np.ndarray, candidates: np.ndarray, mode: str) -> list[int]:
    """The `candidates` (rows of `span_words`, in enumeration order) kept by overlap resolution `mode` (see
    `decode_spans`), sorted by start then end."""
    _check_choice("decoding", mode, DECODING_MODES)
    if mode == "greedy":
        chosen = _greedy_non_overlapping(span_words, scores, candidates)
    elif mode == "legacy":
        chosen = _legacy_prune(span_words, scores, candidates)
    else:
        chosen = [int(k) for k in candidates]
    return sorted(chosen, key=lambda k: (span_words[k, 0], span_words[k, 1]))


def decode_spans(
    span_words: np.ndarray, probabilities: np.ndarray, mode: str = "greedy", threshold: float = 0.0
) -> list[tuple[int, int, int, float]]:
    """Turns per-span class probabilities into entities.

    Args:
        span_words: `(K, 2)` inclusive word indices of the scored spans, in enumeration order.
        probabilities: `(K, C)` class probabilities, class 0 = `O`.
        mode: `"greedy"` keeps non-overlapping spans by descending score (ties: longer, then earlier span);
            `"legacy"` reproduces the upstream overlap heuristic (§4.1 of the method notes); `"none"` keeps all.
        threshold: minimum score of an entity.

    Returns:
        `(start_word, end_word, label_id, score)` tuples sorted by start.
    """
    chosen = decode_span_indices(span_words, probabilities, mode, threshold)
    labels = probabilities.argmax(axis=1)
    return [
        (int(span_words[k, 0]), int(span_words[k, 1]), int(labels[k]), float(probabilities[k, labels[k]]))
        for k in chosen
    ]


def _greedy_non_overlapping(span_words: np.ndarray, scores: np.ndarray, candidates: np.ndarray) -> list[int]:
    widths = span_words[candidates, 1] - span_words[candidates, 0]
    order = candidates[np.lexsort((candidates, -widths, -scores[candidates]))]
    taken: set[int] = set()
    chosen = []
    for k in order:
        words = range(int(span_words[k, 0]), int(span_words[k, 1]) + 1)
        if taken.isdisjoint(words):
            taken.update(words)
            chosen.append(int(k))
    return chosen


def _legacy_prune(span_words: np.ndarray, scores: np.ndarray, candidates: np.ndarray) -> list[int]:
    """Upstream heuristic: a candidate beaten by a later overlapping one is dropped; the last is always kept.

    The "beaten" test is one vectorised pairwise comparison; only the survivors are merged one by one.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) == 0:
        return []
    starts, ends, candidate_scores = span_words[candidates, 0], span_words[candidates, 1], scores[candidates]
    overlap = (starts[:, None] <= ends[None, :]) & (starts[None, :] <= ends[:, None])
    later_and_better = np.triu(candidate_scores[None, :] > candidate_scores[:, None], k=1)
    beaten = (overlap & later_and_better).any(axis=1)
    keep: list[int] = []
    for position in np.flatnonzero(~beaten[:-1]):
        clash = next(
            (
                index
                for index, kept in enumerate(keep)
                if starts[position] <= ends[kept] and starts[kept] <= ends[position]
            ),
            None,
        )
        if clash is None:
            keep.append(int(position))
        elif candidate_scores[position] > candidate_scores[keep[clash]]:
            keep[clash] = int(position)
    keep.append(len(candidates) - 1)
    return [int(candidates[position]) for position in keep]


# ---------------------------------------------------------------------------------------------------------------
# Long texts: overlapping windows
# ---------------------------------------------------------------------------------------------------------------


def word_subword_counts(tokenizer, batch_words: list[list[str]]) -> list[np.ndarray]:
    """Number of subwords of every word (special tokens excluded), from one untruncated tokenization per text."""
    _require_fast_tokenizer(tokenizer)
    counts = [np.zeros(len(words), dtype=np.int64) for words in batch_words]
    present = [index for index, words in enumerate(batch_words) if words]
    if present:
        encoding = tokenizer(
            [batch_words[index] for index in present],
            is_split_into_words=True,
            add_special_tokens=False,
            truncation=False,
            verbose=False,
        )
        for row, index in enumerate(present):
            word_ids = [word for word in encoding.word_ids(row) if word is not None]
            counts[index] = np.bincount(np.asarray(word_ids, dtype=np.int64), minlength=len(batch_words[index]))
    return counts


def plan_windows(
    word_lengths: np.ndarray | list[int], budget: int, stride: int = 0, min_overlap_words: int = 0
) -> list[tuple[int, int]]:
    """Cuts a text into windows of whole words that each hold at most `budget` subwords.

    Consecutive windows share the words of about `stride` subwords, and at least `min_overlap_words` words
    (`max_span_width - 1` lets every span lie whole in some window) when the budget allows; every window adds at
    least one word. A word longer than `budget` gets a window of its own (and is truncated there).

    Args:
        word_lengths: subwords of each word.
        budget: subwords per window, special tokens excluded.
        stride: subwords shared by consecutive windows (at most).
        min_overlap_words: words shared by consecutive windows (at least).

    Returns:
        `(start, end)` word ranges (end exclusive) in order, covering every word; `[]` for no words.

    Example:
        >>> plan_windows([1] * 10, budget=4, stride=2)
        [(0, 4), (2, 6), (4, 8), (6, 10)]
    """
    num_words = len(word_lengths)
    bounds = np.concatenate([[0], np.cumsum(word_lengths)]).astype(np.int64)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < num_words:
        end = int(np.searchsorted(bounds, bounds[start] + budget, side="right")) - 1
        end = min(max(end, start + 1), num_words)
        windows.append((start, end))
        if end == num_words:
            break
        overlap_start = int(np.searchsorted(bounds, bounds[end] - stride, side="left"))
        # The next window must also reach the word after this one.
        fitting_start = int(np.searchsorted(bounds, bounds[end + 1] - budget, side="left"))
        start = min(max(start + 1, min(overlap_start, end - min_overlap_words), fitting_start), end)
    return windows


def merge_window_entities(
    windows: list[tuple[int, list[tuple[int, int, int, float]]]], decoding: str
) -> list[tuple[int, int, int, float]]:
    """Entities of a whole text from those of its windows.

    A span found by several windows is kept once, with the label and score of its best-scoring window; entities
    of different windows that overlap are then resolved by `decoding`, by score (as within one window).

    Args:
        windows: `(first word, entities)` of every window, entity word indices relative to the window.
        decoding: `"greedy"`, `"legacy"` or `"none"`.

    Returns:
        `(start_word, end_word, label_id, score)` tuples in text word indices, sorted by start.
    """
    if len(windows) == 1 and windows[0][0] == 0:
        return windows[0][1]
    best: dict[tuple[int, int], tuple[int, float]] = {}
    for offset, entities in windows:
        for start, end, label, score in entities:
            key = (start + offset, end + offset)
            if key not in best or score > best[key][1]:
                best[key] = (label, score)
    spans = sorted(best)
    if not spans:
        return []
    span_words = np.asarray(spans, dtype=np.int64)
    scores = np.asarray([best[span][1] for span in spans])
    chosen = resolve_overlaps(span_words, scores, np.arange(len(spans)), decoding)
    return [(*spans[k], *best[spans[k]]) for k in chosen]


# ---------------------------------------------------------------------------------------------------------------
# Prediction: batching, windows and entity dicts (shared by the PyTorch model and the ONNX Runtime one)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SentencePrediction:
    """Decoded entities of one sentence with the probabilities of all its kept spans."""

    entities: list[tuple[int, int, int, float]]
    span_words: np.ndarray
    probabilities: np.ndarray
    features: SentenceFeatures


@dataclass
class TextInput:
    """One text of a `predict` call: its words, their character offsets and the text they are offsets into."""

    words: list[str]
    offsets: list[tuple[int, int]]
    text: str


class SpanPredictionMixin:
    """`predict` and `predict_words` for a span model with a `config` ([`MaralConfig`]), a fast `tokenizer` and a
    `score_spans` method: [`MaralForSpanNER`], and the ONNX Runtime model of `onnx_maral`."""

    config: MaralConfig

    def score_spans(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """`(batch, num_spans, num_labels)` class probabilities of a batch of `collate_span_features`."""
        raise NotImplementedError

    @contextlib.contextmanager
    def prediction_context(self) -> Iterator[None]:
        """The context of one prediction call (none by default)."""
        yield

    def predict_words(
        self,
        batch_words: list[list[str]],
        batch_size: int = 32,
        decoding: str | None = None,
        threshold: float = 0.0,
        show_progress_bar: bool = False,
    ) -> list[SentencePrediction]:
        """Scores and decodes pre-split sentences; the building block of evaluation and pseudo-labelling.

        Each sentence is read in one window of `max_seq_length` subwords: spans ending past it are not scored (as
        in training). Sentences are batched by length (less padding) and returned in input order.

        Args:
            batch_words: sentences as lists of words.
            batch_size: sentences per forward pass.
            decoding: `"greedy"`, `"legacy"` or `"none"`; defaults to `config.decoding`.
            threshold: minimum entity score.
            show_progress_bar: show a progress bar when there is more than one batch.

        Returns:
            One [`SentencePrediction`] per sentence (entities with word indices, plus every kept span's
            probabilities).
        """
        _check_batch_size(batch_size)
        with self.prediction_context():
            return self._predict_sentences(
                batch_words, batch_size, decoding or self.config.decoding, threshold, show_progress_bar
            )

    def predict(
        self,
        inputs: str | list[str] | list[list[str]],
        batch_size: int = 32,
        threshold: float = 0.0,
        decoding: str | None = None,
        is_split_into_words: bool = False,
        allow_truncation: bool = False,
        stride: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Predicts entities with character offsets, in texts of any length.

        A text longer than `config.max_seq_length` subwords is cut into overlapping windows of whole words (see
        `plan_windows`); the windows are predicted in batches with the other texts, and their entities merged back
        into the text (see `merge_window_entities`: an entity of an overlap is kept once, by score).

        Args:
            inputs: a string, a list of strings (a batch), or a list of word lists (a pre-tokenized batch). Raw
                strings are split into words and punctuation marks, and text in scripts without spaces into
                characters (see `split_into_words`); word lists are used as they are. A single list of words needs
                `is_split_into_words=True`. Empty or whitespace-only texts get `[]`.
            batch_size: windows per forward pass.
            threshold: minimum entity score.
            decoding: `"greedy"`, `"legacy"` or `"none"`; defaults to `config.decoding`.
            is_split_into_words: treat a flat list of strings as one pre-tokenized text.
            allow_truncation: what to do with a window that does not fit `max_seq_length` (a single word with more
                subwords than a window holds): if False (default), raise a `ValueError`; if True, leave that word
                without predictions.
            stride: subwords shared by consecutive windows; defaults to a quarter of a window.
            show_progress_bar: show a progress bar when there is more than one batch.

        Returns:
            For one text, a list of entities; for a batch, a list of such lists. An entity is a dict with
            `text`, `label`, `score`, `start` and `end` (character offsets, end exclusive; for pre-tokenized
            input, offsets into the words joined by single spaces), `word_start` and `word_end` (inclusive).

        Example:
            >>> model.predict("Angela Merkel besuchte Paris .")  # doctest: +SKIP
            [{'text': 'Angela Merkel', 'label': 'PER', 'score': 0.98, 'start': 0, 'end': 13, 'word_start': 0,
              'word_end': 1}, {'text': 'Paris', 'label': 'LOC', ...}]
        """
        _check_batch_size(batch_size)
        single, texts = _normalize_predict_inputs(inputs, is_split_into_words)
        with self.prediction_context():
            entities = self._predict_texts(
                [text.words for text in texts],
                batch_size,
                decoding or self.config.decoding,
                threshold,
                stride,
                allow_truncation,
                show_progress_bar,
            )
        results = [
            format_entities(found, text.offsets, text.text, self.config.id2label)
            for text, found in zip(texts, entities)
        ]
        return results[0] if single else results

    def _predict_sentences(
        self,
        batch_words: list[list[str]],
        batch_size: int,
        decoding: str,
        threshold: float,
        show_progress_bar: bool,
    ) -> list[SentencePrediction]:
        order = sorted(range(len(batch_words)), key=lambda index: len(batch_words[index]))
        results: list[SentencePrediction | None] = [None] * len(batch_words)
        batches = [order[begin : begin + batch_size] for begin in range(0, len(order), batch_size)]
        progress = logging.tqdm(
            total=len(order), desc="Predicting", unit="sentence", disable=not show_progress_bar or len(batches) < 2
        )
        with progress:
            for indices in batches:
                features = featurize_words(
                    self.tokenizer,
                    [batch_words[index] for index in indices],
                    self.config.max_span_width,
                    self.config.max_seq_length,
                )
                probabilities = self.score_spans(collate_span_features(features, self.tokenizer.pad_token_id))
                for row, (index, sentence) in enumerate(zip(indices, features)):
                    scores = probabilities[row, : len(sentence.span_words)]
                    entities = decode_spans(sentence.span_words, scores, decoding, threshold)
                    results[index] = SentencePrediction(entities, sentence.span_words, scores, sentence)
                progress.update(len(indices))
        return results

    def _predict_texts(
        self,
        batch_words: list[list[str]],
        batch_size: int,
        decoding: str,
        threshold: float,
        stride: int | None,
        allow_truncation: bool,
        show_progress_bar: bool,
    ) -> list[list[tuple[int, int, int, float]]]:
        """Entities of texts of any length: every text is cut into windows, all windows are predicted together."""
        budget = self.config.max_seq_length - self.tokenizer.num_special_tokens_to_add()
        stride = budget // 4 if stride is None else stride
        if not 0 <= stride < budget:
            raise ValueError(
                f"`stride` must be at least 0 and less than a window ({budget} subwords at max_seq_length="
                f"{self.config.max_seq_length}); got {stride}."
            )
        origins: list[tuple[int, int]] = []  # (text, first word) of every window
        window_words: list[list[str]] = []
        for index, (words, counts) in enumerate(zip(batch_words, word_subword_counts(self.tokenizer, batch_words))):
            if not allow_truncation:
                self._check_readable(index, words, counts, budget)
            for start, end in plan_windows(counts, budget, stride, self.config.max_span_width - 1):
                origins.append((index, start))
                window_words.append(words[start:end])
        predictions = self._predict_sentences(window_words, batch_size, decoding, threshold, show_progress_bar)
        per_text: list[list[tuple[int, list[tuple[int, int, int, float]]]]] = [[] for _ in batch_words]
        for (index, start), prediction in zip(origins, predictions):
            per_text[index].append((start, prediction.entities))
        return [merge_window_entities(windows, decoding) if windows else [] for windows in per_text]

    def _check_readable(self, index: int, words: list[str], counts: np.ndarray, budget: int) -> None:
        too_long = np.flatnonzero(counts > budget)
        if len(too_long):
            word = int(too_long[0])
            raise ValueError(
                f"inputs[{index}]: word {word} ({words[word][:40]!r}) has {counts[word]} subwords, more than a window "
                f"of max_seq_length={self.config.max_seq_length} holds ({budget}), so it cannot be read. Pass "
                "`allow_truncation=True` to predict the rest of the text."
            )


def format_entities(
    entities: list[tuple[int, int, int, float | None]],
    offsets: list[tuple[int, int]],
    text: str,
    id2label: dict[int, str],
) -> list[dict[str, Any]]:
    """Entity dicts (the output of `predict`) from `(start_word, end_word, label_id, score)` tuples.

    Args:
        entities: word spans (inclusive) with a label id and a score (`None` for gold entities: no `score` key).
        offsets: character offsets of the words in `text` (end exclusive).
        text: the text.
        id2label: label names.
    """
    formatted = []
    for start_word, end_word, label_id, score in entities:
        start, end = offsets[start_word][0], offsets[end_word][1]
        entity = {"text": text[start:end], "label": id2label[label_id]}
        if score is not None:
            entity["score"] = score
        entity.update(start=start, end=end, word_start=start_word, word_end=end_word)
        formatted.append(entity)
    return formatted


def _normalize_predict_inputs(inputs: Any, is_split_into_words: bool) -> tuple[bool, list[TextInput]]:
    """Returns `(single, texts)` for the accepted input shapes of `predict`."""
    if isinstance(inputs, str):
        single, raw = True, [inputs]
    elif is_split_into_words and inputs and all(isinstance(word, str) for word in inputs):
        single, raw = True, [list(inputs)]
    elif isinstance(inputs, (list, tuple)):
        single, raw = False, list(inputs)
    else:
        raise TypeError(f"`inputs` must be a string or a list; got {type(inputs).__name__}.")
    texts = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            words, offsets = split_into_words(item)
            texts.append(TextInput(words, offsets, item))
        elif isinstance(item, (list, tuple)) and all(isinstance(word, str) for word in item):
            words = list(item)
            if any(not word.strip() or any(char.isspace() for char in word) for word in words):
                raise ValueError(f"inputs[{index}] contains an empty word or a word with spaces.")
            text, offsets = join_words(words)
            texts.append(TextInput(words, offsets, text))
        else:
            raise TypeError(f"inputs[{index}] must be a string or a list of words; got {type(item).__name__}.")
    return single, texts


# ---------------------------------------------------------------------------------------------------------------
# Bessel functions for the vMF head
# ---------------------------------------------------------------------------------------------------------------


def log_bessel_iv(order: float, x: torch.Tensor) -> torch.Tensor:
    """`log I_order(x)` in float64 by the uniform asymptotic (Debye) expansion with four correction terms.

    Accurate to ~1e-9 (absolute) for orders ≥ 30 over x in [1e-3, 1e5] and beyond; used with `ν = p/2 - 1 = 31`.
    """
    nu = float(order)
    z = x.to(torch.float64).clamp(min=1e-300) / nu
    root = torch.sqrt(1 + z * z)
    t = 1 / root
    t2 = t * t
    eta = root + torch.log(z / (1 + root))
    u1 = t * (3 - 5 * t2) / 24
    u2 = t2 * (81 - 462 * t2 + 385 * t2**2) / 1152
    u3 = t * t2 * (30375 - 369603 * t2 + 765765 * t2**2 - 425425 * t2**3) / 414720
    u4 = t2**2 * (4465125 - 94121676 * t2 + 349922430 * t2**2 - 446185740 * t2**3 + 185910725 * t2**4) / 39813120
    series = 1 + u1 / nu + u2 / nu**2 + u3 / nu**3 + u4 / nu**4
    return -0.5 * math.log(2 * math.pi * nu) + nu * eta - 0.5 * torch.log(root) + torch.log(series)


def legacy_log_bessel_iv(order: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(log I_ν(x), log I_{ν+1}(x))` by the reference code's Miller backward recurrence (start order 2ν).

    Exact for x ≤ 100 but increasingly low for large x (about -0.07 nats at 1e3, -4 at 1e5); kept to reproduce
    the reference implementation (`vmf_legacy_bessel=True`).
    """
    x = x.to(torch.float64).clamp(min=1e-300)
    order = int(order)
    following = torch.zeros_like(x)
    current = torch.ones_like(x)
    log_scale = torch.zeros_like(x)
    captured = {}
    for k in range(2 * order, 0, -1):
        if k in (order, order + 1):
            captured[k] = torch.log(current) + log_scale
        previous = 2 * k / x * current + following
        overflow = previous > 1e250
        rescale = torch.where(overflow, previous, torch.ones_like(previous))
        log_scale = log_scale + torch.log(rescale)
        following, current = current / rescale, previous / rescale
    log_i0 = torch.log(torch.special.i0e(x)) + x
    normaliser = torch.log(current) + log_scale
    return captured[order] - normaliser + log_i0, captured[order + 1] - normaliser + log_i0


class _VmfLogPartition(torch.autograd.Function):
    """`Φ(x) = log I_ν(x) - ν log x` with `dΦ/dx = I_{ν+1}(x) / I_ν(x)` (optionally clipped at 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: float, legacy: bool, clip_gradient: bool) -> torch.Tensor:
        if legacy:
            log_iv, log_iv_next = legacy_log_bessel_iv(int(order), x)
        else:
            log_iv, log_iv_next = log_bessel_iv(order, x), log_bessel_iv(order + 1, x)
        ratio = torch.exp(log_iv_next - log_iv)
        ctx.save_for_backward(ratio.clamp(max=1.0) if clip_gradient else ratio)
        return log_iv - order * torch.log(x.clamp(min=1e-300))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return grad_output * ratio, None, None, None


def vmf_log_partition(x: torch.Tensor, order: float, legacy: bool = False, clip_gradient: bool = True) -> torch.Tensor:
    """`Φ(x) = log I_ν(x) - ν log x` in float64 (the negative log-normaliser of a vMF density, up to a constant)."""
    return _VmfLogPartition.apply(x.to(torch.float64), order, legacy, clip_gradient)


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MaralSpanNEROutput(ModelOutput):
    """Output of [`MaralForSpanNER`].

    Attributes:
        loss: class-weighted span cross-entropy (when `labels` is given).
        logits: `(batch, num_spans, num_labels)` span classifier logits.
        projections: `(batch, num_spans, projection_dim)` L2-normalised projections for the contrastive head.
        span_mask: `(batch, num_spans)` True for real (non-padding) spans.
        sentence_embeddings: `(batch, hidden_size)` L2-normalised mean of the encoder's subword states (when
            requested with `return_sentence_embeddings=True`; sentence-level contrast of MCL-NER).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    projections: torch.Tensor | None = None
    span_mask: torch.Tensor | None = None
    sentence_embeddings: torch.Tensor | None = None


def span_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    span_mask: torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over real spans of `w[y] * CE(logits, y)` (§2.10: not normalised by the weights).

    Args:
        logits: `(..., C)` scores.
        labels: `(...)` class ids (ignored where `span_mask` is False).
        span_mask: `(...)` real-span mask.
        class_weights: `(C,)` per-class weights, or `None` for 1.
    """
    mask = span_mask.bool()
    if not mask.any():
        return logits.sum() * 0.0
    per_span = F.cross_entropy(logits[mask].float(), labels[mask], reduction="none")
    if class_weights is not None:
        per_span = per_span * class_weights.to(per_span.device)[labels[mask]]
    return per_span.mean()


class MultiLayerClassifier(nn.Module):
    """`Linear(d, d) -> GELU -> Dropout -> Linear(d, out)`, the span MLP of the method."""

    def __init__(self, input_size: int, output_size: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(input_size, input_size)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(input_size, output_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(F.gelu(self.dense(features))))


class SpanRepresentation(nn.Module):
    """`[h_start; h_end; E_width(min(b - a, B - 1)); ReLU(E_len(words)); Σ E_morph]` for every span."""

    def __init__(self, config: MaralConfig) -> None:
        super().__init__()
        self.num_width_buckets = config.num_width_buckets
        self.width_embedding = nn.Embedding(config.num_width_buckets, config.width_embedding_dim)
        self.length_embedding = (
            nn.Embedding(config.max_span_width + 1, config.length_embedding_dim, padding_idx=0)
            if config.length_embedding_dim
            else None
        )
        self.morphology_embedding = (
            nn.Embedding(NUM_MORPH_IDS, config.morphology_embedding_dim, padding_idx=MORPH_PAD)
            if config.morphology_embedding_dim
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        span_token_starts: torch.Tensor,
        span_token_ends: torch.Tensor,
        span_word_lengths: torch.Tensor,
        span_morph_ids: torch.Tensor,
    ) -> torch.Tensor:
        hidden_size = hidden_states.size(-1)
        start_states = hidden_states.gather(1, span_token_starts.unsqueeze(-1).expand(-1, -1, hidden_size))
        end_states = hidden_states.gather(1, span_token_ends.unsqueeze(-1).expand(-1, -1, hidden_size))
        width_bucket = (span_token_ends - span_token_starts).clamp(0, self.num_width_buckets - 1)
        parts = [start_states, end_states, self.width_embedding(width_bucket)]
        if self.length_embedding is not None:
            parts.append(F.relu(self.length_embedding(span_word_lengths)))
        if self.morphology_embedding is not None:
            parts.append(self.morphology_embedding(span_morph_ids).sum(dim=2))
        return torch.cat(parts, dim=-1)


class MaskedLMHead(nn.Module):
    """`dense -> GELU -> LayerNorm -> word-embedding decoder (tied) + bias`, used for the target-text MLM."""

    def __init__(self, hidden_size: int, vocab_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        transformed = self.layer_norm(F.gelu(self.dense(hidden_states)))
        return F.linear(transformed, word_embeddings, self.bias)


class MaralPreTrainedModel(PreTrainedModel):
    """Base class handling weight initialisation and loading of MARAL models."""

    config_class = MaralConfig
    base_model_prefix = "maral"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        # The encoder's own initialiser knows its modules (embeddings, position-id buffers, norms); it also
        # handles the plain Linear/Embedding/LayerNorm layers of the heads.
        encoder = getattr(self, "encoder", None)
        if encoder is not None and hasattr(encoder, "_init_weights"):
            encoder._init_weights(module)
        else:
            super()._init_weights(module)


class MaralForSpanNER(MaralPreTrainedModel, SpanPredictionMixin):
    """Span NER with an MLP span classifier and an L2-normalised projection head for MARAL's vMF head.

    Build one from a pretrained encoder with [`MaralForSpanNER.from_encoder`], or load a trained model with
    `AutoModel.from_pretrained(path, trust_remote_code=True)`.

    Example:

        >>> model = MaralForSpanNER.from_encoder("path/to/multilingual-e5-small", labels=["O", "LOC", "PER"])
        >>> model.predict("Merkel flog nach Paris .")  # doctest: +SKIP
    """

    def __init__(self, config: MaralConfig, encoder: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder_config)
        representation_size = config.span_representation_size
        self.span_representation = SpanRepresentation(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.span_classifier = MultiLayerClassifier(representation_size, config.num_labels, config.classifier_dropout)
        self.projection_head = MultiLayerClassifier(
            representation_size, config.projection_dim, config.classifier_dropout
        )
        encoder_config = config.encoder_config
        self.mlm_head = (
            MaskedLMHead(encoder_config.hidden_size, encoder_config.vocab_size, encoder_config.layer_norm_eps)
            if config.use_mlm_head
            else None
        )
        # Class statistics of the vMF head (two estimators, §6.2); filled during MARAL's student stage and saved
        # with the model so that predictions from disk equal those in memory.
        num_labels, projection_dim = config.num_labels, config.projection_dim
        # Index 0 is the estimator used for scoring ("old"), index 1 the one collecting the current epoch ("new").
        self.register_buffer("vmf_means", torch.zeros(2, num_labels, projection_dim, dtype=torch.float64))
        self.register_buffer("vmf_counts", torch.zeros(2, num_labels, dtype=torch.float64))
        self.register_buffer("vmf_kappa", torch.zeros(num_labels, dtype=torch.float64))
        self.register_buffer("vmf_log_normalizer", torch.zeros(num_labels, dtype=torch.float64))
        self._tokenizer = None
        self.post_init()

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        labels: list[str],
        encoder_dropout: float | None = None,
        **config_kwargs: Any,
    ) -> MaralForSpanNER:
        """Creates a new span model on top of a pretrained encoder (and attaches its tokenizer).

        Args:
            encoder_name_or_path: a local directory or Hub id of a BERT/XLM-R-family encoder.
            labels: span labels, `"O"` first.
            encoder_dropout: if given, overrides the encoder's hidden and attention dropout (0.2 in the paper).
            **config_kwargs: other [`MaralConfig`] attributes.
        """
        encoder_config = AutoConfig.from_pretrained(encoder_name_or_path, trust_remote_code=False)
        if encoder_dropout is not None:
            encoder_config.hidden_dropout_prob = encoder_dropout
            encoder_config.attention_probs_dropout_prob = encoder_dropout
        tokenizer = AutoTokenizer.from_pretrained(encoder_name_or_path, trust_remote_code=False)
        encoder = _load_pretrained_encoder(encoder_name_or_path, encoder_config)
        config_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        config = MaralConfig(encoder_config=encoder_config, labels=labels, **config_kwargs)
        model = cls(config, encoder=encoder)
        model.set_tokenizer(tokenizer)
        if model.mlm_head is not None:
            logger.info("The MLM head is new and tied to the encoder's input embeddings.")
        return model

    # -- tokenizer ----------------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The fast tokenizer used by `predict`; loaded from the model's directory on first use."""
        if self._tokenizer is None:
            if not self.name_or_path:
                raise ValueError("This model has no tokenizer: call `model.set_tokenizer(tokenizer)` first.")
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=False)
        return self._tokenizer

    def set_tokenizer(self, tokenizer) -> None:
        """Attaches the tokenizer that `predict` and `save_pretrained` use."""
        self._tokenizer = tokenizer

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any) -> None:
        """Saves weights and config, the pipeline file (`pipeline_maral.py`, declared in `config.json` under
        `custom_pipelines`) when it sits beside this file, and the tokenizer: the attached one, or else the one of
        the folder the model was loaded from, so that the saved folder loads and predicts on its own."""
        self._save_pipeline_file(Path(save_directory))
        super().save_pretrained(save_directory, *args, **kwargs)
        tokenizer = self._tokenizer
        if tokenizer is None and self.name_or_path:
            try:
                tokenizer = self.tokenizer
            except (OSError, ValueError) as error:
                logger.warning(
                    "Saved %s without a tokenizer (%s): attach one with `set_tokenizer`.", save_directory, error
                )
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
            drop_untrusted_tokenizer_keys(Path(save_directory))

    def _save_pipeline_file(self, save_directory: Path) -> None:
        source = Path(__file__).with_name(f"{PIPELINE_MODULE}.py")
        if not source.is_file():
            if hasattr(self.config, "custom_pipelines"):  # never declare a pipeline that is not saved
                del self.config.custom_pipelines
            return
        save_directory.mkdir(parents=True, exist_ok=True)
        target = save_directory / source.name
        if not target.exists() or not target.samefile(source):
            shutil.copyfile(source, target)
        self.config.custom_pipelines = custom_pipelines_declaration()

    # -- forward ------------------------------------------------------------------------------------------------

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer subword states of the encoder."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        span_token_starts: torch.Tensor | None = None,
        span_token_ends: torch.Tensor | None = None,
        span_word_lengths: torch.Tensor | None = None,
        span_morph_ids: torch.Tensor | None = None,
        span_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        class_weights: torch.Tensor | None = None,
        return_projections: bool = True,
        return_sentence_embeddings: bool = False,
        mlm_labels: torch.Tensor | None = None,
        **unused: Any,
    ) -> MaralSpanNEROutput:
        """Scores every span of the batch, or (with `mlm_labels`) returns the masked-LM loss of masked text.

        Args:
            input_ids, attention_mask: `(batch, seq_len)` subword ids and mask.
            span_token_starts, span_token_ends: `(batch, num_spans)` first/last subword of each span.
            span_word_lengths: `(batch, num_spans)` span width in words (0 for padding).
            span_morph_ids: `(batch, num_spans, max_span_width)` morphology ids of the span's words.
            span_mask: `(batch, num_spans)` True for real spans.
            labels: `(batch, num_spans)` gold class ids; when given, `loss` is the span cross-entropy.
            class_weights: `(num_labels,)` weights for the loss.
            return_projections: whether to compute the projection head's output.
            return_sentence_embeddings: whether to return the mean-pooled, L2-normalised sentence embeddings.
            mlm_labels: `(batch, seq_len)` masked-LM targets of the masked `input_ids` (-100 elsewhere). The call then
                only computes `loss`, the masked-LM cross-entropy (see `mlm_loss`), and needs no span inputs: a
                training step's MLM pass goes through the same (e.g. DDP-wrapped) forward as its span passes.
        """
        if mlm_labels is not None:
            return MaralSpanNEROutput(loss=self.mlm_loss(input_ids, attention_mask, mlm_labels))
        hidden_states = self.encode(input_ids, attention_mask)
        representations = self.dropout(
            self.span_representation(
                hidden_states, span_token_starts, span_token_ends, span_word_lengths, span_morph_ids
            )
        )
        logits = self.span_classifier(representations)
        projections = F.normalize(self.projection_head(representations), dim=-1) if return_projections else None
        loss = span_cross_entropy(logits, labels, span_mask, class_weights) if labels is not None else None
        sentence_embeddings = None
        if return_sentence_embeddings:
            weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
            sentence_embeddings = F.normalize(pooled, dim=-1)
        return MaralSpanNEROutput(
            loss=loss,
            logits=logits,
            projections=projections,
            span_mask=span_mask,
            sentence_embeddings=sentence_embeddings,
        )

    def mlm_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mlm_labels: torch.Tensor
    ) -> torch.Tensor:
        """Masked-LM cross-entropy at the positions where `mlm_labels != -100` (0 if there are none)."""
        if self.mlm_head is None:
            raise ValueError("This model has no MLM head; create it with `use_mlm_head=True`.")
        selected = mlm_labels != -100
        if not selected.any():
            return self.mlm_head.bias.sum() * 0.0
        hidden_states = self.encode(input_ids, attention_mask)
        word_embeddings = self.encoder.get_input_embeddings().weight
        logits = self.mlm_head(hidden_states[selected], word_embeddings)
        return F.cross_entropy(logits.float(), mlm_labels[selected])

    def span_probabilities(self, output: MaralSpanNEROutput) -> torch.Tensor:
        """Class probabilities of the configured prediction head: softmax of the MLP logits, or of the vMF logits
        (without priors) once MARAL's student stage has set `prediction_head="vmf"`; the `O` logit lowered by
        `config.o_logit_offset`."""
        if self.config.prediction_head == "vmf":
            logits = self.vmf_logits(output.projections)
        else:
            logits = output.logits.float()
        if self.config.o_logit_offset:
            logits = torch.cat([logits[..., :1] - self.config.o_logit_offset, logits[..., 1:]], dim=-1)
        return logits.softmax(dim=-1)

    # -- vMF distribution modelling (§6.2 of the method notes) ----------------------------------------------

    @property
    def vmf_order(self) -> float:
        """Bessel order `ν = p/2 - 1` of the vMF density on the unit sphere of the projection space."""
        return self.config.projection_dim / 2 - 1

    def reset_vmf_estimator(self, index: int, generator: torch.Generator | None = None) -> None:
        """Random class directions of norm `R = 0.9` and zero counts (κ then starts at `p R / (1 - R²)`, i.e.
        `0.9 p / 0.19`)."""
        shape = self.vmf_means.shape[1:]
        directions = torch.randn(shape, generator=generator, dtype=torch.float64)
        self.vmf_means[index] = (0.9 * F.normalize(directions, dim=-1)).to(self.vmf_means.device)
        self.vmf_counts[index] = 0
        if index == 0:
            self.refresh_vmf_kappa()

    def rotate_vmf_estimators(self, generator: torch.Generator | None = None) -> None:
        """Epoch start: the scoring estimator takes over the collecting one, which restarts empty."""
        self.vmf_means[0] = self.vmf_means[1]
        self.vmf_counts[0] = self.vmf_counts[1]
        self.reset_vmf_estimator(1, generator)
        self.refresh_vmf_kappa()

    @torch.no_grad()
    def vmf_class_statistics(
        self, projections: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class sums `(C, p)` and counts `(C,)` (float64) of a batch of projections, for `add_vmf_statistics`.

        With several processes, the caller adds these over all processes before passing them on, so that the
        estimators stay equal everywhere.

        Args:
            projections: `(M, p)` L2-normalised projections (detached).
            labels: `(M,)` their class ids.
        """
        features = projections.detach().to(torch.float64)
        sums = torch.zeros_like(self.vmf_means[0]).index_add_(0, labels, features)
        counts = torch.bincount(labels, minlength=self.vmf_means.size(1)).to(torch.float64)
        return sums, counts

    @torch.no_grad()
    def add_vmf_statistics(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Adds per-class sums and counts to both estimators' cumulative class means (absent classes unchanged),
        then refreshes κ."""
        sums, counts = sums.to(self.vmf_means), counts.to(self.vmf_counts)
        totals = self.vmf_counts + counts
        updated = (self.vmf_means * self.vmf_counts.unsqueeze(-1) + sums) / totals.clamp(min=1).unsqueeze(-1)
        self.vmf_means.copy_(torch.where((counts > 0).view(1, -1, 1), updated, self.vmf_means))
        self.vmf_counts.copy_(totals)
        self.refresh_vmf_kappa()

    def update_vmf_statistics(self, projections: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds a batch of this process's projections to the estimators (see `vmf_class_statistics`)."""
        self.add_vmf_statistics(*self.vmf_class_statistics(projections, labels))

    @torch.no_grad()
    def refresh_vmf_kappa(self) -> None:
        """`κ = p R / (1 - R²)` from the scoring estimator's mean norms `R` (clamped), and `Φ(κ)`."""
        epsilon = 1e-6
        mean_norms = self.vmf_means[0].norm(dim=-1).clamp(epsilon, 1 - epsilon)
        kappa = self.config.projection_dim * mean_norms / (1 - mean_norms**2)
        kappa = torch.where((kappa > self.config.vmf_kappa_max) | (kappa < 0), self.config.vmf_kappa_max, kappa)
        self.vmf_kappa.copy_(kappa)
        self.vmf_log_normalizer.copy_(vmf_log_partition(kappa, self.vmf_order, self.config.vmf_legacy_bessel))

    def vmf_logits(self, projections: torch.Tensor) -> torch.Tensor:
        """Closed-form expected-contrastive logits `ℓ_c(z) = Φ(‖κ_c μ_c + z/T‖) - Φ(κ_c)` (float32, no prior).

        Computed in float64 outside autocast; gradients reach `z` only (the class statistics are detached).
        """
        with torch.autocast(device_type=projections.device.type, enabled=False):
            features = projections.to(torch.float64)
            directions = F.normalize(self.vmf_means[0], dim=-1)
            kappa = self.vmf_kappa
            temperature = self.config.contrastive_temperature
            squared = (
                kappa**2
                + 2 * kappa * (features @ directions.T) / temperature
                + (features * features).sum(-1, keepdim=True) / temperature**2
            )
            concentrated = squared.clamp(min=1e-12).sqrt()
            logits = (
                vmf_log_partition(
                    concentrated, self.vmf_order, self.config.vmf_legacy_bessel, self.config.vmf_clip_gradient
                )
                - self.vmf_log_normalizer
            )
        return logits.to(torch.float32)

    # -- inference ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def prediction_context(self) -> Iterator[None]:
        """Eval mode without gradients for the duration of a prediction call; the training mode is restored."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def score_spans(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Class probabilities of the configured prediction head for a batch of `collate_span_features`."""
        inputs = {key: batch[key].to(self.device) for key in MODEL_INPUT_NAMES}
        output = self(**inputs, return_projections=self.config.prediction_head == "vmf")
        return self.span_probabilities(output).cpu().numpy()


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive number of sentences; got {batch_size!r}.")


def drop_untrusted_tokenizer_keys(directory: Path) -> None:
    """Removes remote-code keys (`UNSAFE_TOKENIZER_KEYS`) that a loaded tokenizer carried over from its source into
    the saved `tokenizer_config.json`: the saved model never points a loader at someone else's code."""
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if any(key in config for key in UNSAFE_TOKENIZER_KEYS):
        safe = {key: value for key, value in config.items() if key not in UNSAFE_TOKENIZER_KEYS}
        config_file.write_text(json.dumps(safe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_encoder(encoder_config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised encoder without a pooling layer."""
    try:
        return AutoModel.from_config(encoder_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(encoder_config)


def _load_pretrained_encoder(name_or_path: str, encoder_config: PretrainedConfig) -> PreTrainedModel:
    try:
        return AutoModel.from_pretrained(
            name_or_path, config=encoder_config, add_pooling_layer=False, trust_remote_code=False
        )
    except TypeError:
        return AutoModel.from_pretrained(name_or_path, config=encoder_config, trust_remote_code=False)


MaralConfig.register_for_auto_class()
MaralForSpanNER.register_for_auto_class("AutoModel")
AutoConfig.register(MaralConfig.model_type, MaralConfig, exist_ok=True)
AutoModel.register(MaralConfig, MaralForSpanNER, exist_ok=True)

__all__ = [
    "MaralConfig",
    "MaralForSpanNER",
    "MaralPreTrainedModel",
    "MaralSpanNEROutput",
    "SentenceFeatures",
    "SentencePrediction",
    "collate_span_features",
    "decode_span_indices",
    "decode_spans",
    "enumerate_spans",
    "featurize_words",
    "morphology_id",
    "span_cross_entropy",
    "split_into_words",
]
