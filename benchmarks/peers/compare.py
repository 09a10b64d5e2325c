#!/usr/bin/env python
"""Peers side by side: SpanMarker and GLiNER trained on the benchmark's English sample, with its encoder and
budget, scored on its target test sets by this project's span F1 and seqeval, next to our `source_only` and `maral`.

A cell is one peer on one dataset with one seed (default 1). For each cell this script (in the main environment):

1. prepares the benchmark sample of the dataset and seed exactly as `benchmarks/matrix.py` does (the same function,
   the same folder `outputs/benchmarks/<dataset>/data_seed<k>/`: 2,000 English training sentences, 1,000 English
   dev sentences, the full target test set under the `cpu` protocol) and exports the sentences `load_spans` reads
   from it (`<role>.jsonl`: words, IOB2 tags, spans);
2. runs the peer's script (`spanmarker_peer.py`, `gliner_peer.py`) in the peers' own virtual environment
   (`benchmarks/peers/.venv`, transformers 4: `make peers-install`), with the protocol's budget: the offline
   multilingual-e5-small with frozen word embeddings, 2 epochs (the teacher's), batch 8, encoder learning rate 5e-5,
   1e-3 for everything else, 10 % warm-up, weight decay 0.01, the dataset's span width (4 words, 8 on WikiANN zh), 128
   as the input limit, the cell's seed, one thread; the peer trains on the English sentences only (our teacher also
   sees the unlabelled target text through its MLM term, weight 0.001) and predicts English dev and target test;
3. converts the peer's own output dicts into our span format (`predictions_<role>.jsonl`, as `run_xner.py` writes
   them) and scores them with `evaluation_maral` (`conversion.py`);
4. writes `benchmarks/results/peers/<peer>_<dataset>.json` (seed k > 1: under `peers/seed<k>/`): target test span
   F1 and seqeval P/R/F1, source dev F1, training seconds per sentence (seconds over sentences x epochs), inference
   sentences/s on the target test set, the peer process's peak RSS, and the whole run record.

Finished cells are skipped (`--force` reruns them); a cell whose peer finished but was not scored is only scored; a
peer stopped half-way resumes from its newest checkpoint (every 100 steps). Then it prints the comparison tables
(`--table`: only the tables; `--readme`: also write them into README.md's "Peers" section):

    make peers-install                                    # benchmarks/peers/.venv (SpanMarker, GLiNER, transformers 4)
    python benchmarks/peers/compare.py                    # every peer on conll_de and WikiANN ar/hi/zh, seed 1
    python benchmarks/peers/compare.py --peers gliner --datasets wikiann_hi
    python benchmarks/peers/compare.py --table --readme   # the tables from the results there are
    python benchmarks/peers/compare.py --smoke --max_steps 2 --output_dir /tmp/peers --results_dir /tmp/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: the project's modules and the `benchmarks` package

from benchmarks import matrix  # noqa: E402
from benchmarks.matrix_data import DATASETS, prepare_data  # noqa: E402
from benchmarks.peers.common import (  # noqa: E402
    CHECKPOINT_DIR,
    INPUT_ROLES,
    PREDICT_ROLES,
    RUN_RECORD,
    format_label_names,
    input_file,
    raw_predictions_file,
    read_jsonl,
    write_json,
    write_jsonl,
)
from benchmarks.peers.conversion import score_peer, sentence_predictions  # noqa: E402
from data_loading import load_spans  # noqa: E402
from evaluation_maral import entities_to_iob2, gold_entities  # noqa: E402
from modeling_maral import DEFAULT_MAX_SEQ_LENGTH  # noqa: E402
from prediction_io import write_predictions  # noqa: E402

PEERS_DIR = Path(__file__).resolve().parent
DEFAULT_PEER_PYTHON = PEERS_DIR / ".venv" / "bin" / "python"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "outputs" / "peers"
DEFAULT_DATASETS = ("wikiann_hi", "conll_de", "wikiann_ar", "wikiann_zh")
"""The benchmark's datasets, cheapest target test set first."""
OUR_METHODS = ("source_only", "maral")
PROTOCOLS = ("cpu", "first_n")
"""The CPU protocols (the `gpu` protocol's budget has no CPU peer run)."""
README = REPO_ROOT / "README.md"
README_BEGIN = "<!-- peers table: begin (python benchmarks/peers/compare.py --table --readme) -->"
README_END = "<!-- peers table: end -->"


