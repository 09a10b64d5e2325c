# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Publishing to the Hugging Face Hub: a trained model folder, and the span data of a run as a `DatasetDict`.

Only the files a user of the model needs are uploaded, in one commit: the safetensors weights, `config.json` (with
its `auto_map` and `custom_pipelines`), `modeling_maral.py`, `pipeline_maral.py`, the tokenizer files, the model
card `README.md` and `all_results.json`; never `training_args.bin` (a pickle), checkpoints, stage folders or
predictions. A folder without a card for the repository (none, or one of this package written for another id) gets
one for it, built from the folder and its saved `run_info.json` (`card_for_repository`); the folder is not changed.

A failed push never touches the local folder and raises a `HubPushError` whose message gives the command that
retries it, e.g. `python -m model_cards push outputs/en-de --repo_id user/maral-xner-de`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from output_layout import CARD_FILE, RUN_INFO_FILE

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
MODEL_FILES = (
    "config.json",
    "modeling_maral.py",
    "pipeline_maral.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "README.md",
    "all_results.json",
)
REQUIRED_MODEL_FILES = ("config.json", "modeling_maral.py")
DATASET_FOLDER = "hub_dataset"


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says what failed and how to retry. Local files are untouched."""


def weight_files(folder: Path) -> list[str]:
    """The model's weights: `model.safetensors`, or the shards that `model.safetensors.index.json` lists (and the
    index); never other `*.safetensors` lying in the folder."""
    index = folder / WEIGHTS_INDEX_FILE
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        return [WEIGHTS_INDEX_FILE, *shards] if all((folder / shard).is_file() for shard in shards) else []
    return [WEIGHTS_FILE] if (folder / WEIGHTS_FILE).is_file() else []


def model_files(folder: str | Path) -> list[str]:
    """The files of a saved model folder that belong on its Hub page, sorted: the weights (`weight_files`) and the
    named files of `MODEL_FILES` that exist (the card, `README.md`, if it has one).

    Raises:
        FileNotFoundError: when the weights, `config.json` or `modeling_maral.py` are missing.
    """
    folder = Path(folder)
    names = sorted(weight_files(folder) + [name for name in MODEL_FILES if (folder / name).is_file()])
    missing = [name for name in REQUIRED_MODEL_FILES if name not in names]
    if not any(name.endswith(".safetensors") for name in names):
        missing.append(f"{WEIGHTS_FILE} (or the shards of {WEIGHTS_INDEX_FILE})")
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete MARAL model folder: {', '.join(missing)} missing. Save the model there with "
            "`save_pretrained` (or train it with run_xner.py) first."
        )
    return names


def card_for_repository(folder: Path, repo_id: str) -> bytes | None:
    """The card to upload in place of `folder`'s README.md, or None to upload that file as it is.

    A folder without a card, or whose card this package wrote for another repository (its `run_info.json` names
    another `model_id`, or none), gets the card for `repo_id` (title, model-index and usage code), built from the
    folder and its saved `run_info.json`. Any other README.md is the author's own card and is kept.
    """
    from .card import RunInfo, build_model_card

    info = RunInfo.load(folder)
    has_card, written_here = (folder / CARD_FILE).is_file(), (folder / RUN_INFO_FILE).is_file()
    if has_card and (not written_here or info.model_id == repo_id):
        return None
    logger.info("Writing the model card of %s for %s (the folder has %s).", folder, repo_id,
                "one for another repository" if has_card else "none")  # fmt: skip
    return str(build_model_card(folder, dataclasses.replace(info, model_id=repo_id, model_name=None))).encode()


def full_repo_id(api: Any, repo_id: str) -> str:
    """`user/name` for `repo_id`, which may leave out the namespace (the token's user)."""
    return repo_id if "/" in repo_id else f"{api.whoami()['name']}/{repo_id}"


def push_failure(folder: Path, repo_id: str, private: bool | None, error: Exception) -> HubPushError:
    """The error of a failed push, with the command that retries it."""
    return HubPushError(
        f"Pushing the model in {folder} to the Hub repository {repo_id} failed: {type(error).__name__}: {error}\n"
        f"The local folder {folder} is complete and unchanged. Retry with:\n"
        f"    {retry_model_command(folder, repo_id, private)}"
    )


def check_no_credentials(folder: Path, contents: Mapping[str, str | bytes], secrets: list[str | None]) -> None:
    """Refuses a push whose files contain a credential (the token the push uses, the logged-in one).

    Args:
        folder: the model folder.
        contents: `{name in the repository: local path, or the content itself (a generated card)}`.
        secrets: the tokens to look for.

    Raises:
        HubPushError: naming the file; nothing is sent.
    """
    secrets = [secret.encode() for secret in secrets if secret and len(secret) >= 8]
    for name, data in contents.items():
        content = data if isinstance(data, bytes) else Path(data).read_bytes()
        if any(secret in content for secret in secrets):
            raise HubPushError(
                f"{folder / name} contains a Hub token: nothing was pushed. Remove it (rewrite the card with "
                f"`python -m model_cards card {folder}`) and push again."
            )


def retry_model_command(folder: str | Path, repo_id: str, private: bool | None = None) -> str:
    """The shell command that pushes `folder` again."""
    command = f"python -m model_cards push {shlex.quote(str(folder))} --repo_id {shlex.quote(repo_id)}"
    return command + (" --private" if private else "")


def push_model_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload MARAL span-NER model",
) -> str:
    """Creates `repo_id` if needed and uploads the model files of `folder` with its card for `repo_id`
    (`card_for_repository`) in one commit.

    Args:
        folder: a saved model folder.
        repo_id: `user/name` (or `name`, in the namespace of the token's user).
        private: create the repository private (ignored when it exists).
        token: a Hub token; defaults to the logged-in one (`HF_TOKEN`, `hf auth login`).
        commit_message: title of the commit.

    Returns:
        The URL of the commit.

    Raises:
        FileNotFoundError: when the folder is incomplete (nothing is sent).
        HubPushError: when a file contains the token (nothing is sent), or the Hub refuses or the connection fails;
            nothing local is changed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    folder = Path(folder)
    names = model_files(folder)
    api = HfApi(token=token)
    try:
        repo_id = full_repo_id(api, repo_id)
    except Exception as error:  # noqa: BLE001 - every failure gets the same retry advice
        raise push_failure(folder, repo_id, private, error) from error
    card = card_for_repository(folder, repo_id)
    contents = {name: str(folder / name) for name in names} | ({CARD_FILE: card} if card is not None else {})
    check_no_credentials(folder, contents, [token, get_token()])
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in contents.items()]
        commit = api.create_commit(repo.repo_id, operations=operations, commit_message=commit_message)
    except Exception as error:  # noqa: BLE001 - every failure gets the same retry advice
        raise push_failure(folder, repo_id, private, error) from error
    logger.info("Pushed %d files of %s to %s", len(contents), folder, commit.commit_url)
    return commit.commit_url


# -- datasets -----------------------------------------------------------------------------------------------------


def to_span_dataset(dataset, labels: list[str]):
    """A run's dataset in the published layout: `sentence_id`, `tokens`, `spans` typed by `span_features(labels)`.

    Unlabeled target text (loaded with a `gold_spans` column) is published like its source file: its gold spans,
    if any, are in `spans` (load it back with `load_spans(..., unlabeled=True)` to keep them for diagnostics only).
    """
    from data_loading import span_features

    if "gold_spans" in dataset.column_names:
        dataset = dataset.remove_columns("spans").rename_column("gold_spans", "spans")
    dataset = dataset.select_columns(["sentence_id", "tokens", "spans"])
    return dataset.cast(span_features(labels))


def span_dataset_dict(datasets: Mapping[str, Any], labels: list[str]):
    """A `DatasetDict` with one split per dataset of the run (`source_train`, `source_dev`, `target_unlabeled`,
    `target_dev`, `target_test`, as present), all with the same typed features."""
    from datasets import DatasetDict

    return DatasetDict({name: to_span_dataset(dataset, labels) for name, dataset in datasets.items()})


def dataset_card_text(labels: list[str], splits: list[str], languages: dict[str, str | None]) -> str:
    """A short dataset card; `datasets` adds `dataset_info` and `configs` to its YAML when pushing."""
    codes = [code for code in languages.values() if code]
    header = "---\n" + (f"language: [{', '.join(codes)}]\n" if codes else "")
    header += "task_categories: [token-classification]\ntags: [ner, span-ner, cross-lingual, maral]\n---\n"
    return (
        header
        + "\n# Span NER data of a maral-xner run\n\n"
        + f"Splits: {', '.join(f'`{split}`' for split in splits)}. Labels: {', '.join(labels[1:])} (`O` first in the "
        "`ClassLabel`). Each row holds `sentence_id`, `tokens` and `spans` (`start`, `end` inclusive word indices, "
        "`label`).\n\n`target_unlabeled` is the target-language text used without labels: gold spans in it, if any, "
        "are for diagnostics only. Load it with `data_loading.load_spans(dataset, unlabeled=True)`.\n"
    )


def retry_dataset_command(saved: Path, repo_id: str, private: bool | None = None) -> str:
    code = f"from datasets import load_from_disk; load_from_disk({str(saved)!r}).push_to_hub({repo_id!r}"
    code += ", private=True)" if private else ")"
    return f"python -c {shlex.quote(code)}"


def push_span_datasets(
    datasets: Mapping[str, Any],
    labels: list[str],
    repo_id: str,
    *,
    languages: dict[str, str | None] | None = None,
    private: bool | None = None,
    token: str | None = None,
    fallback_dir: str | Path | None = None,
) -> str:
    """Pushes a run's span data as a `DatasetDict` (see `span_dataset_dict`) with a short card.

    Args:
        datasets: `{split name: dataset}` from `data_loading.load_spans`.
        labels: the label list, `O` first.
        repo_id: the dataset repository, `user/name`.
        languages: `{"source": code, "target": code}` for the card.
        private: create the repository private.
        token: a Hub token (defaults to the logged-in one).
        fallback_dir: where the converted data is saved (`save_to_disk`) if the push fails, for the retry.

    Returns:
        The URL of the last commit.

    Raises:
        HubPushError: when the push fails (the message gives the retry command).
    """
    from huggingface_hub import HfApi

    dataset_dict = span_dataset_dict(datasets, labels)
    try:
        api = HfApi(token=token)
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if not api.file_exists(repo.repo_id, "README.md", repo_type="dataset"):
            card = dataset_card_text(labels, list(dataset_dict), languages or {})
            api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo.repo_id,
                            repo_type="dataset", commit_message="Add dataset card")  # fmt: skip
        commit = dataset_dict.push_to_hub(repo.repo_id, private=private, token=token)
    except Exception as error:  # noqa: BLE001 - every failure gets the same retry advice
        message = (
            f"Pushing the span data to the Hub dataset repository {repo_id} failed: {type(error).__name__}: {error}"
        )
        if fallback_dir is None:
            raise HubPushError(message + "\nRerun the push once the Hub is reachable.") from error
        saved = Path(fallback_dir) / DATASET_FOLDER
        dataset_dict.save_to_disk(str(saved))
        raise HubPushError(
            f"{message}\nThe converted data was saved to {saved}. Retry with:\n"
            f"    {retry_dataset_command(saved, repo_id, private)}"
        ) from error
    logger.info("Pushed the span data (%s) to %s", ", ".join(dataset_dict), commit.commit_url)
    return commit.commit_url
