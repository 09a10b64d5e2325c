#!/usr/bin/env python
"""CPU speed and memory of MARAL against its references: inference, training step, peak RSS, pseudo-label state
and collation, in one table.

Convert the encoder first (``make encoder``), then::

    python benchmarks/speed.py [--threads 2] [--num_sentences 256] [--train_steps 5] [--output speed.json]
    python benchmarks/speed.py --teacher outputs/benchmarks/first_n/conll_de/source_only_seed42  # trained labeller

Rows of the table (goals in brackets):

(a) inference sentences/s of ``MaralForSpanNER.predict_words`` against ``AutoModelForTokenClassification`` on the
    same encoder, sentences and batch size (ratio >= 0.8x); (a2) the same with the model exported to ONNX and run
    by ONNX Runtime (``onnx_maral``, skipped without the ``onnx`` extra); (a3) long texts: the sentences joined into
    documents of ``--document_words`` words, predicted by ``predict`` in overlapping windows, against the token
    classifier over the tokenizer's overflowing windows (the same stride);
(b) training seconds per (source + target) sentence of the MARAL student objective against the source-only
    (teacher) objective, both built by the project's own classes and run by ``MaralTrainer.train()`` (ratio
    <= 1.5x);
(c) peak resident memory of the process;
(d) bytes of the pseudo-label state of the whole target file: ``PseudoLabelStore`` against the reference code's
    dense ``N x 512 x C`` soft labels and logit cache plus two ``N x 512`` masks (ratio <= 1/10);
(e) sentences/s of ``MaralDataCollator`` on the source data.

Times of (a) and (e) are medians of wall-clock seconds over ``--repeats`` runs after a warm-up run. (b) trains each
objective for two epochs of ``--train_steps`` steps and times the second (the first is the warm-up), so that MARAL's
progressive adaptation (anchors, kNN counts, refinement) runs in the timed steps; the objectives alternate
``--training_repeats`` times and the row holds each one's median. Without ``--teacher`` the span model
(and so the pseudo-labels) is untrained. The footnotes under the table say what each row measures.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForTokenClassification, PrinterCallback, TrainerCallback  # noqa: E402

from data_loading import count_span_labels, load_spans  # noqa: E402
from data_loading.collator import MaralDataCollator  # noqa: E402
from modeling_maral import MaralForSpanNER, featurize_words  # noqa: E402
from objectives import (  # noqa: E402
    ObjectiveContext,
    PseudoLabelStore,
    build_objective,
    class_weights_from_counts,
    generate_pseudo_labels,
)
from trainer_maral import MaralTrainer, MaralTrainingArguments  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "conll03_en_de"
DEFAULT_ENCODER = REPO_ROOT / ".cache" / "encoders" / "multilingual-e5-small"
LABELS = ["O", "LOC", "MISC", "ORG", "PER"]
# The reference code pads every target sentence to U = 512 span slots.
REFERENCE_SPAN_SLOTS = 512
# Training settings of the student stage in benchmarks/matrix.py's first_n protocol (the rates do not change the
# speed).
TRAINING_SETTINGS = {
    "learning_rate": 5e-5,
    "head_learning_rate": 1e-3,
    "weight_decay": 0.01,
    "mlm_weight": 0.001,
    "update_soft_start": 0,
    "seed": 42,
}
GOALS = {"inference": 0.8, "training": 1.5, "pseudo_labels": 0.1}


@dataclass
class Row:
    """One row of the result table: a MARAL number, its reference number (if any) and their ratio."""

    name: str
    unit: str
    maral: float
    reference: float | None = None
    goal: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if self.reference in (None, 0) else self.maral / self.reference


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER, help="converted encoder folder")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with spanner.* files")
    parser.add_argument("--source_file", type=Path, default=None, help="source data (default: spanner.train)")
    parser.add_argument("--target_file", type=Path, default=None, help="target text (default: spanner.unlabel)")
    parser.add_argument("--teacher", type=Path, default=None, help="trained MARAL model for (a) and pseudo-labels")
    parser.add_argument("--num_sentences", type=int, default=256, help="sentences of (a) and (e)")
    parser.add_argument("--document_words", type=int, default=400, help="words per long text of (a3)")
    parser.add_argument("--batch_size", type=int, default=32, help="inference batch size")
    parser.add_argument("--train_batch_size", type=int, default=8, help="source and target sentences per step")
    parser.add_argument("--train_steps", type=int, default=5, help="timed optimizer steps per objective")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of (a) and (e)")
    parser.add_argument("--training_repeats", type=int, default=3, help="alternating timed runs of each (b) objective")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    args.source_file = args.source_file or args.data_dir / "spanner.train"
    args.target_file = args.target_file or args.data_dir / "spanner.unlabel"
    for name in ("num_sentences", "document_words", "batch_size", "train_batch_size", "train_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def time_runs(step: Callable[[], None], repeats: int, warm_up: Callable[[], None] | None = None) -> list[float]:
    """Run ``warm_up`` (default: ``step``) once, then ``step`` ``repeats`` times; returns the wall-clock seconds."""
    (warm_up or step)()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def build_span_model(encoder: Path, teacher: Path | None = None, seed: int = 0) -> MaralForSpanNER:
    """A new span model on the encoder (or the trained ``teacher``), word embeddings frozen as in run_xner.py."""
    torch.manual_seed(seed)
    if teacher is not None:
        model = MaralForSpanNER.from_pretrained(teacher)
    else:
        model = MaralForSpanNER.from_encoder(str(encoder), labels=LABELS)
    model.encoder.get_input_embeddings().weight.requires_grad_(False)
    return model


def token_classification_pass(
    model, tokenizer, sentences: list[list[str]], batch_size: int, max_length: int, stride: int | None = None
) -> list[list[int]]:
    """Label every word with a token classifier: length-sorted batches, argmax, the first subword's label.

    With `stride`, a text longer than `max_length` is read in the tokenizer's overflowing windows (`stride`
    subwords shared), as the token-classification pipeline does; a word keeps the label of its first window.
    """
    order = sorted(range(len(sentences)), key=lambda index: len(sentences[index]))
    results: list[list[int]] = [[-1] * len(sentence) for sentence in sentences]  # unread words stay -1
    windows = {} if stride is None else {"return_overflowing_tokens": True, "stride": stride}
    with torch.no_grad():
        for begin in range(0, len(order), batch_size):
            indices = order[begin : begin + batch_size]
            encoding = tokenizer(
                [sentences[index] for index in indices],
                is_split_into_words=True,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
                **windows,
            )
            sources = encoding.pop("overflow_to_sample_mapping", torch.arange(len(indices))).tolist()
            predictions = model(**encoding).logits.argmax(-1).tolist()
            for row, source in enumerate(sources):
                labels, previous = results[indices[source]], None
                for position, word in enumerate(encoding.word_ids(row)):
                    if word is not None and word != previous and labels[word] == -1:
                        labels[word] = predictions[row][position]
                    previous = word
    return results


def time_token_classifier(
    encoder: Path,
    tokenizer,
    sentences: list[list[str]],
    batch_size: int,
    max_length: int,
    repeats: int,
    stride: int | None = None,
) -> list[float]:
    """Seconds per `token_classification_pass` of `AutoModelForTokenClassification` (9 BIO labels) on ``encoder``."""
    model = AutoModelForTokenClassification.from_pretrained(encoder, num_labels=2 * (len(LABELS) - 1) + 1).eval()
    warm_up = sentences[:batch_size]
    return time_runs(
        lambda: token_classification_pass(model, tokenizer, sentences, batch_size, max_length, stride),
        repeats,
        lambda: token_classification_pass(model, tokenizer, warm_up, batch_size, max_length, stride),
    )


def inference_row(
    name: str,
    predict: Callable[[list[list[str]]], Any],
    texts: list[list[str]],
    baseline: list[float],
    num_sentences: int,
    batch_size: int,
    repeats: int,
) -> Row:
    """Sentences/s of `predict` on `texts` (which hold `num_sentences` sentences) against the token classifier's
    `baseline` seconds on the same texts."""
    maral = time_runs(lambda: predict(texts), repeats, lambda: predict(texts[:batch_size]))
    maral_rate = num_sentences / statistics.median(maral)
    baseline_rate = num_sentences / statistics.median(baseline)
    return Row(
        name,
        "sentences/s",
        maral_rate,
        baseline_rate,
        goal=f">= {GOALS['inference']}x",
        met=maral_rate / baseline_rate >= GOALS["inference"],
        details={
            "sentences": num_sentences,
            "texts": len(texts),
            "batch_size": batch_size,
            "maral_s": maral,
            "baseline_s": baseline,
        },
    )


def join_into_documents(sentences: list[list[str]], words: int) -> list[list[str]]:
    """Consecutive sentences joined into texts of at least `words` words (the last one may be shorter)."""
    documents: list[list[str]] = [[]]
    for sentence in sentences:
        if len(documents[-1]) >= words:
            documents.append([])
        documents[-1].extend(sentence)
    return [document for document in documents if document]


def export_to_onnx(span_model: MaralForSpanNER, folder: Path):
    """The benchmark's span model exported and loaded by ONNX Runtime, or None without the `onnx` extra."""
    try:
        from onnx_maral import OnnxMaralForSpanNER, export_onnx

        span_model.save_pretrained(folder / "model")
        export_onnx(folder / "model", folder / "onnx")
        return OnnxMaralForSpanNER.from_pretrained(folder / "onnx", num_threads=torch.get_num_threads())
    except ImportError as error:
        print(f"(a2) skipped: {error}", file=sys.stderr)
        return None


