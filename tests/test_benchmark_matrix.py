"""Tests of the benchmark matrix (`benchmarks/matrix.py`: protocols, cells, the gpu protocol's smoke run;
`matrix_data.py`: sampling, WikiANN preparation; `matrix_queue.py`: claims and the queue) and of
`benchmarks/summarize.py` (mean, std and paired differences), on tiny files and the tiny random encoder."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks import matrix, matrix_data, matrix_queue, summarize
from data_loading import load_spans
from tests.tiny_models import TINY_SOURCE_RECORDS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# ----------------------------------------------------------------------------------------------------------------
# Tiny data in the shared data layout
# ----------------------------------------------------------------------------------------------------------------

EN_SENTENCES = [
    [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("visited", "O"), ("Brussels", "B-LOC"), (".", "O")],
    [("'", "O"), ("''", "O"), ("Anders", "B-PER"), ("Lindström", "I-PER"), ("''", "O"), ("'", "O")],
    [("===", "O")],  # list markup line
    [("[", "O"), ("Reuters", "B-ORG"), ("]", "O")],  # a first word starting with `[` (read as JSON if CoNLL)
    [("Angela", "B-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
    [("The", "O"), ("European", "B-ORG"), ("Union", "I-ORG"), ("said", "O")],
    [("Werner", "B-PER"), ("Zwingmann", "I-PER"), ("said", "O"), ("no", "O")],
    [("London", "B-LOC"), ("and", "O"), ("Berlin", "B-LOC")],
]
ZH_SENTENCES = [
    [("#", "O"), ("切", "B-LOC"), ("斯", "I-LOC"), ("特", "I-LOC"), ("#", "O"), ("(", "I-LOC"), (")", "I-LOC")],
    [("約", "B-PER"), ("翰", "I-PER"), ("#", "O"), ("葛", "I-PER"), ("倫", "I-PER"), ("#", "O"), ("說", "O")],
    [("1", "O"), ("9", "O"), ("\u200b", "O"), ("年", "O"), ("黃", "B-ORG"), ("百", "I-ORG")],
    [("香", "B-LOC"), ("港", "I-LOC"), ("#", "O"), ("黃", "B-PER"), ("百", "I-PER")],
    [("北", "B-LOC"), ("京", "I-LOC"), ("很", "O"), ("大", "O")],
    [("他", "O"), ("在", "O"), ("上", "B-LOC"), ("海", "I-LOC")],
]


def wikiann_text(sentences) -> str:
    return "\n\n".join("\n".join(f"{token}\t{tag}" for token, tag in sentence) for sentence in sentences) + "\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """WikiANN en/zh and CoNLL en-de files in the layout of `/work/shared/data`."""
    root = tmp_path_factory.mktemp("data")
    for language, sentences in (("en", EN_SENTENCES), ("ar", EN_SENTENCES[::-1]), ("zh", ZH_SENTENCES)):
        (root / "wikiann" / language).mkdir(parents=True)
        for split in ("train", "dev", "test"):
            (root / "wikiann" / language / f"{split}.txt").write_text(wikiann_text(sentences), encoding="utf-8")
    conll = root / "conll03_en_de"
    conll.mkdir()
    records = [{"context": "-DOCSTART-", "span_posLabel": {}}, *TINY_SOURCE_RECORDS]
    for suffix in ("train", "dev", "unlabel", "test"):
        (conll / f"spanner.{suffix}").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root


def prepare(dataset: str, data_root: Path, data_dir: Path, seed: int, protocol) -> tuple[dict, dict]:
    """Prepares a (dataset, seed) sample with the protocol's sizes and sampling, as a cell does."""
    return matrix_data.prepare_data(dataset, data_root, data_dir, seed, protocol.sample_sizes, protocol.random_sample)


def spans_of(path: Path, labels) -> list[list[tuple[int, int, str]]]:
    dataset = load_spans(path, labels=labels)
    return [[(span["start"], span["end"], labels[span["label"]]) for span in row] for row in dataset["spans"]]


# ----------------------------------------------------------------------------------------------------------------
# Sampling and data preparation
# ----------------------------------------------------------------------------------------------------------------


