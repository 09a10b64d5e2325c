# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The `"maral-ner"` task of `transformers.pipeline`, a thin wrapper around `MaralForSpanNER.predict`.

This file is uploaded next to `modeling_maral.py` and declared in `config.json` (`custom_pipelines`), so that with
only transformers and torch installed the stock pipeline loads a MARAL model from its Hub page:

    >>> from transformers import pipeline
    >>> ner = pipeline("maral-ner", model="user/maral-xner-de", trust_remote_code=True)  # doctest: +SKIP
    >>> ner("Angela Merkel besuchte Paris .", threshold=0.5)  # doctest: +SKIP
    [{'text': 'Angela Merkel', 'label': 'PER', 'score': 0.98, 'start': 0, 'end': 13, 'word_start': 0, 'word_end': 1},
     {'text': 'Paris', 'label': 'LOC', ...}]

(`pipeline("token-classification", ...)`, the Hub's task for these models, gives the same.) Where maral-xner is
installed, importing this module registers the task (and, through `modeling_maral`, the `maral` model type), so a
MARAL model loads without `trust_remote_code`: `import pipeline_maral; pipeline("maral-ner", model=...)`.

Inputs and outputs are those of `predict`: a string, a list of strings or pre-tokenized word lists in, entity dicts
with character offsets out (a list per text for a batch). Like `modeling_maral.py`, this file imports only
transformers (and the modeling file beside it).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

try:  # as remote code, next to the uploaded modeling file
    from .modeling_maral import PIPELINE_TASK
except ImportError:  # installed with maral-xner
    from modeling_maral import PIPELINE_TASK

TASK = PIPELINE_TASK
PREDICT_OPTIONS = ("threshold", "decoding", "is_split_into_words", "allow_truncation", "stride", "show_progress_bar")


class MaralNERPipeline(Pipeline):
    """Named-entity recognition with a [`MaralForSpanNER`] model.

    Call options (all optional): `threshold` (minimum entity score), `decoding` (`greedy`, `legacy`, `none`),
    `is_split_into_words` (a flat list of strings is one pre-tokenized text), `stride` (subwords shared by the
    windows of a long text), `allow_truncation` (a word longer than a window is skipped instead of raising),
    `show_progress_bar` and `batch_size` (windows per forward pass).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self.model, "predict") or not hasattr(self.model, "set_tokenizer"):
            raise TypeError(f"The {TASK} pipeline needs a MARAL span model; got {type(self.model).__name__}.")
        if self.tokenizer is not None:
            self.model.set_tokenizer(self.tokenizer)

    def _sanitize_parameters(self, batch_size: int | None = None, **kwargs: Any):
        unknown = sorted(set(kwargs) - set(PREDICT_OPTIONS))
        if unknown:
            raise TypeError(f"Unknown option(s) {unknown} of the {TASK} pipeline; use {PREDICT_OPTIONS}.")
        forward_params = {key: value for key, value in kwargs.items() if value is not None}
        batch_size = batch_size or self._batch_size
        if batch_size is not None:
            forward_params["batch_size"] = batch_size
        return {}, forward_params, {}

    def __call__(self, inputs: str | list[str] | list[list[str]], **kwargs: Any):
        """Predicts the entities of one text or of a batch in a single `predict` call (batched by length)."""
        _, forward_params, _ = self._sanitize_parameters(**kwargs)
        return self.postprocess(self._forward(self.preprocess(inputs), **forward_params))

    def preprocess(self, inputs: Any, **preprocess_parameters: Any) -> dict[str, Any]:
        return {"inputs": inputs}

    def _forward(self, input_tensors: dict[str, Any], **forward_parameters: Any) -> dict[str, Any]:
        return {"entities": self.model.predict(input_tensors["inputs"], **forward_parameters)}

    def postprocess(self, model_outputs: dict[str, Any], **postprocess_parameters: Any):
        return model_outputs["entities"]


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MaralNERPipeline, pt_model=AutoModel, type="text")

__all__ = ["TASK", "MaralNERPipeline"]