def measure_inference(
    span_model: MaralForSpanNER,
    encoder: Path,
    sentences: list[list[str]],
    batch_size: int,
    repeats: int,
    document_words: int,
) -> dict[str, Row]:
    """(a), (a2), (a3): sentences/s of the span model's prediction paths and of a token classifier on the same
    encoder and texts."""
    max_length = span_model.config.max_seq_length
    stride = (max_length - span_model.tokenizer.num_special_tokens_to_add()) // 4  # `predict`'s default
    baseline = time_token_classifier(encoder, span_model.tokenizer, sentences, batch_size, max_length, repeats)
    row = functools.partial(inference_row, num_sentences=len(sentences), batch_size=batch_size, repeats=repeats)
    rows = {
        "inference": row(
            "(a) inference, PyTorch", lambda texts: span_model.predict_words(texts, batch_size), sentences, baseline
        )
    }
    with tempfile.TemporaryDirectory() as folder:
        onnx_model = export_to_onnx(span_model, Path(folder))
        if onnx_model is not None:
            predict = onnx_model.predict_words
            rows["inference_onnx"] = row(
                "(a2) inference, ONNX RT", lambda texts: predict(texts, batch_size), sentences, baseline
            )
    documents = join_into_documents(sentences, document_words)
    document_baseline = time_token_classifier(
        encoder, span_model.tokenizer, documents, batch_size, max_length, repeats, stride
    )
    rows["inference_long"] = row(
        "(a3) long texts", lambda texts: span_model.predict(texts, batch_size), documents, document_baseline
    )
    for measured in rows.values():
        measured.details["decoding"] = span_model.config.decoding
    rows["inference_long"].details.update(document_words=document_words, stride=stride)
    return rows


