# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The one validation of method settings: each settings dataclass lists its `checks`, `validate_settings` runs them.

A settings dataclass declares `checks: ClassVar[tuple[SettingCheck, ...]]`; `MaralTrainingArguments` inherits from
every method's settings dataclass, and `validate_settings` runs the checks of each class in its MRO once (read from
the class's own namespace, so a subclass does not hide the checks of its bases). A failed check raises a
`ValueError` naming the flag.

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

from collections.abc import Callable
from typing import Any, NamedTuple


class SettingCheck(NamedTuple):
    """One requirement on one flag: `is_valid(value)` must be true (NaN fails every comparison, so it is refused)."""

    name: str
    is_valid: Callable[[Any], bool]
    requirement: str


def help_text(text: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Dataclass field metadata with the `--help` text and, for a flag with fixed values, its `choices`
    (`HfArgumentParser` passes both to argparse, which lists and enforces the choices). Say what an unset (`None`)
    value means with "unset: ..." in `text`: the help adds the default itself."""
    return {"help": text} if choices is None else {"help": text, "choices": list(choices)}


def validate_settings(settings: Any) -> None:
    """Runs the `checks` of every class of `type(settings)`'s MRO.

    Raises:
        ValueError: naming the flag of the first invalid setting.
    """
    for owner in type(settings).__mro__:
        for check in vars(owner).get("checks", ()):
            value = getattr(settings, check.name)
            if not check.is_valid(value):
                raise ValueError(f"`--{check.name}` {check.requirement}; got {value!r}.")
