#!/usr/bin/env python
"""Summary of the benchmark matrix: per dataset and method, the mean ± sample standard deviation over seeds of the
target test span F1, seqeval F1 and source dev span F1, and the paired difference of the target test span F1
against `self_training` and `source_only` (same seed and same teacher, mean ± std over the seeds both have).

Reads `<results_dir>/<dataset>/*_seed*.json` (written by `benchmarks/matrix.py`), prints a Markdown table per
dataset (F1 in percent) and writes `<results_dir>/summary.json`:

    python benchmarks/summarize.py                                   # the CPU matrix
    python benchmarks/summarize.py --results_dir benchmarks/results/gpu
    python benchmarks/summarize.py --results_dir benchmarks/results/first_n    # the first_n protocol
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent / "results"
METRICS = ("target_test_span_f1", "target_test_seqeval_f1", "source_dev_span_f1")
BASELINES = ("self_training", "source_only")
DIFFERENCE_METRIC = "target_test_span_f1"
ROW_ORDER = ("source_only", "self_training", "contproto", "pram", "mcl", "maral")
"""Display order of the methods (variants follow their method, unknown names come last)."""
RESULT_NAME = re.compile(r"^(?P<name>.+)_seed(?P<seed>\d+)\.json$")


def load_results(results_dir: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """Result records by dataset, method (the record's name) and seed.

    Args:
        results_dir: Folder with one sub-folder of `<name>_seed<k>.json` files per dataset; sub-folders without
            such files (e.g. `gpu/`) are not datasets.
    """
    results: dict[str, dict[str, dict[int, dict]]] = {}
    for path in sorted(results_dir.glob("*/*_seed*.json")):
        match = RESULT_NAME.match(path.name)
        if match is None:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        method = record.get("method", match["name"])
        seed = int(record.get("seed", match["seed"]))
        results.setdefault(path.parent.name, {}).setdefault(method, {})[seed] = record
    return results


def mean_and_std(values: Sequence[float]) -> dict[str, float | int | None]:
    """`{"mean", "std", "n"}`; `std` is the sample standard deviation (`None` for fewer than two values)."""
    return {
        "mean": statistics.mean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def paired_differences(records: Mapping[int, dict], baseline: Mapping[int, dict], metric: str) -> dict[int, float]:
    """Per seed that both have with the same teacher: `records[seed][metric] - baseline[seed][metric]`.

    Records without a `teacher_fingerprint` are paired by seed alone.
    """
    differences = {}
    for seed in sorted(set(records) & set(baseline)):
        record, reference = records[seed], baseline[seed]
        teachers = (record.get("teacher_fingerprint"), reference.get("teacher_fingerprint"))
        if None not in teachers and teachers[0] != teachers[1]:
            continue
        differences[seed] = record[metric] - reference[metric]
    return differences


def summarize_method(records: Mapping[int, dict], methods: Mapping[str, Mapping[int, dict]]) -> dict:
    """Seeds, per-metric mean ± std and the paired differences against each baseline present."""
    summary: dict = {"seeds": sorted(records)}
    for metric in METRICS:
        # A diagnostic record may lack a metric (`entity_floor_teacher.py` scores the target test set only).
        summary[metric] = mean_and_std([records[seed][metric] for seed in sorted(records) if metric in records[seed]])
    for baseline in BASELINES:
        if baseline in methods:
            differences = paired_differences(records, methods[baseline], DIFFERENCE_METRIC)
            summary[f"{DIFFERENCE_METRIC}_minus_{baseline}"] = {
                **mean_and_std(list(differences.values())),
                "seeds": sorted(differences),
            }
    return summary


def row_rank(method: str) -> tuple[int, str]:
    """Sort key of a table row: the position of the method (or of the method a variant's name starts with)."""
    for position, known in enumerate(ROW_ORDER):
        if method == known or method.startswith(f"{known}_"):
            return position, method
    return len(ROW_ORDER), method


def summarize(results: Mapping[str, Mapping[str, Mapping[int, dict]]]) -> dict[str, dict[str, dict]]:
    """Summary by dataset and method (methods in display order)."""
    return {
        dataset: {method: summarize_method(methods[method], methods) for method in sorted(methods, key=row_rank)}
        for dataset, methods in sorted(results.items())
    }


def percent(statistic: Mapping[str, float | int | None], signed: bool = False) -> str:
    """`38.72 ± 1.05` (or `38.72` for one seed, `—` for none), in percent."""
    if statistic["mean"] is None:
        return "—"
    text = f"{100 * statistic['mean']:+.2f}" if signed else f"{100 * statistic['mean']:.2f}"
    return text if statistic["std"] is None else f"{text} ± {100 * statistic['std']:.2f}"


def markdown_tables(summary: Mapping[str, Mapping[str, dict]]) -> str:
    """One Markdown section per dataset, methods as rows."""
    header = ["method", "seeds", "target span F1", "target seqeval F1", "source dev span F1"]
    header += [f"Δ span F1 vs {baseline}" for baseline in BASELINES]
    sections = []
    for dataset, methods in summary.items():
        lines = [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, row in methods.items():
            cells = [method, ",".join(str(seed) for seed in row["seeds"])]
            cells += [percent(row[metric]) for metric in METRICS]
            cells += [difference_cell(method, row, baseline) for baseline in BASELINES]
            lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def difference_cell(method: str, row: Mapping[str, dict], baseline: str) -> str:
    key = f"{DIFFERENCE_METRIC}_minus_{baseline}"
    if method == baseline or key not in row:
        return "—"
    return percent(row[key], signed=True)


def main(argv: Iterable[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args(None if argv is None else list(argv))
    summary = summarize(load_results(args.results_dir))
    output = args.results_dir / "summary.json"
    output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(markdown_tables(summary))
    print(f"\nwrote {output}")
    return summary


if __name__ == "__main__":
    main()
