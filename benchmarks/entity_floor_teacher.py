# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The entity floor on a trained model alone: how much of a student's gain is the floor's calibration of decisions.

`--target_entity_floor` acts twice in self-training: on the teacher's pseudo-labels and on the student's saved
decisions (`o_logit_offset`). This script applies only the second to a model that has no student stage (a matrix
teacher, `source_only`): it finds the floor's `O` offset on the unlabelled target text of a matrix sample (no target
labels), and scores the target test set with and without it, so that a student's gain can be split into "the
calibrated decision" and "what training on the lifted pseudo-labels adds".

    python benchmarks/entity_floor_teacher.py --dataset wikiann_hi --seed 1

prints a table and writes `benchmarks/results/<dataset>/source_only_floor_seed<k>.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from benchmarks.matrix import weights_fingerprint  # noqa: E402
from data_loading import load_spans  # noqa: E402
from data_loading.statistics import count_span_labels  # noqa: E402
from evaluation_maral import evaluate_datasets  # noqa: E402
from modeling_maral import MaralForSpanNER  # noqa: E402
from objectives.entity_floor import entity_floor_offset, source_entities_per_sentence  # noqa: E402

METRICS = ("span_f1", "span_precision", "span_recall", "seqeval_f1")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="A matrix dataset (conll_de, wikiann_hi, ...).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ratio", type=float, default=0.5, help="The floor, as --target_entity_floor.")
    parser.add_argument("--pruning", default="legacy", help="Overlap resolution of the count (as for pseudo-labels).")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output_dir", default=str(REPOSITORY / "outputs" / "benchmarks"))
    parser.add_argument("--results_dir", default=str(REPOSITORY / "benchmarks" / "results"))
    return parser.parse_args(argv)


def score(model: MaralForSpanNER, test, offset: float, batch_size: int) -> dict[str, float]:
    """Target test metrics of `model` with its `O` logit lowered by `offset`."""
    model.config.o_logit_offset = offset
    return evaluate_datasets(model, {"": test}, "target_test", batch_size, per_label=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    run_dir = Path(args.output_dir) / args.dataset
    model_dir, data_dir = run_dir / f"source_only_seed{args.seed}", run_dir / f"data_seed{args.seed}"
    if not (model_dir / "config.json").is_file():
        sys.exit(f"No teacher in {model_dir}: run `python benchmarks/matrix.py --dataset {args.dataset} --method "
                 f"source_only --seed {args.seed}` first.")  # fmt: skip
    started = time.perf_counter()
    model = MaralForSpanNER.from_pretrained(model_dir).eval()
    labels = model.config.labels
    source = load_spans(str(data_dir / "source_train.json"), labels=labels)
    target = load_spans(str(data_dir / "target_unlabeled.json"), labels=labels, unlabeled=True)
    test = load_spans(str(data_dir / "target_test.json"), labels=labels)
    source_rate = source_entities_per_sentence(count_span_labels(source, model.config.max_span_width), len(source))
    predictions = model.predict_words(target["tokens"], batch_size=args.batch_size, decoding=args.pruning)
    offset = entity_floor_offset(predictions, args.pruning, args.ratio * source_rate)

    rows = {"without the floor": score(model, test, 0.0, args.batch_size)}
    # The same decisions without an offset (a teacher that reaches the floor): no second pass over the test set.
    rows["with the floor"] = score(model, test, offset, args.batch_size) if offset else rows["without the floor"]
    with_floor, without_floor = (
        {f"target_test_{metric}": rows[name][f"target_test_{metric}"] for metric in METRICS}
        for name in ("with the floor", "without the floor")
    )
    result = {
        "method": "source_only_floor",
        "dataset": args.dataset,
        "seed": args.seed,
        "ratio": args.ratio,
        "source_entities_per_sentence": source_rate,
        "o_logit_offset": offset,
        **with_floor,
        "without_floor": without_floor,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "teacher": str(model_dir),
        "teacher_fingerprint": weights_fingerprint(model_dir),
    }  # fmt: skip
    path = Path(args.results_dir) / args.dataset / f"source_only_floor_seed{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"{args.dataset} seed {args.seed}: floor {args.ratio} x {source_rate:.2f} entities per source sentence, "
          f"O offset {offset:.3f} nats")  # fmt: skip
    print("| teacher | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, metrics in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * metrics[f'target_test_{m}']:.2f}" for m in METRICS) + " |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
