#!/usr/bin/env python
"""The benchmark matrix: every method on CoNLL-03 en -> de and WikiANN en -> de/ar/hi/zh, over seeds, with one
shared teacher per (dataset, seed); one cell at a time or as a resumable queue of workers.

Datasets (under `--data_root`, default `../shared/data`; labels `O` + the types):

| `--dataset` | source train / dev | target unlabelled / test | types |
|---|---|---|---|
| `conll_de` | `conll03_en_de/spanner.train` / `.dev` | `spanner.unlabel` / `.test` | LOC MISC ORG PER |
| `wikiann_X` (de ar hi zh) | `wikiann/en/train.txt` / `dev.txt` | `wikiann/X/train.txt` / `test.txt` | LOC ORG PER |

The gold spans of the unlabelled target text only feed diagnostics (the pseudo-labels' oracle F1), never training
or selection. WikiANN's `token<TAB>tag` files are converted to span JSON: written as CoNLL, a sample whose first
word starts with `[` or `{` would be read as JSON. In `zh` (one "word" per character) a `#` token tagged `O` stands
for a space; inside a multi-word name (`約翰·葛倫 # (導演)`: `I-PER O I-PER`) it would split the name into two
entities, so such a `#` takes the name's `I-` tag (the entity counts then match the data's README).
`max_span_width` is 4 words, except 8 for `wikiann_zh`, whose words are characters: about 2 characters per Chinese
word x 4 words, fixed a priori (not tuned on target statistics).

Protocols (`--protocol`):

* `cpu` (default): per seed k, `random.Random` streams derived from k and the role draw 2,000 source training
  sentences, 1,000 source dev sentences and 2,000 unlabelled target sentences (without replacement, in file order,
  `-DOCSTART-` dropped first); the target test set is always complete. The samples are written to
  `outputs/benchmarks/<dataset>/data_seed<k>/`. The budget is the first round's: offline multilingual-e5-small
  with frozen word embeddings on the CPU, encoder learning rate 5e-5, heads 1e-3, batch 8, teacher (`source_only`)
  2 epochs, students 2 epochs on top of that teacher.
* `first_n`: the first round's setting (the README's first table, seed 42): the budget of `cpu` on the first
  2,000 / 1,000 / 2,000 sentences of each file (in file order, `-DOCSTART-` not counted), the same sample for
  every seed, which then only seeds the run; everything under `first_n/`. A sample in file order keeps the file's
  `-DOCSTART-` lines, which `run_xner.py` drops, so it trains on the sentences, and sentence ids, that
  `--max_train_samples 2000 --max_eval_samples 1000 --max_unlabeled_samples 2000` give on the original files.
* `gpu`: the paper's budget on one CUDA device: full data (no sampling), teacher 8 epochs, students 20,
  per-device batch 8 x gradient accumulation 4, learning rate 2e-5 (one rate for all parameters), 50 warm-up
  steps, bf16, no frozen embeddings; everything under `gpu/` in the output and result folders.

`--smoke` (for tests) keeps a protocol's code path but uses the first few sentences of each file and 1 + 1 epochs,
under `smoke/`; a `gpu` smoke run on a machine without CUDA runs on the CPU without bf16.

Cells: `source_only` is the teacher of its (dataset, seed) and is written to
`outputs/benchmarks/<dataset>/source_only_seed<k>`; `self_training`, `maral`, `contproto` and `mcl` load it as
`--teacher_checkpoint` and train their student for the student epochs; `pram` (no student stage) continues
training the teacher's weights for the student epochs; `mcl` runs without code-switched data. The run's `--seed`
is k. Results go to `benchmarks/results/<dataset>/<name>_seed<k>.json`; a cell whose result exists is skipped
unless `--force`.

    python benchmarks/matrix.py --dataset wikiann_zh --method source_only --seed 1
    python benchmarks/matrix.py --dataset wikiann_zh --method maral --seed 1
    python benchmarks/matrix.py --dataset conll_de --method maral --seed 1 --name maral_teacher_init -- \\
        --student_init teacher
    python benchmarks/matrix.py --protocol first_n --dataset conll_de --method source_only --seed 42

The queue runs the issue's cells (`PLAN_STAGES`: the seed-1 teachers, MARAL and self-training at seed 1, ContProto,
the other teachers, PRAM and MCL-NER, then the other seeds' students), each in its own process
(`OMP_NUM_THREADS=1`, log in `outputs/benchmarks/logs/`). A worker takes a cell
only when its teacher has finished, and claims it with an exclusive `flock` on
`outputs/benchmarks/locks/<cell>.lock` (which also records the pids): the kernel drops the lock when the worker
and its cell process are gone, so a lock left by a dead worker is free again, and two workers never run the same
cell. A failed cell is recorded under `failed/` and not retried unless `--retry_failed`.

    nohup python benchmarks/matrix.py --queue --worker_id 1 > outputs/benchmarks/worker1.log 2>&1 &
    python benchmarks/matrix.py --queue --dry_run            # the plan and each cell's status
    python benchmarks/matrix.py --queue --protocol gpu       # the whole matrix on one CUDA device

This file holds the protocols, cells and their folders, the run_xner.py flags of a cell, its result record and the
command line; `benchmarks/matrix_data.py` the datasets, their reading, sampling and preparation, and
`benchmarks/matrix_queue.py` the claims, statuses and workers of the queue.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: the project's modules and the `benchmarks` package

import run_xner  # noqa: E402
from benchmarks.matrix_data import DATASETS, ROLES, prepare_data, write_json_atomically  # noqa: E402
from benchmarks.matrix_queue import CellCommand, print_plan, run_queue  # noqa: E402
from trainer_maral import METHODS, OBJECTIVES  # noqa: E402

DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DEFAULT_ENCODER = REPO_ROOT / ".cache" / "encoders" / "multilingual-e5-small"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "outputs" / "benchmarks"
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
TEACHER_METHOD = "source_only"

RUN_XNER_FILE_FLAGS = {
    "source_train": "source_train_file",
    "source_dev": "source_validation_file",
    "target_unlabeled": "target_unlabeled_file",
    "target_test": "target_test_file",
}
"""The run_xner.py flag of each role's file."""


