# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`python -m model_cards card|push ...`: write a model card for an output folder, or push the folder to the Hub."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from data_loading.sources import UNLABELED_DATASETS, data_sources, hub_split_references, load_source
from output_layout import RUN_INFO_FILE

from .card import RunInfo, write_model_card
from .collect import (
    command_line,
    config_file_text,
    dataset_statistics,
    encoder_license,
    hub_base_model,
    label_examples,
    load_run_config,
    read_json,
)
from .publish import HubPushError, push_model_folder

logger = logging.getLogger(__name__)
LICENSE_HELP = "Hub license id of the model (mit, apache-2.0, ...); default: the run's, else the encoder's, else none."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_cards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="(Re)write OUTPUT_DIR/README.md from the folder's files (offline).")
    card.add_argument("output_dir")
    card.add_argument("--model_id", help="Hub id of the model (user/name), for the title and usage snippets.")
    card.add_argument(
        "--run_config",
        help=f"The .json/.yaml config file the run was given (hyper-parameters, data); default: the run's settings "
        f"saved in OUTPUT_DIR/{RUN_INFO_FILE}.",
    )
    card.add_argument("--base_model", help="Hub id of the encoder (default: derived from the run's settings).")
    card.add_argument("--dataset_id", help="Hub id of the published span data.")
    card.add_argument("--license", help=LICENSE_HELP)
    card.add_argument("--no_data", action="store_true", help="Do not read the run's data for statistics.")
    push = commands.add_parser(
        "push", help="Upload the model files of OUTPUT_DIR to a Hub repository, with a card for it."
    )
    push.add_argument("output_dir")
    push.add_argument("--repo_id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="Hub token (default: the logged-in one).")
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not Path(args.output_dir).is_dir():
        parser.error(f"{args.output_dir} is not a folder: pass the output folder of a run (or a saved model).")
    if getattr(args, "run_config", None) and not Path(args.run_config).is_file():
        parser.error(
            f"--run_config {args.run_config}: no such file. Pass the .json/.yaml file the run was given, or leave "
            f"--run_config out to use the run's saved settings ({Path(args.output_dir) / RUN_INFO_FILE})."
        )
    return args


def data_facts(run_config: dict, labels: list[str], max_span_width: int | None) -> tuple[dict, dict | None]:
    """Statistics of the run's data (the files that exist, the dataset splits that load), and label examples from
    its source training data."""
    try:
        sources = data_sources(run_config, labels=labels)
    except ValueError as error:
        logger.warning("The card has no data statistics: %s", error)
        return {}, None
    statistics, examples = {}, None
    for name, source in sources.items():
        if isinstance(source, str) and not Path(source).is_file():
            continue
        dataset = load_source(source, labels, unlabeled=name in UNLABELED_DATASETS)
        statistics[name] = dataset_statistics(dataset, max_span_width)
        if name == "source_train":
            examples = label_examples(dataset, labels)
    return statistics, examples


def run_config_info(args: argparse.Namespace) -> RunInfo:
    """What `--run_config` tells about the run: its settings, command, base model, license and data.

    Raises:
        ValueError: naming `--run_config` when the file holds no run settings (e.g. a saved model's config.json).
    """
    run_config = load_run_config(args.run_config)
    if "model_name_or_path" not in run_config:
        hint = ": it is a saved model's config.json" if "model_type" in run_config else ""
        raise ValueError(
            f"--run_config {args.run_config} holds no run settings (no model_name_or_path){hint}. Pass the "
            f".json/.yaml file the run was given, or leave --run_config out to use the run's saved settings "
            f"({RUN_INFO_FILE})."
        )
    config = read_json(Path(args.output_dir) / "config.json", {}) or {}
    statistics, examples = ({}, None)
    if not args.no_data:
        statistics, examples = data_facts(run_config, config.get("labels") or ["O"], config.get("max_span_width"))
    encoder = run_config.get("model_name_or_path")
    return RunInfo(
        base_model=hub_base_model(encoder),
        hub_datasets=hub_split_references(run_config) or None,
        license=run_config.get("license") or encoder_license(encoder),
        command=command_line([args.run_config]),
        config_text=config_file_text(args.run_config),
        run_config=run_config,
        label_examples=examples,
        data_statistics=statistics or None,
    )


def card_info(args: argparse.Namespace) -> RunInfo:
    """The card's `RunInfo`: `--run_config`'s (completed by the saved `run_info.json`) or the saved one, with the
    flags given on top; the license defaults to the base model's (`encoder_license`)."""
    saved = RunInfo.load(args.output_dir)
    info = run_config_info(args).filled_from(saved) if args.run_config else saved
    given: dict[str, Any] = {
        "model_id": args.model_id,
        "base_model": args.base_model,
        "dataset_id": args.dataset_id,
        "license": args.license,
    }
    return info.with_given(given)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parse_arguments(parser, argv)
    try:
        if args.command == "card":
            print(write_model_card(args.output_dir, card_info(args)))
        else:
            print(push_model_folder(args.output_dir, args.repo_id, private=args.private or None, token=args.token))
    except HubPushError as error:
        print(error, file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:  # a folder without a model, a file without run settings
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
