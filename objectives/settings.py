# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The one validation of settings: each settings dataclass lists its `checks`, `validate_settings` runs them.

A settings dataclass declares `checks: ClassVar[tuple[SettingCheck, ...]]`; `MaralTrainingArguments` inherits from
every method's settings dataclass, and `validate_settings` runs the checks of each class in its MRO once (read from
the class's own namespace, so a subclass does not hide the checks of its bases). A failed check raises a
`ValueError` naming the flag. The command line's own argument dataclasses (model, data) use the same checks.

A method's settings dataclass also names the methods that read it (`methods: ClassVar[tuple[str, ...]]`);
`unused_settings` lists the flags of the others that a run changed from their defaults, for a warning.

Example:
    >>> @dataclass
    ... class ToySettings:
    ...     toy_weight: float = field(default=1.0, metadata=help_text("A weight."))
    ...     checks: ClassVar[tuple[SettingCheck, ...]] = (SettingCheck("toy_weight", lambda v: v >= 0, ">= 0 only"),)
    >>> validate_settings(ToySettings(toy_weight=-1.0))
    Traceback (most recent call last):
    ...
    ValueError: `--toy_weight` >= 0 only; got -1.0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

SELF_TRAINING_METHODS = ("self_training", "maral", "contproto", "mcl")
"""The built-in teacher -> student methods (those that read `PseudoLabelSettings`)."""


class SettingCheck(NamedTuple):
    """One requirement on one flag: `is_valid(value)` must be true (NaN fails every comparison, so it is refused).

    `applies(settings)`, when given, restricts the check to the runs it is true for (e.g. only with `--do_train`).
    """

    name: str
    is_valid: Callable[[Any], bool]
    requirement: str
    applies: Callable[[Any], bool] | None = None


def help_text(text: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Dataclass field metadata with the `--help` text and, for a flag with fixed values, its `choices`
    (`HfArgumentParser` passes both to argparse, which lists and enforces the choices). Say what an unset (`None`)
    value means with "unset: ..." in `text`: the help adds the default itself."""
    return {"help": text} if choices is None else {"help": text, "choices": list(choices)}


def is_positive(value: Any) -> bool:
    """A finite number > 0 (NaN and infinity are refused)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def is_non_negative(value: Any) -> bool:
    """A finite number >= 0 (NaN and infinity are refused)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def is_probability_below_one(value: Any) -> bool:
    """A number in [0, 1) (a dropout rate)."""
    return isinstance(value, (int, float)) and 0 <= value < 1


def validate_settings(settings: Any) -> None:
    """Runs the `checks` of every class of `type(settings)`'s MRO.

    Raises:
        ValueError: naming the flag of the first invalid setting.
    """
    for owner in type(settings).__mro__:
        for check in vars(owner).get("checks", ()):
            if check.applies is not None and not check.applies(settings):
                continue
            value = getattr(settings, check.name)
            if not check.is_valid(value):
                raise ValueError(f"`--{check.name}` {check.requirement}; got {value!r}.")


def unused_settings(settings: Any, method: str) -> list[tuple[str, tuple[str, ...]]]:
    """`(flag, methods that read it)` for every setting of a class of `type(settings)`'s MRO whose `methods` do not
    include `method`, and whose value differs from its default (it was given, and `method` ignores it)."""
    unused = []
    for owner in type(settings).__mro__:
        owner_methods = vars(owner).get("methods")
        if owner_methods is None or method in owner_methods:
            continue
        own = vars(owner).get("__annotations__", {})
        for declared in dataclasses.fields(owner):
            if declared.name not in own or declared.default is dataclasses.MISSING:
                continue
            if getattr(settings, declared.name) != declared.default:
                unused.append((declared.name, owner_methods))
    return unused