# ---------------------------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------------------------

TEACHER_EPOCHS = 2
STUDENT_EPOCHS = 2
# Steps between checkpoints of a cell (about 10 minutes of a CPU cell); only the newest is kept.
CHECKPOINT_STEPS = 100
# With two student epochs, MARAL's margins start after epoch 0 and anchors/refinement in epoch 1.
STUDENT_SETTINGS = {"update_soft_start": 0}
# The budget of the first round (its seed, 42 there, is the cell's). New span heads on a pretrained encoder need a
# larger rate than the encoder with this small budget.
BUDGET = {
    "learning_rate": 5e-5,
    "head_learning_rate": 1e-3,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 64,
    "mlm_weight": 0.001,
}
# The paper's stage-1/stage-2 scripts (method notes §5, §6.12).
GPU_BUDGET = {
    "learning_rate": 2e-5,
    "warmup_steps": 50,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 4,
    "per_device_eval_batch_size": 64,
    "mlm_weight": 0.001,
}
CPU_SAMPLE_SIZES = {"source_train": 2000, "source_dev": 1000, "target_unlabeled": 2000, "target_test": None}
CPU_DEVICE_FLAGS = ("--freeze_word_embeddings", "--use_cpu")
SMOKE_SAMPLE_SIZES = {"source_train": 12, "source_dev": 6, "target_unlabeled": 12, "target_test": 6}