class StepTimer(TrainerCallback):
    """Times the steps of the second epoch: from after its start-of-epoch hooks (this callback runs after the
    objective's) to its last step, source data loading included, epoch-end work excluded."""

    def __init__(self) -> None:
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None
        self.steps = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        if int(math.floor(state.epoch or 0)) == 1:
            self.start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None:
            self.end = (time.perf_counter(), time.process_time())
            self.steps += 1

    @property
    def seconds(self) -> tuple[float, float]:
        """Wall-clock and process-CPU seconds of the timed steps."""
        if self.start is None or self.end is None:
            raise RuntimeError("The second (timed) epoch did not run.")
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


def train_and_time(
    method: str,
    encoder: Path,
    source,
    target,
    store: PseudoLabelStore | None,
    class_counts: np.ndarray,
    batch_size: int,
    steps: int,
) -> dict[str, float]:
    """Train a fresh span model for two epochs of ``steps`` steps (``source`` holds ``batch_size x steps``
    sentences) and time the second epoch.

    ``source_only`` is the trainer's default (teacher) objective: source CE + target MLM. ``maral`` is the student
    objective built as `SelfTrainingPipeline._student_stage` does; with ``update_soft_start=0`` its second epoch
    runs the full method (GMM anchors, kNN counts, margins, refinement).

    Returns:
        ``seconds``, ``cpu_seconds`` and ``seconds_per_sentence`` (per source + target sentence).
    """
    model = build_span_model(encoder)
    with tempfile.TemporaryDirectory() as output_dir:
        args = MaralTrainingArguments(
            output_dir=output_dir,
            method=method,
            max_steps=2 * steps,
            num_train_epochs=2,
            per_device_train_batch_size=batch_size,
            target_batch_size=batch_size,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            **TRAINING_SETTINGS,
        )
        class_weights = class_weights_from_counts(class_counts)
        objective = None
        if store is not None:
            objective = build_objective(
                method,
                ObjectiveContext(
                    args,
                    model.config.num_labels,
                    class_weights,
                    source_class_counts=class_counts,
                    store=store,
                    has_target_text=True,
                    round_index=1,
                    temperature=model.config.contrastive_temperature,
                ),
            )
        trainer = MaralTrainer(
            model=model,
            args=args,
            train_dataset=source,
            target_dataset=target,
            objective=objective,
            class_weights=class_weights,
            processing_class=model.tokenizer,
        )
        trainer.remove_callback(PrinterCallback)  # the table is the only output
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    if timer.steps != steps:
        raise RuntimeError(f"{method}: timed {timer.steps} steps instead of {steps}.")
    seconds, cpu_seconds = timer.seconds
    del trainer, model, objective
    gc.collect()
    sentences = steps * (batch_size + batch_size)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "seconds_per_sentence": seconds / sentences}


