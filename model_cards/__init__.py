# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Model cards and Hub publishing for MARAL span-NER models (offline card generation; pushing is explicit).

    >>> from model_cards import RunInfo, push_model_folder, write_model_card
    >>> write_model_card("outputs/en-de", RunInfo(model_id="user/maral-xner-de"))  # doctest: +SKIP
    >>> push_model_folder("outputs/en-de", "user/maral-xner-de")  # doctest: +SKIP

From the shell: `python -m model_cards card OUTPUT_DIR [--model_id user/name] [--license mit]` (re)writes
`OUTPUT_DIR/README.md` from the folder and what the run saved beside it (`run_info.json`; `--run_config run.json` for a
folder without it); `python -m model_cards push OUTPUT_DIR --repo_id user/name` uploads the model with a card for that
repository. `run_xner.py` does both at the end of a run (`--push_to_hub --hub_model_id user/name`), and
`MaralTrainer.create_model_card` writes the same card. `MaralForSpanNER.save_pretrained` alone
writes no card: `modeling_maral.py` stays free of this package so that it can be shipped with the weights.
"""

from .card import RunInfo, build_model_card, eval_results, write_model_card
from .collect import dataset_statistics, hub_base_model, label_examples, read_output_folder
from .publish import HubPushError, model_files, push_model_folder, push_span_datasets, span_dataset_dict

__all__ = [
    "HubPushError",
    "RunInfo",
    "build_model_card",
    "dataset_statistics",
    "eval_results",
    "hub_base_model",
    "label_examples",
    "model_files",
    "push_model_folder",
    "push_span_datasets",
    "read_output_folder",
    "span_dataset_dict",
    "write_model_card",
]
