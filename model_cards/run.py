# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The end of a `run_xner.py` run: the model card from the run's arguments and data, then the requested pushes.

`run_xner.py` hands over its argument dataclasses (`ModelArguments`, `DataArguments`, `MaralTrainingArguments`,
`RunArguments`), its loaded datasets and labels; this module knows which of their fields matter.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_loading.sources import hub_split_references

from .card import RunInfo, write_model_card
from .collect import (
    command_line,
    config_file_text,
    dataset_statistics,
    encoder_license,
    hub_base_model,
    label_examples,
    read_json,
)
from .publish import HubPushError, push_model_folder, push_span_datasets

logger = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
WIDGET_POOL = 200  # target sentences offered to the widget picker when there are no predictions


def run_settings(arguments: Sequence[Any]) -> dict[str, Any]:
    """All fields of the run's argument dataclasses in one dict (later dataclasses win on shared names)."""
    settings: dict[str, Any] = {}
    for group in arguments:
        values = group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group)
        settings.update(values)
    return settings


def widget_pool(dataset) -> list[list[str]]:
    """The first `WIDGET_POOL` sentences (word lists) of a span dataset, offered to the widget picker."""
    return dataset.select_columns(["tokens"]).select(range(min(WIDGET_POOL, len(dataset)))).to_dict()["tokens"]


def config_file(argv: Sequence[str]) -> Path | None:
    """The `.json`/`.yaml` file a run was given as its only argument, if any."""
    if len(argv) == 1 and argv[0].endswith(CONFIG_SUFFIXES) and Path(argv[0]).is_file():
        return Path(argv[0])
    return None


def run_info(
    argv: Sequence[str],
    arguments: Sequence[Any],
    datasets: Mapping[str, Any],
    labels: list[str],
    max_span_width: int | None = None,
) -> RunInfo:
    """Everything about the run that the output folder does not record, for the card (`max_span_width`: the
    trained model's, for the data statistics)."""
    settings = run_settings(arguments)
    config_path = config_file(argv)
    target = datasets.get("target_test", datasets.get("target_unlabeled"))
    source_train = datasets.get("source_train")
    return RunInfo(
        model_id=settings.get("hub_model_id"),
        base_model=hub_base_model(settings.get("model_name_or_path")),
        dataset_id=settings.get("push_dataset_to_hub"),
        hub_datasets={
            name: reference for name, reference in hub_split_references(settings).items() if name in datasets
        }
        or None,
        license=settings.get("license") or encoder_license(settings.get("model_name_or_path")),
        command=command_line(list(argv)),
        config_text=config_file_text(config_path) if config_path else None,
        run_config=settings,
        label_examples=label_examples(source_train, labels) if source_train is not None else None,
        data_statistics={name: dataset_statistics(dataset, max_span_width) for name, dataset in datasets.items()},
        target_sentences=widget_pool(target) if target is not None else None,
    )


def write_run_card(
    output_dir: str | Path, argv: Sequence[str], arguments: Sequence[Any], datasets: Mapping[str, Any], labels
) -> Path | None:
    """Writes `README.md` for the model saved in `output_dir`; a failure is logged, never raised (the run's results
    are already saved; `python -m model_cards card` can write the card later)."""
    config = read_json(Path(output_dir) / "config.json")
    if config is None:
        return None
    try:
        info = run_info(argv, arguments, datasets, labels, config.get("max_span_width"))
        return write_model_card(output_dir, info)
    except Exception as error:  # noqa: BLE001 - the card must not fail a finished run
        logger.warning(
            "Could not write the model card (%s: %s). Write it later with `python -m model_cards card %s`.",
            type(error).__name__,
            error,
            output_dir,
        )
        return None


def publish_run(
    output_dir: str | Path,
    arguments: Sequence[Any],
    datasets: Mapping[str, Any],
    labels: list[str],
    push_model: bool,
    token: str | None = None,
) -> None:
    """`--push_dataset_to_hub` (the run's span data) and `--push_to_hub` (the model folder), in that order.

    Both are attempted; if either fails, a `HubPushError` gathers the messages and retry commands. `token` is the
    run's `--hub_token` (taken out of the arguments so that no saved file holds it); None: the logged-in one.
    """
    settings = run_settings(arguments)
    private = settings.get("hub_private_repo")
    errors = []
    dataset_id = settings.get("push_dataset_to_hub")
    if dataset_id:
        try:
            codes = {role: settings.get(f"{role}_language") for role in ("source", "target")}
            push_span_datasets(
                datasets, labels, dataset_id, languages=codes, private=private, token=token, fallback_dir=output_dir
            )
        except HubPushError as error:
            errors.append(str(error))
    if push_model:
        repo_id = settings.get("hub_model_id") or Path(output_dir).resolve().name
        try:
            push_model_folder(output_dir, repo_id, private=private, token=token)
        except (HubPushError, FileNotFoundError) as error:
            errors.append(str(error))
    if errors:
        raise HubPushError("\n\n".join(errors))


def trainer_facts(trainer: Any) -> RunInfo:
    """What a `MaralTrainer` knows about its run: its arguments and what its datasets show."""
    train, target, config = trainer.train_dataset, trainer.target_dataset, trainer.model.config
    return RunInfo(
        model_id=trainer.args.hub_model_id,
        run_config=trainer.args.to_dict(),
        label_examples=label_examples(train, list(config.labels)) if train is not None else None,
        data_statistics={"source_train": dataset_statistics(train, config.max_span_width)}
        if train is not None
        else None,
        target_sentences=widget_pool(target) if target is not None else None,
    )


def as_list(value: str | Sequence[str] | None) -> list[str]:
    """`Trainer.create_model_card`'s "one or several" arguments as a list."""
    return [value] if isinstance(value, str) else list(value or [])


def trainer_run_info(
    trainer: Any,
    *,
    language: str | list[str] | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
    model_name: str | None = None,
    finetuned_from: str | None = None,
    dataset_tags: str | list[str] | None = None,
    dataset: str | list[str] | None = None,
) -> RunInfo:
    """The `RunInfo` of `MaralTrainer.create_model_card`: the `run_info.json` saved in the output folder (by
    `run_xner.py`), completed by `trainer_facts`, with the arguments of `Trainer.create_model_card` that are given
    on top (`finetuned_from` is the base model; `dataset_tags` and `dataset` are Hub dataset ids). The license
    defaults to the base model's."""
    info = RunInfo.load(trainer.args.output_dir).filled_from(trainer_facts(trainer))
    given = {
        "model_id": trainer.args.hub_model_id,
        "model_name": model_name,
        "base_model": finetuned_from,
        "license": license,
        "language": as_list(language),
        "tags": as_list(tags),
        "datasets": list(dict.fromkeys(as_list(dataset_tags) + as_list(dataset))),
    }
    return info.with_given(given)


__all__ = ["publish_run", "run_info", "run_settings", "trainer_run_info", "write_run_card"]