def measure_training(
    encoder: Path,
    source,
    target,
    labeller: MaralForSpanNER,
    batch_size: int,
    inference_batch_size: int,
    steps: int,
    repeats: int = 1,
) -> Row:
    """(b): training seconds per (source + target) sentence, MARAL student against source-only.

    The two objectives alternate `repeats` times (source-only, MARAL, source-only, ...), so that a change in the
    machine's load affects both alike; the row holds the median of each.
    """
    class_counts = count_span_labels(source, labeller.config.max_span_width)
    store = generate_pseudo_labels(labeller, target, inference_batch_size, "legacy")
    runs: dict[str, list[dict[str, float]]] = {"source_only": [], "maral": []}
    for _ in range(repeats):
        for method, method_store in (("source_only", None), ("maral", store)):
            runs[method].append(
                train_and_time(method, encoder, source, target, method_store, class_counts, batch_size, steps)
            )
    medians = {
        method: {key: statistics.median(run[key] for run in method_runs) for key in method_runs[0]}
        for method, method_runs in runs.items()
    }
    ratio = medians["maral"]["seconds_per_sentence"] / medians["source_only"]["seconds_per_sentence"]
    return Row(
        "(b) training",
        "s/sentence",
        medians["maral"]["seconds_per_sentence"],
        medians["source_only"]["seconds_per_sentence"],
        goal=f"<= {GOALS['training']}x",
        met=ratio <= GOALS["training"],
        details={
            "steps": steps,
            "batch_size": batch_size,
            "repeats": repeats,
            "cpu_seconds_ratio": medians["maral"]["cpu_seconds"] / medians["source_only"]["cpu_seconds"],
            **medians,
            "runs": runs,
        },
    )