@dataclass(frozen=True)
class Protocol:
    """How a cell is run: data sample, epochs, optimisation budget and device.

    Attributes:
        name: `cpu`, `first_n` or `gpu`.
        sample_sizes: Sentences per role; `None` keeps the whole file.
        random_sample: Draw the sentences at random (seeded by the cell's seed) instead of taking the first ones.
        teacher_epochs: Epochs of `source_only`.
        student_epochs: Epochs of the student stage (and of `pram`'s continued training).
        budget: run_xner.py settings of every cell.
        student_settings: Extra run_xner.py settings of the cells that start from the teacher.
        device_flags: run_xner.py switches that select the device and precision.
        smoke: A tiny run for tests.
    """

    name: str
    sample_sizes: Mapping[str, int | None]
    random_sample: bool
    teacher_epochs: int
    student_epochs: int
    budget: Mapping[str, Any]
    student_settings: Mapping[str, Any]
    device_flags: tuple[str, ...]
    smoke: bool = False

    @property
    def subdir(self) -> Path:
        """Folder of this protocol under the output and result roots (its name; none for the `cpu` protocol)."""
        return Path("" if self.name == "cpu" else self.name, "smoke" if self.smoke else "")


PROTOCOLS = {
    "cpu": Protocol(
        "cpu", CPU_SAMPLE_SIZES, True, TEACHER_EPOCHS, STUDENT_EPOCHS, BUDGET, STUDENT_SETTINGS, CPU_DEVICE_FLAGS
    ),
    # The first round (the README's first table): the same budget on the first sentences of each file.
    "first_n": Protocol(
        "first_n", CPU_SAMPLE_SIZES, False, TEACHER_EPOCHS, STUDENT_EPOCHS, BUDGET, STUDENT_SETTINGS, CPU_DEVICE_FLAGS
    ),
    "gpu": Protocol("gpu", dict.fromkeys(ROLES), False, 8, 20, GPU_BUDGET, {}, ("--bf16",)),
}


def resolve_protocol(
    name: str, smoke: bool = False, sample_sizes: Mapping[str, int | None] | None = None, cuda: bool | None = None
) -> Protocol:
    """The protocol `name`, made tiny by `smoke`, with `sample_sizes` replacing some of its sizes.

    Args:
        name: `cpu`, `first_n` or `gpu`.
        smoke: First few sentences of each file and 1 + 1 epochs; a `gpu` smoke run without CUDA uses the CPU.
        sample_sizes: Sentences per role (`None`: the whole file) that replace the protocol's.
        cuda: Whether a CUDA device is available (default: ask torch).
    """
    protocol = PROTOCOLS[name]
    if smoke:
        protocol = dataclasses.replace(
            protocol, sample_sizes=SMOKE_SAMPLE_SIZES, random_sample=False, teacher_epochs=1, student_epochs=1
        )
        if name == "gpu" and not (cuda_available() if cuda is None else cuda):
            protocol = dataclasses.replace(protocol, device_flags=("--use_cpu",))
        protocol = dataclasses.replace(protocol, smoke=True)
    if sample_sizes:
        protocol = dataclasses.replace(protocol, sample_sizes={**protocol.sample_sizes, **sample_sizes})
    return protocol


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_sample_sizes(text: str) -> dict[str, int | None]:
    """`source_train=20,target_test=all` -> `{"source_train": 20, "target_test": None}`."""
    sizes: dict[str, int | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, _, value = item.partition("=")
        if role not in ROLES or not value:
            raise argparse.ArgumentTypeError(f"{item!r}: use ROLE=N or ROLE=all with ROLE in {', '.join(ROLES)}.")
        if value != "all" and not (value.isdigit() and int(value) > 0):
            raise argparse.ArgumentTypeError(f"{item!r}: the size must be a positive number or 'all'.")
        sizes[role] = None if value == "all" else int(value)
    return sizes


# ---------------------------------------------------------------------------------------------------------------
# Cells, their folders and the plan
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of the matrix: a method (or a named variant of it) on a dataset with a seed."""

    dataset: str
    method: str
    seed: int
    name: str | None = None

    @property
    def run_name(self) -> str:
        """Name of the cell's output folder and result file (the method unless a variant is named)."""
        return self.name or self.method

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.run_name}_seed{self.seed}"

    @property
    def needs_teacher(self) -> bool:
        return self.method != TEACHER_METHOD

    @property
    def teacher(self) -> Cell:
        """The `source_only` cell of the same dataset and seed."""
        return Cell(self.dataset, TEACHER_METHOD, self.seed)