@dataclass(frozen=True)
class PeerSpec:
    """How one peer is run and named.

    Attributes:
        script: Its script in `benchmarks/peers/`.
        label_names: Label -> the peer's name for it (labels not listed keep their own name).
    """

    script: str
    label_names: Mapping[str, str] = dataclasses.field(default_factory=dict)


PEERS = {
    "spanmarker": PeerSpec("spanmarker_peer.py"),
    # GLiNER reads its labels as prompts: natural-language type names.
    "gliner": PeerSpec(
        "gliner_peer.py", {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}
    ),
}


def label_names(peer: str, labels: Sequence[str]) -> dict[str, str]:
    """Label -> peer name for every entity type of `labels` (`O` first)."""
    return {label: PEERS[peer].label_names.get(label, label) for label in labels[1:]}


# ---------------------------------------------------------------------------------------------------------------
# Cells and their folders
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerCell:
    """One peer on one dataset with one seed."""

    peer: str
    dataset: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.peer}_{self.dataset}_seed{self.seed}"


@dataclass(frozen=True)
class PeerLayout:
    """Where the peers keep their runs and results, and where the matrix keeps its samples and our results."""

    output_root: Path
    results_root: Path
    benchmark: matrix.Layout

    @classmethod
    def for_protocol(
        cls, output_dir: Path, results_dir: Path, benchmark_output_dir: Path, protocol: matrix.Protocol
    ) -> PeerLayout:
        return cls(
            output_dir / protocol.subdir,
            results_dir / "peers" / protocol.subdir,
            matrix.Layout.for_protocol(benchmark_output_dir, results_dir, protocol),
        )

    def inputs_dir(self, cell: PeerCell) -> Path:
        """The exported sentences of the cell's sample (shared by the peers)."""
        return self.output_root / cell.dataset / f"inputs_seed{cell.seed}"

    def run_dir(self, cell: PeerCell) -> Path:
        return self.output_root / cell.dataset / f"{cell.peer}_seed{cell.seed}"

    def result_file(self, cell: PeerCell) -> Path:
        seed_dir = "" if cell.seed == 1 else f"seed{cell.seed}"
        return self.results_root / seed_dir / f"{cell.peer}_{cell.dataset}.json"

    def our_result_file(self, dataset: str, method: str, seed: int) -> Path:
        return self.benchmark.result_file(matrix.Cell(dataset, method, seed))


# ---------------------------------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------------------------------


def export_records(dataset, labels: Sequence[str]) -> Iterable[dict[str, Any]]:
    """The `<role>.jsonl` lines of a `load_spans` dataset: words, IOB2 tags and spans with label names."""
    for row in dataset:
        entities = gold_entities(row, "spans")
        yield {
            "sentence_id": row["sentence_id"],
            "tokens": row["tokens"],
            "tags": entities_to_iob2(entities, len(row["tokens"]), list(labels)),
            "spans": [{"start": start, "end": end, "label": labels[label]} for start, end, label in entities],
        }


def export_inputs(data_files: Mapping[str, Path], labels: Sequence[str], inputs_dir: Path) -> dict[str, Any]:
    """Loads the sample's files as `run_xner.py` does and writes the peers' `<role>.jsonl` files.

    Returns:
        The `load_spans` dataset of each role (the rows the peers' predictions are scored against).
    """
    datasets = {role: load_spans(str(data_files[role]), labels=list(labels)) for role in INPUT_ROLES}
    for role, dataset in datasets.items():
        write_jsonl(input_file(inputs_dir, role), export_records(dataset, labels))
    return datasets


def budget_flags(protocol: matrix.Protocol) -> dict[str, Any]:
    """The peer-script flags of the protocol's budget (the teacher's epochs: the peers are single-stage)."""
    budget = protocol.budget
    if budget["warmup_steps"] >= 1:
        raise SystemExit(f"--protocol {protocol.name}: warm-up in steps has no peer mapping (use cpu or first_n).")
    return {
        "epochs": protocol.teacher_epochs,
        "batch_size": budget["per_device_train_batch_size"],
        "eval_batch_size": budget["per_device_eval_batch_size"],
        "learning_rate": budget["learning_rate"],
        "head_learning_rate": budget.get("head_learning_rate", budget["learning_rate"]),
        "warmup_ratio": budget["warmup_steps"],
        "weight_decay": budget["weight_decay"],
    }


