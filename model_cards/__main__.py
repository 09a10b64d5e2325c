# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`python -m model_cards card|push ...`: write a model card for an output folder, or push the folder to the Hub."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .card import RunInfo, write_model_card
from .collect import (
    DATA_FILE_KEYS,
    command_line,
    config_file_text,
    dataset_statistics,
    hub_base_model,
    label_examples,
    load_run_config,
    read_json,
)
from .publish import HubPushError, push_model_folder


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model_cards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="(Re)write OUTPUT_DIR/README.md from the folder's files (offline).")
    card.add_argument("output_dir")
    card.add_argument("--model_id", help="Hub id of the model (user/name), for the title and usage snippets.")
    card.add_argument("--run_config", help="The .json/.yaml config file the run was given (hyper-parameters, data).")
    card.add_argument("--base_model", help="Hub id of the encoder (default: derived from the run config).")
    card.add_argument("--dataset_id", help="Hub id of the published span data.")
    card.add_argument("--license", default="apache-2.0")
    card.add_argument("--no_data", action="store_true", help="Do not read the run's data files for statistics.")
    push = commands.add_parser("push", help="Upload the model files of OUTPUT_DIR to a Hub repository.")
    push.add_argument("output_dir")
    push.add_argument("--repo_id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="Hub token (default: the logged-in one).")
    args = parser.parse_args(argv)
    if not Path(args.output_dir).is_dir():
        parser.error(f"{args.output_dir} is not a folder: pass the output folder of a run (or a saved model).")
    if getattr(args, "run_config", None) and not Path(args.run_config).is_file():
        parser.error(f"--run_config {args.run_config}: no such file (the .json/.yaml file the run was given).")
    return args


def data_facts(run_config: dict, labels: list[str], max_span_width: int | None) -> tuple[dict, dict | None]:
    """Statistics of the run's data files that exist, and label examples from the source training file."""
    from data_loading import load_spans

    statistics, examples = {}, None
    for name, key in DATA_FILE_KEYS.items():
        path = run_config.get(key)
        if not path or not Path(path).is_file():
            continue
        dataset = load_spans(path, labels=labels, unlabeled=name == "target_unlabeled")
        statistics[name] = dataset_statistics(dataset, max_span_width)
        if name == "source_train":
            examples = label_examples(dataset, labels)
    return statistics, examples


def card_info(args: argparse.Namespace) -> RunInfo:
    run_config = load_run_config(args.run_config) if args.run_config else {}
    config = read_json(Path(args.output_dir) / "config.json", {}) or {}
    statistics, examples = ({}, None)
    if run_config and not args.no_data:
        statistics, examples = data_facts(run_config, config.get("labels") or ["O"], config.get("max_span_width"))
    return RunInfo(
        model_id=args.model_id,
        base_model=args.base_model or hub_base_model(run_config.get("model_name_or_path")),
        dataset_id=args.dataset_id,
        license=args.license,
        command=command_line([args.run_config]) if args.run_config else None,
        config_text=config_file_text(args.run_config) if args.run_config else None,
        run_config=run_config or None,
        label_examples=examples,
        data_statistics=statistics or None,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_arguments(argv)
    if args.command == "card":
        print(write_model_card(args.output_dir, card_info(args)))
        return 0
    try:
        print(push_model_folder(args.output_dir, args.repo_id, private=args.private or None, token=args.token))
    except HubPushError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