def test_sampling_is_deterministic_per_seed_sized_and_in_file_order():
    first = matrix_data.sample_indices(1000, 50, seed=1, role="source_train")
    assert first == matrix_data.sample_indices(1000, 50, seed=1, role="source_train")
    assert len(set(first)) == 50 and first == sorted(first) and first[0] >= 0 and first[-1] < 1000
    assert first != matrix_data.sample_indices(1000, 50, seed=2, role="source_train")
    assert first != matrix_data.sample_indices(1000, 50, seed=1, role="target_unlabeled")
    assert matrix_data.sample_indices(7, None, 1, "source_train") == list(range(7))
    assert matrix_data.sample_indices(7, 50, 1, "source_train") == list(range(7))
    assert matrix_data.sample_indices(7, 3, 1, "source_train", random_sample=False) == [0, 1, 2]


def test_prepared_samples_follow_the_seed_and_keep_the_full_test(data_root, tmp_path):
    sizes = {"source_train": 4, "source_dev": 3, "target_unlabeled": 4}
    protocol = matrix.resolve_protocol("cpu", sample_sizes=sizes)
    prepared = {
        (seed, copy): prepare("conll_de", data_root, tmp_path / f"s{seed}_{copy}", seed, protocol)
        for seed in (1, 2)
        for copy in (0, 1)
    }
    files, counts = prepared[1, 0]
    assert counts == {**sizes, "target_test": len(TINY_SOURCE_RECORDS)}  # -DOCSTART- dropped
    contexts = {record["context"] for record in TINY_SOURCE_RECORDS}
    order = [record["context"] for record in TINY_SOURCE_RECORDS]
    for role, path in files.items():
        written = [record["context"] for record in json.loads(path.read_text(encoding="utf-8"))]
        assert set(written) <= contexts and written == sorted(written, key=order.index)
        assert path.read_bytes() == prepared[1, 1][0][role].read_bytes()  # same seed, same sample
    assert any(files[role].read_bytes() != prepared[2, 0][0][role].read_bytes() for role in sizes)


def test_wikiann_zh_names_stay_whole_across_space_markers(data_root, tmp_path):
    protocol = matrix.resolve_protocol("cpu")
    with pytest.warns(UserWarning, match="zero-width"):
        files, counts = prepare("wikiann_zh", data_root, tmp_path / "zh", 1, protocol)
    labels = matrix_data.DATASETS["wikiann_zh"].labels
    test = spans_of(files["target_test"], labels)
    assert counts["target_test"] == len(ZH_SENTENCES)
    assert test[0] == [(1, 6, "LOC")]  # `# 切 斯 特 # ( )`: one name, the inner `#` joined, the leading one not
    assert test[1] == [(0, 4, "PER")]
    assert test[2] == [(3, 4, "ORG")]  # the zero-width word is dropped and the span shifted
    assert test[3] == [(0, 1, "LOC"), (3, 4, "PER")]  # `#` between two names stays outside both


def test_wikiann_markup_and_bracket_first_words_read_as_written(data_root, tmp_path):
    protocol = matrix.resolve_protocol("cpu")
    files, _ = prepare("wikiann_ar", data_root, tmp_path / "ar", 1, protocol)
    labels = matrix_data.DATASETS["wikiann_ar"].labels
    source = load_spans(files["source_train"], labels=labels)
    assert source["tokens"][:4] == [[token for token, _ in sentence] for sentence in EN_SENTENCES[:4]]
    assert spans_of(files["source_train"], labels)[1:4] == [[(2, 3, "PER")], [], [(1, 1, "ORG")]]
    assert json.loads((tmp_path / "ar" / "manifest.json").read_text())["sentences"]["source_train"] == 8


DOCSTART_RECORD = {"context": "-DOCSTART-", "span_posLabel": {}}


def test_first_n_takes_the_first_sentences_in_file_order_whatever_the_seed(tmp_path):
    # -DOCSTART- first and between documents, as in the CoNLL files.
    records = [DOCSTART_RECORD, *TINY_SOURCE_RECORDS[:2], DOCSTART_RECORD, *TINY_SOURCE_RECORDS[2:]]
    conll = tmp_path / "data" / "conll03_en_de"
    conll.mkdir(parents=True)
    for suffix in ("train", "dev", "unlabel", "test"):
        (conll / f"spanner.{suffix}").write_text(json.dumps(records), encoding="utf-8")
    sizes = {"source_train": 3, "source_dev": 2, "target_unlabeled": 4}
    protocol = matrix.resolve_protocol("first_n", sample_sizes=sizes)
    assert not protocol.random_sample and protocol.subdir == Path("first_n")
    one, counts = prepare("conll_de", tmp_path / "data", tmp_path / "seed1", 1, protocol)
    two, _ = prepare("conll_de", tmp_path / "data", tmp_path / "seed2", 2, protocol)
    assert counts == {**sizes, "target_test": len(TINY_SOURCE_RECORDS)}
    labels = matrix_data.DATASETS["conll_de"].labels
    for role, path in one.items():
        assert path.read_bytes() == two[role].read_bytes()  # the same sample for every seed
        unlabeled = role == "target_unlabeled"
        sample = load_spans(path, labels=labels, unlabeled=unlabeled)
        size = sizes.get(role, len(TINY_SOURCE_RECORDS))
        assert sample["tokens"] == [record["context"].split() for record in TINY_SOURCE_RECORDS[:size]]
        # what run_xner's --max_*_samples keeps of the file itself, sentence ids (record indices) included
        original = load_spans(conll / "spanner.train", labels=labels, unlabeled=unlabeled, max_samples=size)
        assert sample.to_dict() == original.to_dict()
    assert load_spans(one["source_train"], labels=labels)["sentence_id"] == [1, 2, 4]


