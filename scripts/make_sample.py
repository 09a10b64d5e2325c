#!/usr/bin/env python
"""Cut the small WikiANN English → German sample shipped in ``examples/data/`` from the shared BIO files.

Each output is a seeded random sample of sentences of one WikiANN (PAN-X) split, written as span JSON in file order:

    en_train.json       English train   (labelled source)
    en_dev.json         English dev     (validation, teacher selection)
    de_unlabeled.json   German train    (unlabelled target text; gold spans kept, load with unlabeled=True)
    de_test.json        German test     (final evaluation)

Sentences that are only list markup (no letter or digit in any token, e.g. ``''`` or ``===``) are left out.

Usage:
    python scripts/make_sample.py [--data-dir ../shared/data/wikiann] [--out-dir examples/data] [--overwrite]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from data_loading import load_spans, write_span_json  # noqa: E402

LABELS = ["O", "PER", "ORG", "LOC"]
SAMPLES = {
    "en_train.json": ("en/train.txt", 600),
    "en_dev.json": ("en/dev.txt", 300),
    "de_unlabeled.json": ("de/train.txt", 600),
    "de_test.json": ("de/test.txt", 1000),
}
"""Output file: (WikiANN file under the data directory, sentences)."""


def has_text(tokens: list[str]) -> bool:
    """Whether a sentence has a token with a letter or a digit (WikiANN has sentences of bare list markup)."""
    return any(character.isalnum() for token in tokens for character in token)


def sample_indices(candidates: list[int], size: int, seed: int) -> list[int]:
    """Pick ``size`` distinct indices of ``candidates`` with a seeded generator; return them in file order."""
    if size > len(candidates):
        raise ValueError(f"asked for {size} sentences, the file has {len(candidates)}")
    return sorted(random.Random(seed).sample(candidates, size))


def make_sample(data_dir: Path, out_dir: Path, seed: int = 42, overwrite: bool = False) -> dict[str, int]:
    """Write every sample file; returns the number of sentences written per output file."""
    written = {}
    for output, (source, size) in SAMPLES.items():
        dataset = load_spans(data_dir / source, labels=LABELS, data_format="conll")
        candidates = [index for index, tokens in enumerate(dataset["tokens"]) if has_text(tokens)]
        try:
            subset = dataset.select(sample_indices(candidates, size, seed))
        except ValueError as error:
            raise ValueError(f"{data_dir / source}: {error} (with text)") from error
        write_span_json(subset, out_dir / output, overwrite=overwrite)
        written[output] = len(subset)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "wikiann")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "examples" / "data")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    try:
        written = make_sample(args.data_dir, args.out_dir, args.seed, args.overwrite)
    except FileExistsError as error:
        parser.error(f"{error} (use --overwrite)")
    for output, count in written.items():
        print(f"{args.out_dir / output}: {count} sentences")


if __name__ == "__main__":
    main()
