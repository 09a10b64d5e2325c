# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Training objectives: what a stage of `MaralTrainer` optimises, one file per method, and the registry.

Importing this package registers the built-in methods, in the order of the docs: `source_only` (the teacher),
`self_training`, `maral`, `contproto`, `pram` and `mcl`. A new method is a `TrainingObjective` subclass with a
`from_context` classmethod, registered with `register_objective` (see the README, "How the code is organised"):

    >>> from objectives import OBJECTIVES, methods
    >>> methods()
    ('source_only', 'self_training', 'maral', 'contproto', 'pram', 'mcl')
    >>> OBJECTIVES["maral"].self_training
    True
"""

# isort: off
# The built-in methods register in the order of the docs.
from . import source, self_training, maral, contproto, pram, mcl  # noqa: F401

# isort: on
from .base import TrainingObjective, batch_to_device, model_inputs, unwrap_model
from .contproto import ContProtoObjective, ContProtoSettings
from .losses import class_weights_from_counts
from .maral import MaralObjective, MaralSettings
from .mcl import MclObjective, MclSettings
from .mlm import MlmSettings
from .pram import PramObjective, PramSettings
from .pseudo_labels import (
    ENTITY_SHARE_WARNING_RATIO,
    PseudoLabelObjective,
    PseudoLabelSettings,
    PseudoLabelStore,
    generate_pseudo_labels,
    pseudo_label_mix,
)
from .registry import (
    OBJECTIVES,
    ObjectiveContext,
    ObjectiveSpec,
    build_objective,
    methods,
    objective_spec,
    register_objective,
    require_target_text,
)
from .self_training import SelfTrainingObjective
from .source import SourceObjective

__all__ = [
    "ENTITY_SHARE_WARNING_RATIO",
    "OBJECTIVES",
    "ContProtoObjective",
    "ContProtoSettings",
    "MaralObjective",
    "MaralSettings",
    "MclObjective",
    "MclSettings",
    "MlmSettings",
    "ObjectiveContext",
    "ObjectiveSpec",
    "PramObjective",
    "PramSettings",
    "PseudoLabelObjective",
    "PseudoLabelSettings",
    "PseudoLabelStore",
    "SelfTrainingObjective",
    "SourceObjective",
    "TrainingObjective",
    "batch_to_device",
    "build_objective",
    "class_weights_from_counts",
    "generate_pseudo_labels",
    "pseudo_label_mix",
    "methods",
    "model_inputs",
    "objective_spec",
    "register_objective",
    "require_target_text",
    "unwrap_model",
]
