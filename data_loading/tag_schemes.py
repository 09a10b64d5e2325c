"""Conversion of per-word tag sequences (IOB1, IOB2/BIO, BIOES, BILOU) to word spans.

One tolerant decoder handles all schemes, so the scheme never has to be declared:

* ``O`` closes the open chunk.
* ``B-T`` closes the open chunk and opens a chunk of type ``T``.
* ``I-T`` continues an open chunk of type ``T``; otherwise (no chunk open, or a different type, as in IOB1)
  it closes the open chunk and opens a new one. This is the chunking rule of the reference converter
  (method spec §2.4): a chunk opens at any non-``O`` tag when none is open, and a new chunk starts whenever the
  type changes or the prefix is ``B``.
* ``E-T`` / ``L-T`` ends an open chunk of type ``T``; without one it is a single-word chunk.
* ``S-T`` / ``U-T`` is a single-word chunk.

The entity type is everything after the first ``-``. :func:`detect_tag_scheme` only reports which scheme a
sequence looks like (for logging); decoding does not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["VALID_PREFIXES", "TagError", "detect_tag_scheme", "parse_tag", "tags_to_spans"]

VALID_PREFIXES = frozenset("BIESLU")
"""Prefixes understood by :func:`tags_to_spans`: ``B``/``I`` (IOB), ``E``/``S`` (BIOES), ``L``/``U`` (BILOU)."""

_TAG_HINT = "Use 'O' or a prefix B-, I-, E-, S-, L- or U- followed by the entity type (e.g. 'B-PER')."


class TagError(ValueError):
    """A tag that is neither ``O`` nor ``<prefix>-<type>``; the readers turn it into a :class:`SpanDataError`."""


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into prefix and entity type.

    Args:
        tag: A tag such as ``"O"``, ``"B-PER"`` or ``"S-LOC"``.

    Returns:
        ``("O", None)`` for the outside tag, else ``(prefix, type)``.

    Raises:
        TagError: If the tag has no valid prefix or an empty type (``"PER"``, ``"X-PER"``, ``"B-"``).
    """
    if tag == "O":
        return "O", None
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in VALID_PREFIXES:
        raise TagError(f"tag {tag!r} has no valid prefix. {_TAG_HINT}")
    if not entity_type:
        raise TagError(f"tag {tag!r} has an empty entity type. {_TAG_HINT}")
    return prefix, entity_type


def tags_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Decode a tag sequence of any supported scheme into spans.

    Args:
        tags: One tag per word.

    Returns:
        ``(start, end, type)`` triples with inclusive word indices, in order of ``start``.

    Raises:
        TagError: For an invalid tag; ``TagError.args[1]`` holds its position in ``tags``.
    """
    spans: list[tuple[int, int, str]] = []
    open_start: int | None = None
    open_type: str | None = None
    for position, tag in enumerate(tags):
        try:
            prefix, entity_type = parse_tag(tag)
        except TagError as error:
            raise TagError(str(error), position) from None
        continues = open_start is not None and entity_type == open_type and prefix in "IEL"
        if not continues and open_start is not None:
            spans.append((open_start, position - 1, open_type))
            open_start = open_type = None
        if prefix == "O":
            continue
        if prefix in "SU":
            spans.append((position, position, entity_type))
        elif prefix in "EL":
            spans.append((position if open_start is None else open_start, position, entity_type))
            open_start = open_type = None
        elif open_start is None:
            open_start, open_type = position, entity_type
    if open_start is not None:
        spans.append((open_start, len(tags) - 1, open_type))
    return spans


def detect_tag_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """Name the tag scheme that a collection of tag sequences uses (informational only).

    Args:
        sentences: Tag sequences, one per sentence; the tags must be valid (see :func:`parse_tag`).

    Returns:
        ``"BILOU"`` if an ``L-``/``U-`` prefix occurs, else ``"BIOES"`` if an ``E-``/``S-`` prefix occurs,
        else ``"IOB1"`` if some chunk starts with ``I-``, else ``"IOB2"`` (which includes sequences of only ``O``).
    """
    seen_bioes = False
    seen_iob1_start = False
    for tags in sentences:
        previous_type: str | None = None
        for tag in tags:
            prefix, entity_type = parse_tag(tag)
            if prefix in "LU":
                return "BILOU"
            if prefix in "ES":
                seen_bioes = True
            if prefix == "I" and entity_type != previous_type:
                seen_iob1_start = True
            previous_type = entity_type if prefix in "BI" else None
    if seen_bioes:
        return "BIOES"
    return "IOB1" if seen_iob1_start else "IOB2"
