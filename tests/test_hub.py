"""Publishing against a local Hub-protocol server (`tests/hub_server.py`) with the real `huggingface_hub` client.

`huggingface_hub` reads `HF_ENDPOINT` and the offline switches when it is imported, and this test process has
imported it offline already (see `conftest.py`), so every client runs in a subprocess whose environment points at
the server: `run_xner.py --push_to_hub`, loading by repo id (in a process that cannot import the project, and in one
that can), the retry command of a failed push, and `load_dataset`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from huggingface_hub.repocard_data import model_index_to_eval_results

from model_cards import RunInfo, eval_results, read_output_folder, span_dataset_dict
from modeling_maral import MaralForSpanNER
from tests.hub_server import LocalHub, front_matter
from tests.test_cli import COMMON_FLAGS, SOURCE_DEV, SOURCE_TRAIN, TARGET_TEST, TARGET_UNLABELED, write_json
from tests.tiny_models import WITHOUT_PROJECT_PREAMBLE

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPO = "user/tiny-maral"
DATASET_REPO = "user/tiny-spans"
PUBLISHED_FILES = {
    ".gitattributes",
    "README.md",
    "all_results.json",
    "config.json",
    "model.safetensors",
    "modeling_maral.py",
    "pipeline_maral.py",
    "tokenizer.json",
    "tokenizer_config.json",
}
PREDICT_TEXTS = ["Angela Merkel besuchte Paris und London .", "El presidente de España viajó a Madrid ."]
CLEARED_VARIABLES = ("PYTHONPATH", "PYTHONSTARTUP", "HF_HOME", "HF_MODULES_CACHE", "HF_HUB_OFFLINE",
                     "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN")  # fmt: skip


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub_storage")) as server:
        yield server


def client_env(hub: LocalHub, home: Path) -> dict[str, str]:
    """This process's environment without offline switches, pointed at the local Hub, one thread."""
    env = {key: value for key, value in os.environ.items() if key not in CLEARED_VARIABLES}
    env.update(hub.client_env(home), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_client(hub: LocalHub, home: Path, args: list[str], cwd: Path = REPO_ROOT, timeout: int = 180):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=client_env(hub, home), capture_output=True, text=True, timeout=timeout
    )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("hub_data")
    return {
        "source_train_file": write_json(folder / "en_train.json", SOURCE_TRAIN),
        "source_validation_file": write_json(folder / "en_dev.json", SOURCE_DEV),
        "target_unlabeled_file": write_json(folder / "de_unlabeled.json", TARGET_UNLABELED),
        "target_test_file": write_json(folder / "de_test.json", TARGET_TEST),
    }