def dense_reference_nbytes(num_sentences: int, num_labels: int) -> int:
    """Bytes of the reference layout: float32 soft labels and logit cache `N x 512 x C`, two bool `N x 512` masks."""
    slots = num_sentences * REFERENCE_SPAN_SLOTS
    return 2 * slots * num_labels * 4 + 2 * slots


def measure_pseudo_label_state(model: MaralForSpanNER, target, chunk_size: int = 1024) -> Row:
    """(d): `PseudoLabelStore.nbytes()` for every span of ``target`` (dummy one-hot `O` labels from
    `featurize_words` span counts, no forward pass) against the dense reference layout."""
    counts, words = [], []
    tokens = target["tokens"]
    for begin in range(0, len(tokens), chunk_size):
        features = featurize_words(
            model.tokenizer,
            tokens[begin : begin + chunk_size],
            model.config.max_span_width,
            model.config.max_seq_length,
        )
        counts.extend(len(sentence.span_words) for sentence in features)
        words.extend(sentence.span_words for sentence in features)
    num_spans = sum(counts)
    probabilities = torch.zeros(num_spans, len(LABELS))
    probabilities[:, 0] = 1.0
    store = PseudoLabelStore(
        torch.tensor(target["sentence_id"]),
        torch.tensor(counts),
        torch.from_numpy(np.concatenate(words)) if words else torch.zeros(0, 2, dtype=torch.long),
        probabilities,
    )
    stored, dense = store.nbytes(), dense_reference_nbytes(len(tokens), len(LABELS))
    return Row(
        "(d) pseudo-label state",
        "MB",
        stored / 2**20,
        dense / 2**20,
        goal=f"<= {GOALS['pseudo_labels']}",
        met=stored / dense <= GOALS["pseudo_labels"],
        details={"sentences": len(tokens), "spans": num_spans, "store_bytes": stored, "dense_bytes": dense},
    )


def measure_collator(model: MaralForSpanNER, source, batch_size: int, repeats: int) -> Row:
    """(e): sentences/s of `MaralDataCollator` (features, padding, gold labels) on source rows."""
    collator = MaralDataCollator(model.tokenizer, model.config.max_span_width, model.config.max_seq_length)
    rows = [source[index] for index in range(len(source))]
    batches = [rows[begin : begin + batch_size] for begin in range(0, len(rows), batch_size)]
    seconds = time_runs(lambda: [collator(batch) for batch in batches], repeats, lambda: collator(batches[0]))
    return Row(
        "(e) collator",
        "sentences/s",
        len(rows) / statistics.median(seconds),
        details={"sentences": len(rows), "batch_size": batch_size, "seconds": seconds},
    )


def format_table(rows: list[Row], footnotes: list[str]) -> str:
    """Render the rows as a fixed-width text table with footnotes."""
    header = f"{'measurement':<24} {'unit':<12} {'MARAL':>10} {'reference':>10} {'ratio':>8} {'goal':>9} {'met':>4}"
    lines = [header, "-" * len(header)]
    for row in rows:
        reference = "-" if row.reference is None else f"{row.reference:.4g}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(
            f"{row.name:<24} {row.unit:<12} {row.maral:>10.4g} {reference:>10} {ratio:>8} {row.goal:>9} {met:>4}"
        )
    return "\n".join([*lines, "", *footnotes])


