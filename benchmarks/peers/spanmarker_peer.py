#!/usr/bin/env python
"""SpanMarker (tomaarsen/SpanMarkerNER 1.8.1) as a peer: trained with its own `Trainer` on the exported English
sample, then `SpanMarkerModel.predict` on pre-split words (its dicts then carry word indices, end exclusive).

The budget maps onto SpanMarker as follows: `--epochs`, `--batch_size`, `--warmup_ratio`, `--weight_decay`,
`--seed` go to its `TrainingArguments`; the encoder trains at `--learning_rate` and the classifier at
`--head_learning_rate` (AdamW with two parameter groups, no decay on biases and LayerNorm weights, linear decay after
warm-up); `--max_span_width` is its `entity_max_length` (words) and `--max_seq_length` its `model_max_length`
(subword tokens of the text; its marker tokens come on top); `--freeze_word_embeddings` freezes the encoder's
word-embedding matrix, including the rows of its `<start>`/`<end>` markers. Its labels are IOB2 tags
(`B-<name>`/`I-<name>`), which it reduces to entity types; with plain types it would join adjacent entities of one
type. Run by `compare.py` in the peers' virtual environment; the flags are in `common.build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: `common` lies beside it

from common import Peer, PeerPredictions, freeze_word_embeddings, run_peer, trainer_settings  # noqa: E402

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def tag_names(args: argparse.Namespace) -> list[str]:
    """SpanMarker's label list: `O`, then `B-`/`I-` of each entity type's peer name."""
    return ["O"] + [f"{prefix}-{name}" for name in args.labels.values() for prefix in ("B", "I")]


def load(args: argparse.Namespace, encoder: Path):
    """A fresh `SpanMarkerModel` on the encoder (its classifier initialised after `--seed`)."""
    from span_marker import SpanMarkerModel

    model = SpanMarkerModel.from_pretrained(
        str(encoder),
        labels=tag_names(args),
        model_max_length=args.max_seq_length,
        entity_max_length=args.max_span_width,
    )
    if args.freeze_word_embeddings:
        freeze_word_embeddings(model.encoder)
    return model


def peer_tags(sentence: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The sentence's IOB2 tags under the peer's names (`B-LOC` -> `B-<name of LOC>`)."""
    return [tag if tag == "O" else f"{tag[:2]}{args.labels[tag[2:]]}" for tag in sentence["tags"]]


def optimizer(model, args: argparse.Namespace):
    """AdamW over the trainable parameters: the encoder's at `--learning_rate`, the rest at `--head_learning_rate`,
    weight decay except on biases and LayerNorm weights."""
    import torch

    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (name.startswith("encoder."), not any(part in name for part in NO_DECAY))
            groups.setdefault(key, []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": parameters,
                "lr": args.learning_rate if is_encoder else args.head_learning_rate,
                "weight_decay": args.weight_decay if decays else 0.0,
            }
            for (is_encoder, decays), parameters in groups.items()
        ]
    )


def training_arguments(args: argparse.Namespace):
    """SpanMarker's (transformers') `TrainingArguments` of the budget (`common.trainer_settings`)."""
    from transformers import TrainingArguments

    return TrainingArguments(**trainer_settings(args), eval_strategy="no")


def train(model, sentences: list[dict[str, Any]], args: argparse.Namespace, resume_from: str | None) -> int:
    """Trains with SpanMarker's `Trainer`; returns the number of optimizer steps."""
    from datasets import Dataset
    from span_marker import Trainer

    label_ids = {name: index for index, name in enumerate(tag_names(args))}
    dataset = Dataset.from_dict(
        {
            "tokens": [sentence["tokens"] for sentence in sentences],
            "ner_tags": [[label_ids[tag] for tag in peer_tags(sentence, args)] for sentence in sentences],
        }
    )
    trainer = Trainer(
        model=model,
        args=training_arguments(args),
        train_dataset=dataset,
        optimizers=(optimizer(model, args), None),
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer.state.global_step


def words_read(model, sentences: list[dict[str, Any]]) -> list[int]:
    """The words of each sentence within SpanMarker's `model_max_length` (its tokenizer truncates the rest)."""
    tokenizer = model.tokenizer
    encoding = tokenizer.tokenizer(
        [sentence["tokens"] for sentence in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=tokenizer.model_max_length,
    )
    counts = []
    for index in range(len(sentences)):
        word_ids = [word for word in encoding.word_ids(index) if word is not None]
        counts.append(max(word_ids) + 1 if word_ids else 0)
    return counts


def predict(model, sentences: list[dict[str, Any]], args: argparse.Namespace) -> PeerPredictions:
    """`SpanMarkerModel.predict` on the pre-split words, `--eval_batch_size` samples a batch."""
    entities = model.predict([sentence["tokens"] for sentence in sentences], batch_size=args.eval_batch_size)
    return PeerPredictions(entities, words_read(model, sentences))


def versions() -> dict[str, str]:
    import span_marker
    import torch
    import transformers

    return {
        "span_marker": span_marker.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


PEER = Peer("spanmarker", load, train, predict, versions)

if __name__ == "__main__":
    print(run_peer(PEER))