PUSH_AND_RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import run_xner
    run_xner.main(sys.argv[3:])

    # The project is installed here: the Hub copy loads without trust_remote_code, through the registered classes.
    import pipeline_maral
    from transformers import AutoModel, pipeline
    model = AutoModel.from_pretrained(sys.argv[1])
    ner = pipeline("maral-ner", model=sys.argv[1])
    texts = json.loads(sys.argv[2])
    print(json.dumps({"module": type(model).__module__, "predictions": model.predict(texts),
                      "pipeline": ner(texts), "pipeline_model": type(ner.model).__module__}))
    """
)


@pytest.fixture(scope="module")
def pushed_run(hub, tiny_encoder_dir, data_files, tmp_path_factory) -> tuple[Path, dict]:
    """`run_xner.py` trains a tiny model and pushes it (`--push_to_hub`) and its data (`--push_dataset_to_hub`);
    the same process then loads the model back by repo id. Returns the output folder and what the reload printed."""
    work = tmp_path_factory.mktemp("pushed_run")
    output_dir = work / "out"
    args = ["--model_name_or_path", str(tiny_encoder_dir), "--output_dir", str(output_dir)]
    for key, value in data_files.items():
        args += [f"--{key}", value]
    args += COMMON_FLAGS + ["--max_steps", "2", "--do_train", "--do_eval", "--do_predict"]
    args += ["--source_language", "en", "--target_language", "de", "--push_to_hub", "--hub_model_id", MODEL_REPO]
    args += ["--push_dataset_to_hub", DATASET_REPO, "--hub_private_repo", "true"]
    script = ["-c", PUSH_AND_RELOAD_SCRIPT, MODEL_REPO, json.dumps(PREDICT_TEXTS)]
    completed = run_client(hub, work / "hf_home", script + args)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return output_dir, json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def output_dir(pushed_run) -> Path:
    return pushed_run[0]


def test_push_uploads_exactly_the_model_files_in_one_commit(output_dir, hub):
    remote = hub.files(MODEL_REPO)
    assert set(remote) == PUBLISHED_FILES
    for name in PUBLISHED_FILES - {".gitattributes"}:
        assert remote[name] == (output_dir / name).read_bytes(), name
    assert json.loads(remote["config.json"])["auto_map"]["AutoModel"] == "modeling_maral.MaralForSpanNER"
    repository = hub.repo(MODEL_REPO)
    assert repository.private and hub.repo(DATASET_REPO, "dataset").private  # --hub_private_repo true
    assert len(repository.commits) == 2  # the repository's initial commit and the push
    assert repository.head[2]["model.safetensors"].lfs_sha256 is not None  # weights went through git-LFS
    assert (output_dir / "training_args.bin").is_file() and "training_args.bin" not in remote


def test_pushed_card_metadata_parses_and_model_index_round_trips(output_dir, hub):
    card = hub.files(MODEL_REPO)["README.md"].decode("utf-8")
    metadata = front_matter(card)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "token-classification"
    assert metadata["language"] == ["en", "de"]
    assert metadata["datasets"] == [DATASET_REPO]
    assert {"token-classification", "ner", "cross-lingual", "span-ner", "maral"} <= set(metadata["tags"])
    assert metadata["widget"] and all(item["text"] for item in metadata["widget"])
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "tiny-maral"
    local = read_output_folder(output_dir)
    expected = eval_results(local, RunInfo(model_id=MODEL_REPO, dataset_id=DATASET_REPO))
    assert sorted(map(repr, results)) == sorted(map(repr, expected))
    splits = {(result.dataset_type, result.dataset_split, result.metric_name) for result in results}
    assert (DATASET_REPO, "target_test", "Span F1") in splits
    assert (DATASET_REPO, "source_dev", "seqeval F1") in splits
    assert f'AutoModel.from_pretrained("{MODEL_REPO}", trust_remote_code=True)' in card


BLOCKED_LOAD_SCRIPT = WITHOUT_PROJECT_PREAMBLE + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    torch.set_num_threads(1)
    try:
        AutoModel.from_pretrained(sys.argv[2], trust_remote_code=False)
    except ValueError:
        pass
    else:
        raise SystemExit("loading without trust_remote_code must fail where the project is not installed")
    model = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True)
    print(json.dumps({"module": type(model).__module__, "predictions": model.predict(json.loads(sys.argv[3]))}))
    """
)


def downloaded(hub: LocalHub, repo_id: str, name: str) -> bool:
    """Whether a client downloaded `name` from `repo_id` (at any revision)."""
    pattern = re.compile(rf"^/{re.escape(repo_id)}/resolve/[^/]+/{re.escape(name)}$")
    return any(method == "GET" and pattern.match(path) and status == 200 for method, path, status in hub.requests)


def assert_same_entities(got: list[list[dict]], expected: list[list[dict]]) -> None:
    assert len(got) == len(expected)
    for got_sentence, expected_sentence in zip(got, expected):
        assert [{k: v for k, v in e.items() if k != "score"} for e in got_sentence] == [
            {k: v for k, v in e.items() if k != "score"} for e in expected_sentence
        ]
        assert [e["score"] for e in got_sentence] == pytest.approx([e["score"] for e in expected_sentence], abs=1e-6)


@pytest.fixture(scope="module")
def local_predictions(output_dir) -> list[list[dict]]:
    return MaralForSpanNER.from_pretrained(output_dir).predict(PREDICT_TEXTS, threshold=0.0)