def footnotes(rows: dict[str, Row], args: argparse.Namespace) -> list[str]:
    """What each row measures."""
    inference, training = rows["inference"].details, rows["training"].details
    long = rows["inference_long"].details
    state = rows["pseudo_labels"].details
    labeller = f"the trained model {args.teacher}" if args.teacher else "the untrained span model"
    return [
        f"(a) {inference['sentences']} target sentences, batch {inference['batch_size']}, median of {args.repeats} "
        f"runs; MARAL = predict_words ({labeller}: tokenize, span features, forward, {inference['decoding']} "
        "decoding); reference = "
        "AutoModelForTokenClassification (9 BIO labels) on the same encoder, is_split_into_words, no_grad, same "
        "length-sorted batches, argmax and first-subword label per word. (a2) the same sentences with the model "
        "exported by onnx_maral and run by ONNX Runtime (CPU, as many threads as torch); the same reference. (a3) "
        f"the same sentences joined into {long['texts']} texts of >= {long['document_words']} words; MARAL = "
        f"predict (windows of max_seq_length subwords sharing {long['stride']}, merged); reference = the token "
        "classifier over the tokenizer's overflowing windows with the same stride.",
        f"(b) {training['steps']} optimizer steps of {training['batch_size']} source + {training['batch_size']} "
        "target sentences, timed in the 2nd epoch of trainer.train() (the 1st is the warm-up; epoch hooks are not "
        f"timed), median of {training['repeats']} alternating runs of each; MARAL = student objective "
        "(update_soft_start=0, so anchors, kNN counts and refinement run) on "
        f"pseudo-labels of {labeller}; reference = the trainer's default source-only objective (source CE + target "
        "MLM). Word embeddings frozen; CPU seconds: "
        f"MARAL {training['maral']['cpu_seconds']:.1f}, source-only {training['source_only']['cpu_seconds']:.1f} "
        f"(ratio {training['cpu_seconds_ratio']:.3f}).",
        "(c) peak RSS (ru_maxrss) of this process over all rows.",
        f"(d) all {state['sentences']} sentences of {args.target_file.name} ({state['spans']} spans): store built "
        "from featurize_words span counts with dummy one-hot O probabilities (no forward pass); reference = dense "
        f"N x {REFERENCE_SPAN_SLOTS} x C float32 soft labels + logit cache + two N x {REFERENCE_SPAN_SLOTS} bool "
        "masks.",
        f"(e) MaralDataCollator (span features, padding, gold labels) on {rows['collator'].details['sentences']} "
        f"source sentences, batch {rows['collator'].details['batch_size']}, median of {args.repeats} runs.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table (and write the JSON); returns the exit status."""
    args = parse_args(argv)
    if not (args.encoder / "config.json").is_file():
        sys.exit(f"No encoder at {args.encoder}: run `make encoder` first.")
    for path in (args.source_file, args.target_file):
        if not path.is_file():
            sys.exit(f"No data file {path}: pass --data_dir or --source_file/--target_file.")
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    train_sentences = args.train_batch_size * args.train_steps
    source = load_spans(str(args.source_file), labels=LABELS, max_samples=max(args.num_sentences, train_sentences))
    target_all = load_spans(str(args.target_file), labels=LABELS, unlabeled=True)
    target = target_all.select(range(min(args.num_sentences, len(target_all))))
    if len(source) < train_sentences:
        sys.exit(f"{args.source_file} has {len(source)} sentences; (b) needs {train_sentences}.")

    rows: dict[str, Row] = {}
    model = build_span_model(args.encoder, args.teacher)
    rows.update(
        measure_inference(model, args.encoder, target["tokens"], args.batch_size, args.repeats, args.document_words)
    )
    rows["collator"] = measure_collator(
        model, source.select(range(min(args.num_sentences, len(source)))), args.train_batch_size, args.repeats
    )
    rows["pseudo_labels"] = measure_pseudo_label_state(model, target_all)
    rows["training"] = measure_training(
        args.encoder,
        source.select(range(train_sentences)),
        target,
        model,
        args.train_batch_size,
        args.batch_size,
        args.train_steps,
        args.training_repeats,
    )
    del model
    gc.collect()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows["peak_rss"] = Row("(c) peak RSS", "MB", peak_rss)

    names = ("inference", "inference_onnx", "inference_long", "training", "peak_rss", "pseudo_labels", "collator")
    ordered = [rows[name] for name in names if name in rows]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, encoder {args.encoder.name}"
    )
    print(format_table(ordered, footnotes(rows, args)))
    if args.output is not None:
        record = {
            name: {
                "unit": row.unit,
                "maral": row.maral,
                "reference": row.reference,
                "ratio": row.ratio,
                "goal": row.goal,
                "met": row.met,
                "details": row.details,
            }
            for name, row in rows.items()
        }
        record["config"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        record["machine"] = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