def test_first_n_protocol_is_the_cpu_budget_without_random_sampling(tmp_path):
    cpu, first_n = matrix.resolve_protocol("cpu"), matrix.resolve_protocol("first_n")
    assert first_n == dataclasses.replace(cpu, name="first_n", random_sample=False)
    layout = matrix.Layout.for_protocol(tmp_path / "out", tmp_path / "results", first_n)
    cell = matrix.Cell("conll_de", "source_only", 42)
    files = {role: tmp_path / f"{role}.json" for role in matrix_data.ROLES}
    argv = matrix.build_argv(cell, first_n, Path("enc"), files, layout)
    assert layout.result_file(cell) == tmp_path / "results" / "first_n" / "conll_de" / "source_only_seed42.json"
    expected = ["--seed=42", "--num_train_epochs=2", "--learning_rate=5e-05", "--head_learning_rate=0.001"]
    expected += ["--per_device_train_batch_size=8", "--freeze_word_embeddings", "--use_cpu", "--do_eval"]
    assert set(expected) <= set(argv)


# ----------------------------------------------------------------------------------------------------------------
# Plan, claims and the queue
# ----------------------------------------------------------------------------------------------------------------


def test_plan_runs_the_seed_one_comparison_first_and_each_cell_once():
    plan = matrix.build_plan()
    assert len(plan) == len(set(plan)) == 8 + 16 + 4 + 4 + 8
    assert [(cell.dataset, cell.method, cell.seed) for cell in plan[:4]] == [
        (dataset, "source_only", 1) for dataset in ("wikiann_hi", "wikiann_ar", "conll_de", "wikiann_zh")
    ]
    assert [cell.method for cell in plan[4:6]] == ["maral", "self_training"]
    assert {cell.seed for cell in plan[:16]} == {1}
    for position, cell in enumerate(plan):  # every student after its teacher
        assert not cell.needs_teacher or plan.index(cell.teacher) < position
    assert {cell.seed for cell in plan if cell.method in ("pram", "mcl")} == {1}
    assert {cell.seed for cell in plan[-12:]} == {2, 3}
    layout = matrix.Layout.for_protocol(Path("out"), Path("res"), matrix.resolve_protocol("cpu"))
    assert layout.result_file(plan[-1]) == Path("res/wikiann_zh/contproto_seed3.json")
    assert layout.output_dir(plan[0]) == Path("out/wikiann_hi/source_only_seed1")
    assert layout.log_file(plan[0]) == Path("out/logs/wikiann_hi_source_only_seed1.log")
    only = matrix.build_plan(["source_only", "contproto"])
    assert {cell.method for cell in only} == {"source_only", "contproto"} and len(only) == 16


def test_claims_are_exclusive_and_released(tmp_path):
    layout = matrix.Layout(tmp_path, tmp_path / "results")
    cell = matrix.Cell("conll_de", "source_only", 1)
    lock_file = layout.lock_file(cell)
    assert lock_file == tmp_path / "locks" / "conll_de_source_only_seed1.lock"
    claim = matrix_queue.claim_cell(lock_file)
    assert claim is not None and matrix_queue.is_claimed(lock_file)
    assert matrix_queue.cell_status(cell, layout) == "running"
    assert matrix_queue.claim_cell(lock_file) is None  # a second claim, even in the same process
    assert f"pid {os.getpid()}" in lock_file.read_text()
    claim.release()
    assert not matrix_queue.is_claimed(lock_file)
    again = matrix_queue.claim_cell(lock_file)
    assert again is not None
    again.release()