@dataclass(frozen=True)
class Layout:
    """Where a protocol's cells keep data, models, results, logs and locks."""

    output_root: Path
    results_root: Path

    @classmethod
    def for_protocol(cls, output_dir: Path, results_dir: Path, protocol: Protocol) -> Layout:
        return cls(output_dir / protocol.subdir, results_dir / protocol.subdir)

    def data_dir(self, dataset: str, seed: int) -> Path:
        return self.output_root / dataset / f"data_seed{seed}"

    def output_dir(self, cell: Cell) -> Path:
        return self.output_root / cell.dataset / f"{cell.run_name}_seed{cell.seed}"

    def result_file(self, cell: Cell) -> Path:
        return self.results_root / cell.dataset / f"{cell.run_name}_seed{cell.seed}.json"

    def log_file(self, cell: Cell) -> Path:
        return self.output_root / "logs" / f"{cell.key}.log"

    def lock_file(self, cell: Cell) -> Path:
        return self.output_root / "locks" / f"{cell.key}.lock"

    def failure_file(self, cell: Cell) -> Path:
        return self.output_root / "failed" / f"{cell.key}.json"

    def is_done(self, cell: Cell) -> bool:
        """Whether the cell has its result; a teacher also needs its saved model (the output folders are not
        committed: on a new machine a teacher with a committed result is trained again for its students)."""
        return self.result_file(cell).is_file() and (cell.needs_teacher or self.has_model(cell))

    def has_model(self, cell: Cell) -> bool:
        return (self.output_dir(cell) / "config.json").is_file()

    def teacher_ready(self, cell: Cell) -> bool:
        """Whether the cell can start: it needs no teacher, or its teacher has a result and a saved model."""
        teacher = cell.teacher
        return not cell.needs_teacher or self.is_done(teacher)


PLAN_SEEDS = {"wikiann_hi": (1,), "wikiann_ar": (1,), "conll_de": (1, 2, 3), "wikiann_zh": (1, 2, 3)}
"""Datasets of the queue (cheapest first: the order a stage runs them in) and their seeds."""
PLAN_STAGES: tuple[tuple[tuple[str, ...], tuple[int, ...] | None], ...] = (
    (("source_only",), (1,)),
    (("maral", "self_training"), (1,)),
    (("contproto",), (1,)),
    (("source_only",), None),
    (("pram", "mcl"), (1,)),
    (("maral", "self_training", "contproto"), None),
)
"""The queue's stages in priority order, each `(methods, seeds)` (`None`: every seed of the dataset). The comparison
the issue turns on comes first: the seed-1 teachers, then MARAL against self-training on each dataset, then
ContProto; the other seeds' teachers, PRAM and MCL-NER next, and the other seeds' students last."""


def build_plan(only_methods: Sequence[str] | None = None) -> list[Cell]:
    """The queue's cells in priority order: stage by stage (`PLAN_STAGES`), seed by seed, dataset by dataset, each
    cell once."""
    cells: dict[Cell, None] = {}
    for methods, stage_seeds in PLAN_STAGES:
        for seed in sorted({seed for seeds in PLAN_SEEDS.values() for seed in seeds}):
            for dataset, seeds in PLAN_SEEDS.items():
                if seed in seeds and (stage_seeds is None or seed in stage_seeds):
                    cells.update((Cell(dataset, method, seed), None) for method in methods)
    return [cell for cell in cells if only_methods is None or cell.method in only_methods]


# ---------------------------------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------------------------------


