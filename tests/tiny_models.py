"""Tiny tokenizers and encoders built in code (no downloads), shared by tests and the CLI tests."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

TINY_LABELS = ("O", "LOC", "MISC", "ORG", "PER")
TRAINING_TEXT = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn visited Brussels on Monday .",
    "Die Europäische Kommission sagte am Donnerstag in Berlin , sie sei anderer Meinung .",
    "Angela Merkel besuchte Paris und London mit der UNO .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said",
    "El presidente de España viajó a Madrid con Naciones Unidas .",
    "1996-08-22 BRUSSELS Reuters U.S. co-operation don't",
]

# Shared tiny span-JSON records (English source with gold spans, German/Spanish target text).
TINY_SOURCE_RECORDS = [
    {"context": "Peter Blackburn visited Brussels on Monday .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "EU rejects German call to boycott British lamb .", "span_posLabel": {"0;0": "ORG", "2;2": "MISC"}},
    {"context": "Angela Merkel visited Paris .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "The European Union said on Monday .", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Werner Zwingmann said British lamb .", "span_posLabel": {"0;1": "PER", "3;3": "MISC"}},
    {"context": "Reuters visited London and Berlin .", "span_posLabel": {"0;0": "ORG", "2;2": "LOC", "4;4": "LOC"}},
    {"context": "Germany 's representative visited Madrid .", "span_posLabel": {"0;0": "LOC", "4;4": "LOC"}},
    {"context": "Peter said the UNO rejects it .", "span_posLabel": {"0;0": "PER", "3;3": "ORG"}},
]
TINY_TARGET_RECORDS = [
    {"context": "Die Europäische Kommission sagte am Donnerstag in Berlin .", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Angela Merkel besuchte Paris und London mit der UNO .", "span_posLabel": {"0;1": "PER"}},
    {"context": "El presidente de España viajó a Madrid .", "span_posLabel": {"3;3": "LOC"}},
    {"context": "Naciones Unidas en Madrid .", "span_posLabel": {"0;1": "ORG"}},
    {"context": "Merkel sagte am Donnerstag .", "span_posLabel": {"0;0": "PER"}},
    {"context": "Paris und Berlin .", "span_posLabel": {"0;0": "LOC", "2;2": "LOC"}},
]


def build_tiny_wordpiece_tokenizer(text: Sequence[str] = TRAINING_TEXT) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained on a few sentences (vocabulary ~300)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=special)
    tokenizer.train_from_iterator(text, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def build_tiny_unigram_tokenizer() -> PreTrainedTokenizerFast:
    """An XLM-R-style Unigram tokenizer with a Metaspace pre-tokenizer, so words may start with a lone `▁`."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = None
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=special, unk_token="<unk>")
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def tiny_bert_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )


def build_tiny_encoder_dir(directory: Path, seed: int = 0) -> Path:
    """Saves a random tiny BERT encoder and its tokenizer to `directory` (like a downloaded checkpoint)."""
    tokenizer = build_tiny_wordpiece_tokenizer()
    torch.manual_seed(seed)
    config = tiny_bert_config(len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


# The span classifier of `build_span_marking_model` fires when the start state's dimension 0 and the end state's
# dimension 1 add up to more than this; a marked subword's state has ~5.6 there (~3.9 on both for a subword that
# marks both ends), any other subword's at most ~0.6.
MARKING_THRESHOLD = 7.0


def subword_ends(tokenizer, words: list[str]) -> tuple[str, str]:
    """The first and the last subword of `words` (as `predict` tokenizes them)."""
    pieces = tokenizer.convert_ids_to_tokens(
        tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    )
    return pieces[0], pieces[-1]


def build_span_marking_model(tokenizer, words: list[str], label: str, max_seq_length: int = 128):
    """A tiny MARAL model that labels `label` (score ~1) every span that starts with the first subword of `words` and
    ends with their last subword, and `O` every other span, wherever it stands.

    The encoder passes its inputs through (zero attention and feed-forward outputs, position and token-type
    embeddings), so a subword's state is its normalised word embedding, the same in any context and any window.
    The first subword's embedding points along dimension 0, the last one's along dimension 1 (no other embedding
    has a component there), and the span classifier thresholds the sum of those two dimensions of the span's start
    and end states.
    """
    from modeling_maral import MaralConfig, MaralForSpanNER

    config = MaralConfig(
        encoder_config=tiny_bert_config(len(tokenizer)),
        labels=list(TINY_LABELS),
        max_seq_length=max_seq_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = MaralForSpanNER(config).eval()
    model.set_tokenizer(tokenizer)
    first, last = tokenizer.convert_tokens_to_ids(list(subword_ends(tokenizer, words)))
    hidden = config.encoder_config.hidden_size
    encoder = model.encoder
    with torch.no_grad():
        embeddings = encoder.embeddings
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
        embeddings.word_embeddings.weight[:, :2] = 0.0
        embeddings.word_embeddings.weight[[first, last]] = 0.0
        embeddings.word_embeddings.weight[first, 0] = 10.0
        embeddings.word_embeddings.weight[last, 1] = 10.0
        for layer in encoder.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        classifier = model.span_classifier
        classifier.dense.weight.zero_()
        classifier.dense.bias.zero_()
        classifier.dense.weight[0, 0] = 1.0  # start state, dimension 0
        classifier.dense.weight[0, hidden + 1] = 1.0  # end state, dimension 1
        classifier.dense.bias[0] = -MARKING_THRESHOLD
        classifier.output.weight.zero_()
        classifier.output.weight[config.label2id[label], 0] = 20.0
        classifier.output.bias.zero_()
        classifier.output.bias[0] = 1.0
    return model


# Modules of this project; a script run with `WITHOUT_PROJECT_PREAMBLE` cannot import any of them.
PROJECT_MODULES = (
    "modeling_maral",
    "trainer_maral",
    "self_training_maral",
    "output_layout",
    "objectives",
    "evaluation_maral",
    "pipeline_maral",
    "onnx_maral",
    "prediction_io",
    "run_xner",
    "data_loading",
    "model_cards",
    "tests",
)
# First lines of a `python -c` script that runs as on a machine without maral-xner (the venv may hold a
# non-editable install of it): `sys.argv[1]` is the repository root, dropped from `sys.path`.
WITHOUT_PROJECT_PREAMBLE = textwrap.dedent(
    f"""
    import importlib.abc, json, os, sys
    repo_root = os.path.realpath(sys.argv[1])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != repo_root]

    class ProjectBlocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {PROJECT_MODULES!r}:
                raise ImportError(name + " is not installed here")
            return None

    sys.meta_path.insert(0, ProjectBlocker())
    """
)