def test_a_lock_left_by_a_dead_process_is_claimed_again(tmp_path):
    lock_file = tmp_path / "locks" / "cell.lock"
    lock_file.parent.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, f'worker pid {os.getpid()}'.encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(lock_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert matrix_queue.claim_cell(lock_file) is None
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in lock_file.read_text()  # the dead holder's pid is still written there
    claim = matrix_queue.claim_cell(lock_file)
    assert claim is not None
    claim.release()


class FakeCells:
    """A launcher that 'runs' a cell by writing its result (and a teacher's model config) after a short pause."""

    def __init__(self, layout, failing=()):
        self.layout = layout
        self.failing = set(failing)
        self.launches = []
        self.guard = threading.Lock()

    def __call__(self, cell, claim) -> int:
        with self.guard:
            self.launches.append((cell, self.layout.teacher_ready(cell)))
        time.sleep(0.02)
        if cell in self.failing:
            return 1
        (self.layout.output_dir(cell)).mkdir(parents=True, exist_ok=True)
        (self.layout.output_dir(cell) / "config.json").write_text("{}")
        matrix_data.write_json_atomically(self.layout.result_file(cell), {"method": cell.method})
        return 0


def small_plan():
    cells = [matrix.Cell(dataset, "source_only", 1) for dataset in ("conll_de", "wikiann_zh")]
    return cells + [
        matrix.Cell(dataset, method, 1)
        for method in ("self_training", "maral")
        for dataset in ("conll_de", "wikiann_zh")
    ]


def test_two_workers_never_run_the_same_cell_and_skip_finished_ones(tmp_path):
    layout = matrix.Layout(tmp_path / "out", tmp_path / "results")
    plan = small_plan()
    finished = plan[-1]
    matrix_data.write_json_atomically(layout.result_file(finished), {"method": "maral"})
    launcher = FakeCells(layout)
    workers = [
        threading.Thread(target=matrix_queue.run_queue, args=(plan, layout, launcher, worker, 0.01))
        for worker in (1, 2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    launched = [cell for cell, _ in launcher.launches]
    assert sorted(launched, key=plan.index) == plan[:-1]  # each cell once, the finished one never
    assert all(teacher_ready for _, teacher_ready in launcher.launches)
    assert all(layout.is_done(cell) for cell in plan)


def test_a_failed_teacher_stops_its_students_and_is_reported(tmp_path, capsys):
    layout = matrix.Layout(tmp_path / "out", tmp_path / "results")
    plan = small_plan()
    launcher = FakeCells(layout, failing=[plan[0]])
    matrix_queue.run_queue(plan, layout, launcher, poll_seconds=0.01)
    assert [cell for cell, _ in launcher.launches] == [plan[0], plan[1], plan[3], plan[5]]
    assert json.loads(layout.failure_file(plan[0]).read_text())["exit_status"] == 1
    statuses = [matrix_queue.cell_status(cell, layout) for cell in plan]
    assert statuses == ["failed", "done", "waiting for teacher", "done", "waiting for teacher", "done"]
    matrix_queue.print_plan(plan, layout)
    assert "3 done" in capsys.readouterr().out
    matrix_queue.run_queue(plan, layout, FakeCells(layout), poll_seconds=0.01, retry_failed=True)
    assert all(layout.is_done(cell) for cell in plan) and not layout.failure_file(plan[0]).exists()


def test_cell_processes_get_the_cell_and_the_shared_flags(tmp_path):
    layout = matrix.Layout(tmp_path, tmp_path)
    args = matrix.build_parser().parse_args(["--queue", "--protocol", "gpu", "--smoke", "--encoder", "enc"])
    command = matrix_queue.CellCommand(layout, matrix.shared_flags(args)).command(matrix.Cell("wikiann_hi", "pram", 1))
    assert command[1] == str(BENCHMARKS / "matrix.py")
    assert command[2:8] == ["--dataset", "wikiann_hi", "--method", "pram", "--seed", "1"]
    assert "--smoke" in command and command[command.index("--encoder") + 1] == str(Path("enc").resolve())


# ----------------------------------------------------------------------------------------------------------------
# Protocols and the gpu protocol's smoke run
# ----------------------------------------------------------------------------------------------------------------


def test_gpu_protocol_is_the_papers_budget():
    gpu = matrix.resolve_protocol("gpu", cuda=True)
    assert (gpu.teacher_epochs, gpu.student_epochs, gpu.device_flags) == (8, 20, ("--bf16",))
    assert set(gpu.sample_sizes.values()) == {None}
    assert gpu.budget["learning_rate"] == 2e-5 and gpu.budget["gradient_accumulation_steps"] == 4
    assert matrix.resolve_protocol("gpu", smoke=True, cuda=True).device_flags == ("--bf16",)
    assert matrix.resolve_protocol("gpu", smoke=True, cuda=False).device_flags == ("--use_cpu",)
    assert matrix.resolve_protocol("gpu", smoke=True).subdir == Path("gpu/smoke")


RESULT_KEYS = {
    "target_test_span_f1",
    "target_test_seqeval_f1",
    "target_test_seqeval_precision",
    "target_test_seqeval_recall",
    "source_dev_span_f1",
    "wall_seconds",
    "peak_rss_mb",
    "student_epochs",
    "pseudo_label_oracle_f1",
    "config",
    "machine",
    "all_results",
    "teacher_fingerprint",
}


def test_gpu_protocol_smoke_run_writes_teacher_and_student_results(
    data_root, tiny_encoder_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(matrix, "cuda_available", lambda: False)
    common = ["--dataset", "wikiann_zh", "--seed", "3", "--protocol", "gpu", "--smoke", "--encoder"]
    common += [str(tiny_encoder_dir), "--data_root", str(data_root), "--output_dir", str(tmp_path / "out")]
    common += ["--results_dir", str(tmp_path / "results")]
    with pytest.raises(SystemExit, match="No finished teacher for wikiann_zh seed 3"):
        matrix.main([*common, "--method", "self_training"])
    matrix.main([*common, "--method", "source_only"])
    matrix.main([*common, "--method", "self_training"])
    results = tmp_path / "results" / "gpu" / "smoke" / "wikiann_zh"
    teacher = json.loads((results / "source_only_seed3.json").read_text())
    student = json.loads((results / "self_training_seed3.json").read_text())
    for record in (teacher, student):
        assert set(record) >= RESULT_KEYS and 0.0 <= record["target_test_span_f1"] <= 1.0
        assert record["seed"] == 3 and "--seed=3" in record["config"]["argv"]
        assert "--max_span_width=8" in record["config"]["argv"]
        assert "--freeze_word_embeddings" not in record["config"]["argv"]
    assert student["teacher_fingerprint"] == teacher["teacher_fingerprint"]
    assert student["student_epochs"] and "--num_train_epochs=1" in student["config"]["argv"]
    assert (tmp_path / "out" / "gpu" / "smoke" / "wikiann_zh" / "data_seed3" / "target_test.json").is_file()
    matrix.main([*common, "--method", "self_training"])
    assert "skipping wikiann_zh_self_training_seed3" in capsys.readouterr().out


def test_an_interrupted_cell_resumes_from_its_checkpoint(data_root, tiny_encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(matrix, "cuda_available", lambda: False)
    protocol = matrix.resolve_protocol("cpu", smoke=True)
    layout = matrix.Layout.for_protocol(tmp_path / "out", tmp_path / "results", protocol)
    teacher, student = matrix.Cell("wikiann_zh", "source_only", 1), matrix.Cell("wikiann_zh", "self_training", 1)
    matrix.run_cell(teacher, protocol, layout, data_root, tiny_encoder_dir)
    seen: list[list[str]] = []

    def interrupted_run(argv):
        seen.append(argv)
        raise KeyboardInterrupt  # the session ends

    monkeypatch.setattr(matrix.run_xner, "main", interrupted_run)
    for expected in (False, True):
        with pytest.raises(KeyboardInterrupt):
            matrix.run_cell(student, protocol, layout, data_root, tiny_encoder_dir)
        assert ("--resume_from_checkpoint=true" in seen[-1]) == expected
        assert f"--save_steps={matrix.CHECKPOINT_STEPS}" in seen[-1] and "--save_strategy=steps" in seen[-1]
        (layout.output_dir(student) / "rounds" / "round_1.partial" / "checkpoint-3").mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# summarize.py
# ----------------------------------------------------------------------------------------------------------------

SCORES = {  # dataset -> method -> seed -> (target span F1, target seqeval F1, source dev F1)
    "conll_de": {
        "source_only": {1: (0.40, 0.41, 0.80), 2: (0.42, 0.43, 0.81), 3: (0.38, 0.37, 0.79)},
        "self_training": {1: (0.45, 0.44, 0.80), 2: (0.44, 0.46, 0.80), 3: (0.41, 0.40, 0.78)},
        "maral": {1: (0.47, 0.46, 0.79), 2: (0.43, 0.44, 0.80), 3: (0.50, 0.49, 0.81)},
    },
    "wikiann_hi": {"source_only": {1: (0.30, 0.31, 0.70)}, "maral": {1: (0.35, 0.36, 0.69)}},
}
OTHER_TEACHER = ("conll_de", "maral", 3)  # trained on another teacher: not paired


def write_results(results_dir: Path) -> None:
    for dataset, methods in SCORES.items():
        for method, seeds in methods.items():
            for seed, (span, seqeval, dev) in seeds.items():
                teacher = "other" if (dataset, method, seed) == OTHER_TEACHER else f"{dataset}-{seed}"
                record = {"method": method, "seed": seed, "teacher_fingerprint": teacher}
                record.update(target_test_span_f1=span, target_test_seqeval_f1=seqeval, source_dev_span_f1=dev)
                matrix_data.write_json_atomically(results_dir / dataset / f"{method}_seed{seed}.json", record)


def test_summary_means_stds_and_paired_differences(tmp_path, capsys):
    write_results(tmp_path)
    summary = summarize.main(["--results_dir", str(tmp_path)])
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    for dataset, methods in SCORES.items():
        assert list(summary[dataset]) == [m for m in ("source_only", "self_training", "maral") if m in methods]
        for method, seeds in methods.items():
            row = summary[dataset][method]
            assert row["seeds"] == sorted(seeds)
            for position, metric in enumerate(summarize.METRICS):
                values = [seeds[seed][position] for seed in sorted(seeds)]
                assert row[metric]["mean"] == pytest.approx(statistics.mean(values))
                if len(values) > 1:
                    assert row[metric]["std"] == pytest.approx(statistics.stdev(values))
                else:
                    assert row[metric]["std"] is None
            for baseline in summarize.BASELINES:
                key = f"target_test_span_f1_minus_{baseline}"
                if baseline not in methods:
                    assert key not in row
                    continue
                paired = [s for s in sorted(seeds) if s in methods[baseline] and (dataset, method, s) != OTHER_TEACHER]
                differences = [seeds[s][0] - methods[baseline][s][0] for s in paired]
                assert row[key]["seeds"] == paired and row[key]["n"] == len(paired)
                assert row[key]["mean"] == pytest.approx(statistics.mean(differences))
    table = capsys.readouterr().out
    maral = summary["conll_de"]["maral"]["target_test_span_f1"]
    assert f"| maral | 1,2,3 | {100 * maral['mean']:.2f} ± {100 * maral['std']:.2f} |" in table
    assert "### wikiann_hi" in table


def test_a_teacher_without_its_saved_model_is_not_done(tmp_path):
    protocol = matrix.resolve_protocol("cpu")
    layout = matrix.Layout.for_protocol(tmp_path / "out", tmp_path / "results", protocol)
    teacher, student = matrix.Cell("conll_de", "source_only", 1), matrix.Cell("conll_de", "maral", 1)
    matrix_data.write_json_atomically(layout.result_file(teacher), {"target_test_span_f1": 0.5})
    assert not layout.is_done(teacher) and not layout.teacher_ready(student)  # a new machine: train it again
    layout.output_dir(teacher).mkdir(parents=True)
    (layout.output_dir(teacher) / "config.json").write_text("{}")
    assert layout.is_done(teacher) and layout.teacher_ready(student)
    matrix_data.write_json_atomically(layout.result_file(student), {"target_test_span_f1": 0.6})
    assert layout.is_done(student)  # a student's result is enough


def test_students_of_a_teacher_saved_here_run_before_another_teacher_is_trained(tmp_path):
    layout = matrix.Layout(tmp_path / "out", tmp_path / "results")
    plan = small_plan()  # both teachers first, then their students
    zh_teacher = plan[1]
    FakeCells(layout)(zh_teacher, None)  # trained earlier in this session: its result and its model are here
    conll_teacher = plan[0]
    matrix_data.write_json_atomically(layout.result_file(conll_teacher), {"method": "source_only"})  # no model here
    claimed = []
    while (claim := matrix_queue.next_cell(plan, layout)) is not None:
        cell, lock = claim
        claimed.append(cell)
        FakeCells(layout)(cell, lock)
        lock.release()
    zh_students = [cell for cell in plan if cell.dataset == "wikiann_zh" and cell.method != "source_only"]
    assert claimed[: len(zh_students)] == zh_students
    assert claimed[len(zh_students)] == conll_teacher  # trained again only then, before its own students
    assert sorted(claimed, key=plan.index) == [cell for cell in plan if cell != zh_teacher]