def build_argv(
    cell: Cell,
    protocol: Protocol,
    encoder: Path,
    data_files: Mapping[str, Path],
    layout: Layout,
    extra_flags: Sequence[str] = (),
) -> list[str]:
    """run_xner.py flags of a cell; `extra_flags` come last and so override the protocol."""
    spec = DATASETS[cell.dataset]
    settings = {
        "model_name_or_path": str(encoder),
        **{RUN_XNER_FILE_FLAGS[role]: str(path) for role, path in data_files.items()},
        "labels": ",".join(spec.labels),
        "source_language": "en",
        "target_language": spec.target_language,
        "max_span_width": spec.max_span_width,
        "method": cell.method,
        "output_dir": str(layout.output_dir(cell)),
        "eval_strategy": "no",
        # A checkpoint every CHECKPOINT_STEPS steps: a cell stopped half-way (a session ends) resumes from it.
        "save_strategy": "steps",
        "save_steps": CHECKPOINT_STEPS,
        "save_total_limit": 1,
        "logging_steps": 50,
        "disable_tqdm": True,
        "train_sampling_strategy": "group_by_length",
        "report_to": "none",
        **protocol.budget,
        "seed": cell.seed,
    }
    if cell.needs_teacher:
        settings.update(num_train_epochs=protocol.student_epochs, **protocol.student_settings)
        teacher_dir = str(layout.output_dir(cell.teacher))
        if OBJECTIVES[cell.method].self_training:
            # The teacher's own cell scored it already: do not evaluate it again (22 minutes on WikiANN zh test).
            settings.update(teacher_checkpoint=teacher_dir, score_loaded_teacher=False)
        else:  # PRAM has no student stage: it continues from the shared teacher for the student epochs
            settings["model_name_or_path"] = teacher_dir
    else:
        settings["num_train_epochs"] = protocol.teacher_epochs
    flags = [f"--{key}={value}" for key, value in settings.items()]
    flags += [*protocol.device_flags, "--do_train", "--overwrite_output_dir"]
    # Students are scored after their stage (`round_<r>_*`); evaluating the same model again would cost minutes.
    flags += [] if OBJECTIVES[cell.method].self_training else ["--do_eval", "--do_predict"]
    return flags + list(extra_flags)


def weights_fingerprint(model_dir: Path) -> str:
    """SHA-256 of a saved model's safetensors files: the identity of a teacher."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def self_training_log(output_dir: Path) -> list[dict]:
    """The records of `self_training_log.jsonl` (none for single-stage runs)."""
    log = output_dir / "self_training_log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def final_prefixes(method: str, results: Mapping[str, float]) -> tuple[str, str]:
    """Result-key prefixes of the source dev and target test scores of the final model."""
    if not OBJECTIVES[method].self_training:
        return "eval_source_dev", "predict_target_test"
    rounds = [int(key.split("_")[1]) for key in results if key.startswith("round_") and "_target_test_" in key]
    last = max(rounds, default=1)
    return f"round_{last}_source_dev", f"round_{last}_target_test"


def result_record(
    cell: Cell,
    protocol: Protocol,
    results: Mapping[str, float],
    wall_seconds: float,
    argv: list[str],
    output_dir: Path,
    teacher_fingerprint: str,
    sentences: Mapping[str, int],
    encoder: Path,
) -> dict:
    """The result file of a cell: final scores, diagnostics, the configuration and the machine."""
    dev, test = final_prefixes(cell.method, results)
    log = self_training_log(output_dir)
    return {
        "pseudo_label_oracle_f1": [
            {"stage": record["stage"], "epoch": record.get("epoch"), "f1": record["pseudo_label_oracle"]["f1"]}
            for record in log
            if "pseudo_label_oracle" in record
        ],
        "student_epochs": [record for record in log if record["stage"] != "teacher"],
        "method": cell.run_name,
        "objective": cell.method,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "protocol": protocol.name + (" (smoke)" if protocol.smoke else ""),
        "teacher_fingerprint": teacher_fingerprint,
        "target_test_span_f1": results[f"{test}_span_f1"],
        "target_test_seqeval_f1": results[f"{test}_seqeval_f1"],
        "target_test_seqeval_precision": results[f"{test}_seqeval_precision"],
        "target_test_seqeval_recall": results[f"{test}_seqeval_recall"],
        "source_dev_span_f1": results[f"{dev}_span_f1"],
        "source_dev_seqeval_f1": results[f"{dev}_seqeval_f1"],
        "wall_seconds": round(wall_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "config": {
            "sample_sizes": dict(protocol.sample_sizes),
            "random_sample": protocol.random_sample,
            "sentences": dict(sentences),
            "teacher_epochs": protocol.teacher_epochs,
            "student_epochs": protocol.student_epochs,
            "budget": dict(protocol.budget),
            "student_settings": dict(protocol.student_settings),
            "max_span_width": DATASETS[cell.dataset].max_span_width,
            "encoder": encoder_description(encoder),
            "test": "full target test set" if protocol.sample_sizes.get("target_test") is None else "sample",
            "argv": argv,
        },
        "machine": machine_description(),
        "all_results": dict(results),
    }


def encoder_description(encoder: Path) -> dict:
    """The encoder's path and, for the converted offline encoder, what it was converted from."""
    conversion = encoder / "conversion.json"
    description: dict[str, Any] = {"path": str(encoder)}
    if conversion.is_file():
        description["conversion"] = json.loads(conversion.read_text(encoding="utf-8"))
    return description


