# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of a MARAL model (encoder and span scoring in one graph) and its ONNX Runtime inference path.

Export a trained model folder, then predict with ONNX Runtime exactly as with `MaralForSpanNER.predict` (the same
word splitting, windows, span features, decoding and entity dicts; only the forward pass runs in the graph):

    python -m onnx_maral export-onnx outputs/en-de outputs/en-de-onnx

    >>> from onnx_maral import OnnxMaralForSpanNER
    >>> model = OnnxMaralForSpanNER.from_pretrained("outputs/en-de-onnx")  # doctest: +SKIP
    >>> model.predict("Angela Merkel besuchte Paris .")  # doctest: +SKIP
    [{'text': 'Angela Merkel', 'label': 'PER', 'score': 0.97, 'start': 0, 'end': 13, ...}, ...]

The graph takes the padded batch of `modeling_maral.collate_span_features` (`ONNX_INPUT_NAMES`, int64, batch,
sequence and span dimensions dynamic) and returns the class `probabilities` `(batch, spans, labels)` of the
configured prediction head (MLP, or vMF with the model's class statistics). The output folder holds `model.onnx`
(and its weights, `model.onnx.data`), `config.json` and the tokenizer. Needs the `onnx` extra:
`pip install "maral-xner[onnx]"` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer

from modeling_maral import (
    MODEL_INPUT_NAMES,
    MaralConfig,
    MaralForSpanNER,
    SpanPredictionMixin,
    collate_span_features,
    featurize_words,
)

ONNX_FILE = "model.onnx"
ONNX_INPUT_NAMES = tuple(name for name in MODEL_INPUT_NAMES if name != "span_mask")
ONNX_OUTPUT_NAMES = ("probabilities",)
DEFAULT_OPSET = 18
INSTALL_HINT = 'ONNX export and inference need the `onnx` extra: pip install "maral-xner[onnx]"'
# Sentences of different lengths, so that no dimension of the traced example is 1 or equal to another one.
EXAMPLE_WORDS = (
    ["Angela", "Merkel", "visited", "Paris", "and", "London", "with", "the", "United", "Nations", "."],
    ["EU", "rejects", "German", "call", "."],
)


class SpanScoringGraph(nn.Module):
    """What the ONNX graph computes: [`MaralForSpanNER`]'s forward pass and the probabilities of its head."""

    def __init__(self, model: MaralForSpanNER) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """`(batch, spans, labels)` probabilities from the tensors named by `ONNX_INPUT_NAMES`, in that order."""
        features = dict(zip(ONNX_INPUT_NAMES, inputs))
        output = self.model(
            **features,
            span_mask=features["span_word_lengths"] > 0,
            return_projections=self.model.config.prediction_head == "vmf",
        )
        return self.model.span_probabilities(output)


def example_batch(model: MaralForSpanNER) -> dict[str, torch.Tensor]:
    """A padded batch of `EXAMPLE_WORDS` to trace the graph with."""
    features = featurize_words(
        model.tokenizer, list(EXAMPLE_WORDS), model.config.max_span_width, model.config.max_seq_length
    )
    return collate_span_features(features, model.tokenizer.pad_token_id)


def export_onnx(model_dir: str | Path, output_dir: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Exports the model saved in `model_dir` to `output_dir/model.onnx`, with its config and tokenizer.

    Returns:
        The path of the ONNX file.
    """
    for module in ("onnx", "onnxscript"):  # the exporter's dependencies
        _require(module)
    model = MaralForSpanNER.from_pretrained(model_dir).eval()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    batch, spans = torch.export.Dim("batch"), torch.export.Dim("spans")
    sequence = torch.export.Dim("sequence")
    axes = tuple(
        {0: batch, 1: sequence if name in ("input_ids", "attention_mask") else spans} for name in ONNX_INPUT_NAMES
    )
    example = example_batch(model)
    path = output_dir / ONNX_FILE
    exporter_logger = logging.getLogger("torch.onnx")  # quiet: "torchvision is not installed. Skipping ..."
    level = exporter_logger.level
    exporter_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
            torch.onnx.export(
                SpanScoringGraph(model).eval(),
                tuple(example[name] for name in ONNX_INPUT_NAMES),
                str(path),
                input_names=list(ONNX_INPUT_NAMES),
                output_names=list(ONNX_OUTPUT_NAMES),
                dynamic_shapes=(axes,),  # one entry: the `*inputs` of `SpanScoringGraph.forward`
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_logger.setLevel(level)
    model.config.save_pretrained(output_dir)
    model.tokenizer.save_pretrained(output_dir)
    return path


class OnnxMaralForSpanNER(SpanPredictionMixin):
    """A MARAL model run by ONNX Runtime, with `predict` and `predict_words` of [`MaralForSpanNER`].

    Args:
        session: an `onnxruntime.InferenceSession` of an exported graph.
        config: the model's configuration.
        tokenizer: its fast tokenizer.
    """

    def __init__(self, session, config: MaralConfig, tokenizer) -> None:
        self.session = session
        self.config = config
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, path: str | Path, providers: Sequence[str] | None = None, num_threads: int | None = None
    ) -> OnnxMaralForSpanNER:
        """Loads a folder written by `export_onnx`.

        Args:
            path: the folder.
            providers: ONNX Runtime execution providers (default: CPU).
            num_threads: threads of one operator (default: ONNX Runtime's, one per physical core).
        """
        onnxruntime = _require("onnxruntime")
        path = Path(path)
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        session = onnxruntime.InferenceSession(
            str(path / ONNX_FILE), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        config = MaralConfig.from_pretrained(path)
        return cls(session, config, AutoTokenizer.from_pretrained(path, trust_remote_code=False))

    def score_spans(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Class probabilities of a batch of `collate_span_features`, computed by the ONNX graph."""
        feeds = {name: batch[name].numpy() for name in ONNX_INPUT_NAMES}
        return self.session.run(list(ONNX_OUTPUT_NAMES), feeds)[0]


def max_difference(model_dir: str | Path, onnx_dir: str | Path) -> float:
    """Largest absolute difference between the PyTorch and the ONNX Runtime probabilities of `EXAMPLE_WORDS`."""
    model = MaralForSpanNER.from_pretrained(model_dir).eval()
    batch = example_batch(model)
    onnx_model = OnnxMaralForSpanNER.from_pretrained(onnx_dir)
    return float(np.abs(model.score_spans(batch) - onnx_model.score_spans(batch)).max())


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m onnx_maral export-onnx MODEL_DIR OUT [--opset N]`."""
    parser = argparse.ArgumentParser(prog="python -m onnx_maral", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-onnx", help="export a saved MARAL model to ONNX")
    export.add_argument("model_dir", type=Path, help="a saved MARAL model folder")
    export.add_argument("output_dir", type=Path, help="folder for model.onnx, config.json and the tokenizer")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    args = parser.parse_args(argv)
    path = export_onnx(args.model_dir, args.output_dir, args.opset)
    difference = max_difference(args.model_dir, args.output_dir)
    print(f"Wrote {path}; largest probability difference to PyTorch on an example batch: {difference:.2e}")
    return 0


__all__ = ["ONNX_INPUT_NAMES", "OnnxMaralForSpanNER", "SpanScoringGraph", "export_onnx", "max_difference"]

if __name__ == "__main__":
    sys.exit(main())