def test_load_by_repo_id_where_the_project_is_not_installed(output_dir, hub, local_predictions, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [
        "-c",
        BLOCKED_LOAD_SCRIPT,
        str(REPO_ROOT),
        MODEL_REPO,
        json.dumps(PREDICT_TEXTS),
    ]
    completed = run_client(hub, tmp_path / "hf_home", args, cwd=elsewhere)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"] != "modeling_maral" and result["module"].endswith("modeling_maral")  # the Hub's copy
    assert_same_entities(result["predictions"], local_predictions)
    assert downloaded(hub, MODEL_REPO, "modeling_maral.py")


BLOCKED_PIPELINE_SCRIPT = WITHOUT_PROJECT_PREAMBLE + textwrap.dedent(
    """
    import torch
    from transformers import pipeline
    torch.set_num_threads(1)
    results = {}
    for task in ("maral-ner", "token-classification"):
        ner = pipeline(task, model=sys.argv[2], trust_remote_code=True)
        results[task] = {"pipeline": type(ner).__module__, "model": type(ner.model).__module__,
                         "predictions": ner(json.loads(sys.argv[3]))}
    print(json.dumps(results))
    """
)


def test_stock_pipeline_by_repo_id_where_only_transformers_is_installed(output_dir, hub, local_predictions, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["-c", BLOCKED_PIPELINE_SCRIPT, str(REPO_ROOT), MODEL_REPO, json.dumps(PREDICT_TEXTS)]
    completed = run_client(hub, tmp_path / "hf_home", args, cwd=elsewhere)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    for task, result in results.items():
        assert result["pipeline"] != "pipeline_maral" and result["pipeline"].endswith("pipeline_maral"), task
        assert result["model"] != "modeling_maral" and result["model"].endswith("modeling_maral"), task
        assert_same_entities(result["predictions"], local_predictions)
    assert downloaded(hub, MODEL_REPO, "pipeline_maral.py")
    metadata = front_matter(hub.files(MODEL_REPO)["README.md"].decode("utf-8"))
    assert metadata["pipeline_tag"] in results and metadata["library_name"] == "transformers"


def test_load_by_repo_id_without_remote_code_where_the_project_is_installed(pushed_run, hub, local_predictions):
    result = pushed_run[1]
    assert result["module"] == "modeling_maral" and result["pipeline_model"] == "modeling_maral"
    assert_same_entities(result["predictions"], local_predictions)
    assert_same_entities(result["pipeline"], local_predictions)
    assert downloaded(hub, MODEL_REPO, "model.safetensors")


def retry_command(message: str) -> list[str]:
    """The command on the line after "Retry with:", with `python` replaced by this interpreter."""
    lines = message.splitlines()
    command = shlex.split(lines[lines.index(next(line for line in lines if line.endswith("Retry with:"))) + 1])
    assert command[0] == "python"
    return command[1:]


def test_commit_failing_midway_keeps_the_folder_and_the_retry_command_succeeds(output_dir, hub, tmp_path):
    before = snapshot(output_dir)
    hub.fail_next_commits = 1
    push = ["-m", "model_cards", "push", str(output_dir), "--repo_id", "user/retried-model"]
    failed = run_client(hub, tmp_path / "hf_home", push)
    assert hub.fail_next_commits == 0
    assert failed.returncode == 1
    assert "user/retried-model failed" in failed.stderr and "simulated failure" in failed.stderr
    assert "is complete and unchanged" in failed.stderr
    requests = [(method, path, status) for method, path, status in hub.requests if "retried-model" in path]
    assert [status for method, path, status in requests if path.endswith("/commit/main")] == [500]
    assert any(path.endswith("/preupload/main") for _, path, _ in requests)  # the upload had started
    assert len(hub.repo("user/retried-model").commits) == 1  # only the repository's initial commit
    assert snapshot(output_dir) == before

    retried = run_client(hub, tmp_path / "hf_home", retry_command(failed.stderr))
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert snapshot(output_dir) == before
    remote = hub.files("user/retried-model")
    assert set(remote) == PUBLISHED_FILES
    assert all(
        remote[name] == (output_dir / name).read_bytes() for name in PUBLISHED_FILES - {".gitattributes", "README.md"}
    )
    # the folder's card is for user/tiny-maral: the push wrote one for this repository, keeping the run's details
    card = remote["README.md"].decode("utf-8")
    assert 'from_pretrained("user/retried-model"' in card and f'from_pretrained("{MODEL_REPO}"' not in card
    assert "python run_xner.py" in card


def test_run_xner_push_failure_keeps_the_outputs_and_gives_a_working_retry(
    output_dir, hub, data_files, tmp_path, monkeypatch
):
    import huggingface_hub.constants

    import run_xner
    from model_cards import HubPushError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # this process cannot reach any Hub
    evaluated = tmp_path / "evaluated"
    args = ["--model_name_or_path", str(output_dir), "--output_dir", str(evaluated), "--do_predict"]
    args += ["--target_test_file", data_files["target_test_file"], "--use_cpu", "--report_to", "none"]
    with pytest.raises(HubPushError, match="user/offline-model failed") as raised:
        run_xner.main(args + ["--push_to_hub", "--hub_model_id", "user/offline-model"])
    assert "Retry with:" in str(raised.value)
    before = snapshot(evaluated)
    assert {"config.json", "model.safetensors", "README.md", "all_results.json", "predictions.jsonl"} <= set(before)

    retried = run_client(hub, tmp_path / "hf_home", retry_command(str(raised.value)))
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert snapshot(evaluated) == before
    remote = hub.files("user/offline-model")
    assert set(remote) == PUBLISHED_FILES
    assert remote["README.md"] == (evaluated / "README.md").read_bytes()
    assert 'from_pretrained("user/offline-model"' in remote["README.md"].decode("utf-8")


LOAD_DATASET_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    dataset = load_dataset(sys.argv[1])
    print(json.dumps({name: {"features": split.features.to_dict(), "rows": split.to_list()}
                      for name, split in dataset.items()}))
    """
)


def test_pushed_dataset_loads_back_with_equal_features(output_dir, hub, data_files, tmp_path):
    from data_loading import load_spans

    labels = read_output_folder(output_dir).labels
    local = span_dataset_dict(
        {
            "source_train": load_spans(data_files["source_train_file"], labels=labels),
            "source_dev": load_spans(data_files["source_validation_file"], labels=labels),
            "target_unlabeled": load_spans(data_files["target_unlabeled_file"], labels=labels, unlabeled=True),
            "target_test": load_spans(data_files["target_test_file"], labels=labels),
        },
        labels,
    )
    completed = run_client(hub, tmp_path / "hf_home", ["-c", LOAD_DATASET_SCRIPT, DATASET_REPO])
    assert completed.returncode == 0, completed.stderr[-4000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(local)
    for name, split in local.items():
        assert loaded[name]["features"] == split.features.to_dict(), name
        assert loaded[name]["rows"] == split.to_list(), name
    card = front_matter(hub.files(DATASET_REPO, "dataset")["README.md"].decode("utf-8"))
    assert card["task_categories"] == ["token-classification"]
    assert {config["config_name"] for config in card["configs"]} == {"default"}


def test_server_rejects_an_invalid_model_index(hub):
    from tests.hub_server import validate_card_metadata

    bad = "---\n" + yaml.safe_dump({"model-index": [{"name": "x", "results": [{"metrics": []}]}]}) + "---\n"
    assert validate_card_metadata(bad, "model")
    assert validate_card_metadata("---\nlicense: mit\n---\n# ok\n", "model") == []


SECRET_TOKEN = "hf_" + "ConfigFileSecret0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def tampered_encoder_dir(tiny_encoder_dir, tmp_path_factory) -> Path:
    """The tiny encoder with remote-code keys in its config.json and tokenizer_config.json."""
    folder = tmp_path_factory.mktemp("tampered_encoder")
    for path in tiny_encoder_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    for name, untrusted in (
        ("config.json", {"trust_remote_code": True, "auto_map": {"AutoModel": "evil/repo--evil.Model"}}),
        ("tokenizer_config.json", {"trust_remote_code": True, "auto_map": {"AutoTokenizer": ["evil.Tok", None]}}),
    ):
        content = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**content, **untrusted}))
    return folder


def test_a_config_with_a_hub_token_and_local_paths_publishes_neither(hub, tampered_encoder_dir, data_files, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "stray_adapter.safetensors").write_bytes(b"not part of the model")  # must never be pushed
    config = {
        "model_name_or_path": str(tampered_encoder_dir.resolve()),
        "output_dir": str(output_dir.resolve()),
        **{key: str(Path(value).resolve()) for key, value in data_files.items()},
        "num_train_epochs": 1,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "overwrite_output_dir": True,
        "do_train": True,
        "do_predict": True,
        "push_to_hub": True,
        "hub_model_id": "user/config-model",
        "hub_token": SECRET_TOKEN,
    }
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(config, indent=2))
    completed = run_client(hub, tmp_path / "hf_home", ["run_xner.py", str(config_file)])
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    remote = hub.files("user/config-model")
    assert set(remote) == PUBLISHED_FILES  # exactly the listed files: not the stray *.safetensors
    written = {path.name: path.read_bytes() for path in output_dir.rglob("*") if path.is_file()}
    for name, content in [*remote.items(), *written.items()]:
        assert SECRET_TOKEN.encode() not in content, name  # training_args.bin and checkpoints included
    for name, content in remote.items():
        if name.endswith((".json", ".md", ".py")):
            text = content.decode("utf-8")
            assert str(tmp_path.resolve()) not in text and str(tampered_encoder_dir) not in text, name
            assert "evil" not in text and 'trust_remote_code": true' not in text, name
    card = remote["README.md"].decode("utf-8")
    assert '"hub_token": "<redacted>"' in card and "<local>/en_train.json" in card
    saved_config = json.loads(remote["config.json"])
    assert "_name_or_path" not in saved_config["encoder_config"]
    assert "auto_map" not in json.loads(remote["tokenizer_config.json"])


def test_a_push_refuses_files_that_hold_its_token(output_dir, hub, tmp_path):
    from model_cards import HubPushError, push_model_folder

    folder = tmp_path / "leaky"
    folder.mkdir()
    for name in PUBLISHED_FILES - {".gitattributes"}:
        (folder / name).write_bytes((output_dir / name).read_bytes())
    (folder / "README.md").write_text(f"token: {SECRET_TOKEN}\n")
    with pytest.raises(HubPushError, match=r"README.md contains a Hub token: nothing was pushed"):
        push_model_folder(folder, "user/leaky", token=SECRET_TOKEN)


HUB_DATASETS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    tags = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=tags))})
    def split(rows):
        return Dataset.from_dict({"tokens": [text.split() for text, _ in rows],
                                  "ner_tags": [[tags.index(tag) for tag in line.split()] for _, line in rows]},
                                 features=features)
    data = json.loads(sys.argv[1])
    DatasetDict({name: split(data["en"]) for name in ("train", "validation", "test")}).push_to_hub(sys.argv[2])
    DatasetDict({name: split(data["de"]) for name in ("train", "validation", "test")}).push_to_hub(
        sys.argv[3], config_name="de")
    import run_xner
    run_xner.main(sys.argv[4:])
    """
)
HUB_DATASET_ROWS = {
    "en": [
        ("Peter Blackburn visited Brussels .", "B-PER I-PER O B-LOC O"),
        ("EU rejects German calls .", "B-ORG O O O O"),
        ("Angela Merkel visited Paris .", "B-PER I-PER O B-LOC O"),
        ("Reuters said on Monday .", "B-ORG O O O O"),
    ],
    "de": [
        ("Angela Merkel besuchte Paris .", "B-PER I-PER O B-LOC O"),
        ("Die UNO tagt in Genf .", "O B-ORG O O B-LOC O"),
        ("Merkel sagte nein .", "B-PER O O O"),
    ],
}
SOURCE_DATASET, TARGET_DATASET = "user/ner-en", "user/ner-multi"


def test_cli_run_from_hub_datasets_with_a_target_dataset(hub, tiny_encoder_dir, tmp_path):
    """Datasets pushed to the local Hub feed a run by split (`--dataset_name`, `--target_dataset_name` with a
    configuration); the card's `datasets` and model-index name them."""
    output_dir = tmp_path / "out"
    args = ["--model_name_or_path", str(tiny_encoder_dir), "--output_dir", str(output_dir)]
    args += ["--dataset_name", SOURCE_DATASET, "--target_dataset_name", TARGET_DATASET]
    args += ["--target_dataset_config_name", "de", "--source_language", "en", "--target_language", "de"]
    args += COMMON_FLAGS + ["--max_steps", "2", "--do_train", "--do_eval", "--do_predict"]
    args += ["--push_to_hub", "--hub_model_id", "user/from-hub-data", "--license", "cc-by-4.0"]
    script = ["-c", HUB_DATASETS_SCRIPT, json.dumps(HUB_DATASET_ROWS), SOURCE_DATASET, TARGET_DATASET]
    completed = run_client(hub, tmp_path / "hf_home", script + args)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    assert "split(s) test not used" in completed.stdout  # the source dataset's test split
    results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    assert results["train_samples"] == len(HUB_DATASET_ROWS["en"])
    assert {"eval_source_dev_span_f1", "eval_target_dev_span_f1", "predict_target_test_span_f1"} <= set(results)
    predictions = (output_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in predictions] == [text for text, _ in HUB_DATASET_ROWS["de"]]

    metadata = front_matter(hub.files("user/from-hub-data")["README.md"].decode("utf-8"))
    assert metadata["datasets"] == [SOURCE_DATASET, TARGET_DATASET] and metadata["license"] == "cc-by-4.0"
    _, evaluated = model_index_to_eval_results(metadata["model-index"])
    references = {(result.dataset_type, result.dataset_config, result.dataset_split) for result in evaluated}
    assert references == {(SOURCE_DATASET, None, "validation"), (TARGET_DATASET, "de", "validation"),
                          (TARGET_DATASET, "de", "test")}  # fmt: skip


def test_readme_card_and_push_commands_work_as_printed(output_dir, hub, tmp_path):
    """The README's `python -m model_cards card ...` and `... push ...` lines, on a copy of a run's output folder."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if line.startswith("python -m model_cards ")]
    assert [line.split()[3] for line in lines] == ["card", "push"]
    folder = tmp_path / "en-de"
    shutil.copytree(output_dir, folder)
    commands = [shlex.split(re.sub(r" \[.*?\]", "", line).replace("outputs/en-de", str(folder))) for line in lines]
    for command in commands:
        completed = run_client(hub, tmp_path / "hf_home", command[1:])
        assert completed.returncode == 0, completed.stderr[-3000:]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert 'from_pretrained("user/maral-xner-de", trust_remote_code=True)' in card and "# maral-xner-de" in card
    assert "python run_xner.py" in card  # the run's command, from its saved run_info.json
    assert hub.files("user/maral-xner-de")["README.md"] == card.encode()


def test_push_of_a_folder_without_a_card_writes_one_for_the_repository(output_dir, hub, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    for name in PUBLISHED_FILES - {".gitattributes", "README.md", "all_results.json"}:
        (folder / name).write_bytes((output_dir / name).read_bytes())  # what `save_pretrained` writes
    before = snapshot(folder)
    completed = run_client(hub, tmp_path / "hf_home", ["-m", "model_cards", "push", str(folder), "--repo_id", "fresh"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert snapshot(folder) == before  # the folder is not changed
    card = hub.files("user/fresh")["README.md"].decode("utf-8")  # the namespace is the token's user
    assert "# fresh" in card and 'from_pretrained("user/fresh", trust_remote_code=True)' in card
    assert "path/to/this/model" not in card and "saved" not in card.split("---")[1]
    assert "license" not in front_matter(card)  # the tiny encoder names no license