def machine_description() -> dict:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cpu_threads": torch.get_num_threads(),
    }


def run_cell(
    cell: Cell,
    protocol: Protocol,
    layout: Layout,
    data_root: Path,
    encoder: Path,
    extra_flags: Sequence[str] = (),
    force: bool = False,
) -> Path | None:
    """Prepares the data, trains and scores one cell in this process and writes its result file.

    Returns:
        The result file, or `None` when it already existed (and `force` is off).

    Raises:
        SystemExit: Without an encoder, a finished teacher (for a student), or CUDA (`gpu` protocol).
    """
    result_file = layout.result_file(cell)
    if layout.is_done(cell) and not force:
        print(f"skipping {cell.key}: {result_file} exists (pass --force to run it again)")
        return None
    check_can_run(cell, protocol, layout, encoder)
    data_dir = layout.data_dir(cell.dataset, cell.seed)
    data_files, sentences = prepare_data(
        cell.dataset, data_root, data_dir, cell.seed, protocol.sample_sizes, protocol.random_sample
    )
    resumed = has_checkpoint(layout.output_dir(cell))
    argv = build_argv(cell, protocol, encoder, data_files, layout, extra_flags)
    argv += ["--resume_from_checkpoint=true"] if resumed else []
    teacher_dir = layout.output_dir(cell.teacher)
    teacher_fingerprint = weights_fingerprint(teacher_dir) if cell.needs_teacher else ""
    start = time.perf_counter()
    results = run_xner.main(argv)
    wall_seconds = time.perf_counter() - start
    output_dir = layout.output_dir(cell)
    teacher_fingerprint = teacher_fingerprint or weights_fingerprint(output_dir)
    record = result_record(
        cell, protocol, results, wall_seconds, argv, output_dir, teacher_fingerprint, sentences, encoder
    )
    record["resumed_from_checkpoint"] = resumed  # then wall_seconds counts this process only
    write_json_atomically(result_file, record)
    print(f"\n{cell.key}: target test span F1 {100 * record['target_test_span_f1']:.2f}, wrote {result_file}")
    return result_file


def has_checkpoint(output_dir: Path) -> bool:
    """Whether an interrupted run left a checkpoint in `output_dir` (its own, or in a stage being trained)."""
    return any(output_dir.glob("checkpoint-*")) or any(output_dir.glob("**/*.partial/checkpoint-*"))