def peer_command(cell: PeerCell, protocol: matrix.Protocol, layout: PeerLayout, args: argparse.Namespace) -> list[str]:
    """The command line of a cell's peer run."""
    spec = DATASETS[cell.dataset]
    flags = {
        "encoder": args.encoder.resolve(),
        "inputs_dir": layout.inputs_dir(cell),
        "output_dir": layout.run_dir(cell),
        "labels": format_label_names(label_names(cell.peer, spec.labels)),
        "max_span_width": spec.max_span_width,
        "max_seq_length": DEFAULT_MAX_SEQ_LENGTH,
        **budget_flags(protocol),
        "seed": cell.seed,
        "threads": args.threads,
        "max_steps": args.max_steps,
    }
    command = [str(args.peer_python), str(PEERS_DIR / PEERS[cell.peer].script)]
    command += [f"--{key}={value}" for key, value in flags.items()]
    return command + (["--freeze_word_embeddings"] if "--freeze_word_embeddings" in protocol.device_flags else [])


def run_peer_process(cell: PeerCell, command: list[str], log_file: Path, threads: int) -> None:
    """Runs a peer script (offline, `threads` OpenMP threads), its output appended to `log_file`.

    Raises:
        SystemExit: When the peer fails, naming its log.
    """
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"{cell.key}: running {Path(command[1]).name}, log {log_file}", flush=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO_ROOT)
    if completed.returncode:
        raise SystemExit(f"{cell.key}: {Path(command[1]).name} exited with {completed.returncode}; see {log_file}.")


def score_run(cell: PeerCell, datasets: Mapping[str, Any], run_dir: Path) -> dict[str, dict[str, Any]]:
    """Scores the peer's raw predictions of each predicted role and writes them in our format
    (`predictions_<role>.jsonl`)."""
    spec = DATASETS[cell.dataset]
    labels = list(spec.labels)
    names = label_names(cell.peer, labels)
    metrics = {}
    for role in PREDICT_ROLES:
        raw_file = raw_predictions_file(run_dir, role)
        rows = datasets[role].to_list()
        metrics[role], entities = score_peer(
            rows, read_jsonl(raw_file), labels, names, spec.max_span_width, str(raw_file)
        )
        predictions = [sentence_predictions(sentence, len(labels)) for sentence in entities]
        write_predictions(run_dir / f"predictions_{role}.jsonl", datasets[role], predictions, labels)
    return metrics


def sentences_seen(run: Mapping[str, Any]) -> float:
    """Training sentences the peer processed: steps x batch when stopped by `--max_steps`, else sentences x
    epochs."""
    flags = run["flags"]
    if flags["max_steps"] > 0:
        return min(run["train_steps"] * flags["batch_size"], run["train_sentences"] * run["epochs"])
    return run["train_sentences"] * run["epochs"]


