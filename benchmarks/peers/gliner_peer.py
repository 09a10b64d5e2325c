#!/usr/bin/env python
"""GLiNER (urchade/GLiNER 0.2.29) as a peer: a uni-encoder span model (`markerV0` spans, label prompts) built on the
same encoder, trained with GLiNER's own `Trainer` on the exported English sample, then `GLiNER.inference` on the
sentences joined by single spaces (its dicts carry character offsets, end exclusive).

GLiNER takes any encoder that `transformers.AutoModel` loads (its `Transformer` wrapper special-cases only
DeBERTa-v2, T5 and llm2vec decoders), so `model_name` is the local multilingual-e5-small folder (a `BertModel`). The
budget maps onto GLiNER as follows: `--learning_rate` is its encoder rate and `--head_learning_rate` its
`others_lr` (everything outside the encoder: prompt and span layers, the LSTM), with `--weight_decay` on both;
`--epochs`, `--batch_size`, `--warmup_ratio`, `--seed` go to its `TrainingArguments`; `--max_span_width` is its
`max_width` (words) and `--max_seq_length` its `max_len` (words, GLiNER's unit); `--freeze_word_embeddings` freezes the
encoder's word-embedding matrix, including the rows of its `<<ENT>>`/`<<SEP>>` tokens. The rest keeps GLiNER's
defaults (projection size 512, dropout 0.4, a summed binary cross-entropy with focal loss off). Every training
sentence is offered all entity types (the absent ones as `ner_negatives`), in GLiNER's shuffled order; predictions
use its default threshold 0.5 with flat (non-overlapping) decoding. Words are split on the single spaces that join
them, so GLiNER reads the benchmark's words, not its own regex split. Run by `compare.py` in the peers' virtual
environment; the flags are in `common.build_parser`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: `common` lies beside it

from common import Peer, PeerPredictions, freeze_word_embeddings, run_peer, trainer_settings  # noqa: E402

THRESHOLD = 0.5
"""GLiNER's default decision threshold (per span and type, sigmoid)."""
WORD = re.compile(r"[^ ]+")


def split_on_spaces(text: str) -> Iterator[tuple[str, int, int]]:
    """GLiNER's word-splitter interface over words joined by single spaces: `(word, start, end)` per word."""
    for match in WORD.finditer(text):
        yield match.group(), match.start(), match.end()


def load(args: argparse.Namespace, encoder: Path):
    """A fresh uni-encoder span GLiNER on the encoder's pretrained weights (its layers initialised after `--seed`)."""
    from gliner import GLiNER, GLiNERConfig

    config = GLiNERConfig(
        model_name=str(encoder), max_width=args.max_span_width, max_len=args.max_seq_length, span_mode="markerV0"
    )
    model = GLiNER.from_config(config, backbone_from_pretrained=True)
    model.data_processor.words_splitter = split_on_spaces
    if args.freeze_word_embeddings:
        freeze_word_embeddings(model.model.token_rep_layer.bert_layer.model)
    return model


def gliner_example(sentence: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """GLiNER's training record: words, `[start, end, name]` entities (end inclusive), every type offered."""
    entities = [[span["start"], span["end"], args.labels[span["label"]]] for span in sentence["spans"]]
    present = {name for _, _, name in entities}
    return {
        "tokenized_text": sentence["tokens"],
        "ner": entities,
        "ner_negatives": [name for name in args.labels.values() if name not in present],
    }


def training_arguments(model, args: argparse.Namespace):
    """GLiNER's `TrainingArguments` of the budget (`common.trainer_settings`, `--head_learning_rate` as `others_lr`,
    `--weight_decay` for both groups), its own defaults otherwise."""
    return model.create_training_args(
        **trainer_settings(args), others_lr=args.head_learning_rate, others_weight_decay=args.weight_decay
    )


def train(model, sentences: list[dict[str, Any]], args: argparse.Namespace, resume_from: str | None) -> int:
    """Trains with GLiNER's `Trainer` (as `GLiNER.train_model` does, plus resuming); returns the optimizer steps."""
    from gliner.training import Trainer

    trainer = Trainer(
        model=model,
        args=training_arguments(model, args),
        train_dataset=[gliner_example(sentence, args) for sentence in sentences],
        data_collator=model.data_collator_class(
            model.config, data_processor=model.data_processor, prepare_labels=True
        ),
        processing_class=model.data_processor.transformer_tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer.state.global_step


def predict(model, sentences: list[dict[str, Any]], args: argparse.Namespace) -> PeerPredictions:
    """`GLiNER.inference` on the space-joined words, all entity types, `--eval_batch_size` sentences a batch."""
    entities = model.inference(
        [" ".join(sentence["tokens"]) for sentence in sentences],
        list(args.labels.values()),
        flat_ner=True,
        threshold=THRESHOLD,
        batch_size=args.eval_batch_size,
    )
    return PeerPredictions(entities, [min(len(sentence["tokens"]), args.max_seq_length) for sentence in sentences])


def versions() -> dict[str, str]:
    import gliner
    import torch
    import transformers

    return {"gliner": gliner.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


PEER = Peer("gliner", load, train, predict, versions)

if __name__ == "__main__":
    print(run_peer(PEER))