def check_can_run(cell: Cell, protocol: Protocol, layout: Layout, encoder: Path) -> None:
    """Exits with a message when the encoder, the teacher (of a student) or the CUDA device is missing."""
    if not (encoder / "config.json").is_file():
        sys.exit(f"No encoder at {encoder}: run `make encoder` first (or pass --encoder).")
    if not layout.teacher_ready(cell):
        teacher = cell.teacher
        sys.exit(
            f"No finished teacher for {cell.dataset} seed {cell.seed}: expected {layout.result_file(teacher)} and "
            f"a model in {layout.output_dir(teacher)}. Run `python benchmarks/matrix.py --dataset {cell.dataset} "
            f"--method {TEACHER_METHOD} --seed {cell.seed}` (same --protocol) first."
        )
    if "--bf16" in protocol.device_flags and not cuda_available():
        sys.exit("The gpu protocol needs a CUDA device (or --smoke, which then runs on the CPU).")


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_method_list(text: str) -> list[str]:
    methods = [method.strip() for method in text.split(",") if method.strip()]
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    return methods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cell = parser.add_argument_group("one cell")
    cell.add_argument("--dataset", choices=DATASETS)
    cell.add_argument("--method", choices=METHODS, default=TEACHER_METHOD)
    cell.add_argument("--seed", type=int, default=1)
    cell.add_argument("--name", default=None, help="Name of a variant's output and result (default: the method).")
    cell.add_argument("--force", action="store_true", help="Run the cell even if its result exists.")
    cell.add_argument("extra_flags", nargs="*", help="run_xner.py flags after `--`; they override the protocol.")
    queue = parser.add_argument_group("queue")
    queue.add_argument("--queue", action="store_true", help="Run the plan's cells in priority order.")
    queue.add_argument("--worker_id", type=int, default=0)
    queue.add_argument("--only_methods", type=parse_method_list, default=None, help="e.g. source_only,contproto")
    queue.add_argument("--dry_run", action="store_true", help="Print the plan and each cell's status.")
    queue.add_argument("--retry_failed", action="store_true", help="Also take cells that failed before.")
    queue.add_argument("--poll_seconds", type=float, default=60.0)
    queue.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each cell process.")
    where = parser.add_argument_group("protocol and folders")
    where.add_argument("--protocol", choices=PROTOCOLS, default="cpu")
    where.add_argument("--smoke", action="store_true", help="Tiny data and 1 + 1 epochs (tests).")
    where.add_argument("--sample_sizes", type=parse_sample_sizes, default=None, help="e.g. source_train=20,...")
    where.add_argument("--data_root", type=Path, default=DEFAULT_DATA_ROOT)
    where.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER)
    where.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    where.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS_DIR)
    return parser


def shared_flags(args: argparse.Namespace) -> list[str]:
    """The flags a queue passes on to each of its cell processes."""
    flags = ["--protocol", args.protocol, "--data_root", str(args.data_root.resolve()), "--encoder"]
    flags += [str(args.encoder.resolve()), "--output_dir", str(args.output_dir.resolve())]
    flags += ["--results_dir", str(args.results_dir.resolve())]
    flags += ["--smoke"] if args.smoke else []
    if args.sample_sizes:
        sizes = ",".join(f"{role}={'all' if size is None else size}" for role, size in args.sample_sizes.items())
        flags += ["--sample_sizes", sizes]
    return flags


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    protocol = resolve_protocol(args.protocol, args.smoke, args.sample_sizes)
    layout = Layout.for_protocol(args.output_dir, args.results_dir, protocol)
    if args.queue or args.dry_run:
        plan = build_plan(args.only_methods)
        if args.dry_run:
            print_plan(plan, layout)
            return
        launcher = CellCommand(layout, shared_flags(args), args.threads, args.worker_id)
        run_queue(plan, layout, launcher, args.worker_id, args.poll_seconds, args.retry_failed)
        return
    if args.dataset is None:
        parser.error("pass --dataset (one cell) or --queue.")
    name = args.name or args.method
    if args.extra_flags and name == args.method:
        parser.error("a run with extra flags needs its own `--name`, so that it does not replace the method's result.")
    cell = Cell(args.dataset, args.method, args.seed, args.name)
    run_cell(cell, protocol, layout, args.data_root, args.encoder, args.extra_flags, args.force)


if __name__ == "__main__":
    main()