def result_record(
    cell: PeerCell,
    protocol: matrix.Protocol,
    metrics: Mapping[str, dict[str, Any]],
    run: Mapping[str, Any],
    sentences: Mapping[str, int],
    command: list[str],
) -> dict[str, Any]:
    """The result file of a cell: scores, costs, the configuration and the peer's run record."""
    test, dev = metrics["target_test"], metrics["source_dev"]
    predict = run["predict"]["target_test"]
    return {
        "peer": cell.peer,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "protocol": protocol.name + (" (smoke)" if protocol.smoke else ""),
        **{f"target_test_{key}": test[key] for key in test if key != "per_label"},
        "source_dev_span_f1": dev["span_f1"],
        "source_dev_seqeval_f1": dev["seqeval_f1"],
        "train_seconds": run["train_seconds"],
        "train_seconds_per_sentence": run["train_seconds"] / max(sentences_seen(run), 1),
        "inference_sentences_per_second": predict["sentences"] / max(predict["seconds"], 1e-9),
        "peak_rss_mb": run["peak_rss_mb"],
        "resumed_from_checkpoint": run["resumed_from_checkpoint"],
        "per_label": {role: metrics[role]["per_label"] for role in PREDICT_ROLES},
        "config": {
            "sample_sizes": dict(protocol.sample_sizes),
            "random_sample": protocol.random_sample,
            "sentences": dict(sentences),
            "budget": budget_flags(protocol),
            "max_span_width": DATASETS[cell.dataset].max_span_width,
            "label_names": label_names(cell.peer, DATASETS[cell.dataset].labels),
            "test": "full target test set" if protocol.sample_sizes.get("target_test") is None else "sample",
            "argv": command,
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "peer_run": dict(run),
    }


def run_cell(cell: PeerCell, protocol: matrix.Protocol, layout: PeerLayout, args: argparse.Namespace) -> Path | None:
    """Prepares, runs (unless the peer finished before), scores and records one cell.

    Returns:
        The result file, or `None` when it existed already (and `--force` is off).
    """
    result_file = layout.result_file(cell)
    if result_file.is_file() and not args.force:
        print(f"skipping {cell.key}: {result_file} exists (pass --force to run it again)")
        return None
    run_dir = layout.run_dir(cell)
    data_files, sentences = prepare_data(
        cell.dataset,
        args.data_root,
        layout.benchmark.data_dir(cell.dataset, cell.seed),
        cell.seed,
        protocol.sample_sizes,
        protocol.random_sample,
    )
    labels = DATASETS[cell.dataset].labels
    datasets = export_inputs(data_files, labels, layout.inputs_dir(cell))
    command = peer_command(cell, protocol, layout, args)
    if args.force or not (run_dir / RUN_RECORD).is_file():
        (run_dir / RUN_RECORD).unlink(missing_ok=True)
        run_peer_process(cell, command, run_dir / "peer.log", args.threads)
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # the run is complete: its checkpoints are not needed
    run = read_json(run_dir / RUN_RECORD)
    record = result_record(cell, protocol, score_run(cell, datasets, run_dir), run, sentences, command)
    write_json(result_file, record)
    print(f"{cell.key}: target test span F1 {100 * record['target_test_span_f1']:.2f}, wrote {result_file}")
    return result_file


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ratio(ours: float | None, peer: float | None) -> str:
    """Our figure over the peer's (`—` when either is missing or the peer's is 0)."""
    return "—" if ours is None or not peer else f"{ours / peer:.2f}"


def our_train_seconds_per_sentence(record: Mapping[str, Any] | None) -> float | None:
    """Our teacher's training seconds per sentence (the Trainer's samples/s counts sentences x epochs)."""
    rate = (record or {}).get("all_results", {}).get("train_samples_per_second")
    return 1 / rate if rate else None


def display_path(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def load_record(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def comparison_rows(
    layout: PeerLayout, peers: Sequence[str], datasets: Sequence[str], seed: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (dataset, peer): the peer's record and ours (`source_only`, `maral`) of the same seed.

    Returns:
        The rows and the names of the missing result files.
    """
    rows, missing = [], []
    for dataset in datasets:
        ours = {method: layout.our_result_file(dataset, method, seed) for method in OUR_METHODS}
        missing += [display_path(path) for path in ours.values() if not path.is_file()]
        for peer in peers:
            path = layout.result_file(PeerCell(peer, dataset, seed))
            if not path.is_file():
                missing.append(display_path(path))
            rows.append(
                {
                    "dataset": dataset,
                    "peer": peer,
                    "record": load_record(path),
                    **{method: load_record(ours[method]) for method in OUR_METHODS},
                }
            )
    return rows, sorted(set(missing))


def field(record: Mapping[str, Any] | None, key: str) -> float | None:
    return None if record is None else record.get(key)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def quality_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Target test F1 of each peer next to ours, and our span F1 over the peer's."""
    columns = ["dataset", "peer", "peer target span F1", "peer target seqeval F1", "peer English dev span F1"]
    columns += [f"{method} span F1 (÷ peer)" for method in OUR_METHODS]
    cells = []
    for row in rows:
        record = row["record"]
        peer_f1 = field(record, "target_test_span_f1")
        ours = [field(row[method], "target_test_span_f1") for method in OUR_METHODS]
        cells.append(
            [row["dataset"], row["peer"], percent(peer_f1), percent(field(record, "target_test_seqeval_f1"))]
            + [percent(field(record, "source_dev_span_f1"))]
            + [f"{percent(value)} ({ratio(value, peer_f1)})" for value in ours]
        )
    return markdown_table(columns, cells)


def cost_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Training and inference cost of each peer next to our teacher's (`source_only`: the same single stage)."""
    columns = ["dataset", "peer", "train s/sentence (source_only, ÷ peer)", "target inference sentences/s"]
    columns += ["peak RSS MB (source_only, ÷ peer)"]
    cells = []
    for row in rows:
        record, teacher = row["record"], row["source_only"]
        peer_seconds, our_seconds = (
            field(record, "train_seconds_per_sentence"),
            our_train_seconds_per_sentence(teacher),
        )
        peer_rss, our_rss = field(record, "peak_rss_mb"), field(teacher, "peak_rss_mb")
        cells.append(
            [row["dataset"], row["peer"]]
            + [f"{number(peer_seconds)} ({number(our_seconds)}, {ratio(our_seconds, peer_seconds)})"]
            + [number(field(record, "inference_sentences_per_second"), 2)]
            + [f"{number(peer_rss, 0)} ({number(our_rss, 0)}, {ratio(our_rss, peer_rss)})"]
        )
    return markdown_table(columns, cells)


def comparison_text(rows: Sequence[Mapping[str, Any]], missing: Sequence[str]) -> str:
    """The two Markdown tables and the list of missing result files."""
    lines = quality_table(rows) + [""] + cost_table(rows)
    if missing:
        lines += ["", f"Missing ({len(missing)}): " + ", ".join(f"`{name}`" for name in missing) + "."]
    return "\n".join(lines) + "\n"


def update_readme(text: str, readme: Path = README) -> None:
    """Replaces the text between the README's peers-table markers.

    Raises:
        SystemExit: When the markers are missing.
    """
    content = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + r"\n.*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"--readme: {readme} has no `{README_BEGIN}` ... `{README_END}` markers.")
    readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{text}{README_END}", content), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def name_list(choices: Sequence[str], flag: str):
    """An argparse type: comma-separated names out of `choices`."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{flag}: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(choices)}."
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cells = parser.add_argument_group("cells")
    cells.add_argument("--peers", type=name_list(tuple(PEERS), "--peers"), default=list(PEERS))
    cells.add_argument("--datasets", type=name_list(tuple(DATASETS), "--datasets"), default=list(DEFAULT_DATASETS))
    cells.add_argument("--seed", type=int, default=1)
    cells.add_argument("--force", action="store_true", help="Run cells whose result exists again.")
    cells.add_argument("--max_steps", type=int, default=-1, help="Stop each peer after N steps (smoke runs).")
    cells.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and torch threads of a peer.")
    tables = parser.add_argument_group("tables")
    tables.add_argument("--table", action="store_true", help="Only print the tables of the results there are.")
    tables.add_argument("--readme", action="store_true", help="Also write the tables into README.md.")
    where = parser.add_argument_group("protocol and folders")
    where.add_argument("--protocol", choices=PROTOCOLS, default="cpu")
    where.add_argument("--smoke", action="store_true", help="The protocol's smoke sample and 1 epoch.")
    where.add_argument("--sample_sizes", type=matrix.parse_sample_sizes, default=None)
    where.add_argument("--peer_python", type=Path, default=DEFAULT_PEER_PYTHON)
    where.add_argument("--data_root", type=Path, default=matrix.DEFAULT_DATA_ROOT)
    where.add_argument("--encoder", type=Path, default=matrix.DEFAULT_ENCODER)
    where.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="Peer runs.")
    where.add_argument("--benchmark_output_dir", type=Path, default=matrix.DEFAULT_OUTPUT_DIR, help="Samples.")
    where.add_argument("--results_dir", type=Path, default=matrix.DEFAULT_RESULTS_DIR)
    return parser


def check_can_run(args: argparse.Namespace) -> None:
    """Exits with a message when the peers' environment or the encoder is missing."""
    if not args.peer_python.is_file():
        sys.exit(f"--peer_python {args.peer_python}: not found; run `make peers-install` (benchmarks/peers/setup.sh).")
    if not (args.encoder / "config.json").is_file():
        sys.exit(f"--encoder {args.encoder}: no encoder there; run `make encoder` first.")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    protocol = matrix.resolve_protocol(args.protocol, args.smoke, args.sample_sizes)
    layout = PeerLayout.for_protocol(args.output_dir, args.results_dir, args.benchmark_output_dir, protocol)
    if not args.table:
        check_can_run(args)
        for dataset in args.datasets:
            for peer in args.peers:
                run_cell(PeerCell(peer, dataset, args.seed), protocol, layout, args)
    text = comparison_text(*comparison_rows(layout, args.peers, args.datasets, args.seed))
    print(text)
    if args.readme:
        update_readme(text)


if __name__ == "__main__":
    main()
