#!/usr/bin/env python
"""Cut the small CoNLL-2003 English/German sample shipped in ``examples/data/`` from the shared span JSON files.

Each output is a seeded random sample of sentences (``-DOCSTART-`` separators excluded) written in file order:

    en_train.json       1,000 sentences of spanner.train   (English train, labeled source)
    en_dev.json           300 sentences of spanner.dev     (English dev, validation)
    de_unlabeled.json     500 sentences of spanner.unlabel (German train; gold spans kept, load with unlabeled=True)
    de_test.json          300 sentences of spanner.test    (German test)

Usage:
    python scripts/make_sample.py [--data-dir ../shared/data/conll03_en_de] [--out-dir examples/data] [--overwrite]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from data_loading import load_spans, write_span_json  # noqa: E402

LABELS = ["O", "ORG", "PER", "LOC", "MISC"]
SAMPLES = {
    "en_train.json": ("spanner.train", 1000),
    "en_dev.json": ("spanner.dev", 300),
    "de_unlabeled.json": ("spanner.unlabel", 500),
    "de_test.json": ("spanner.test", 300),
}


def sample_indices(num_rows: int, size: int, seed: int) -> list[int]:
    """Pick ``size`` distinct row indices with a seeded generator and return them in ascending (file) order."""
    return sorted(random.Random(seed).sample(range(num_rows), size))


def make_sample(data_dir: Path, out_dir: Path, seed: int = 42, overwrite: bool = False) -> dict[str, int]:
    """Write every sample file; returns the number of sentences written per output file."""
    written = {}
    for output, (source, size) in SAMPLES.items():
        dataset = load_spans(data_dir / source, labels=LABELS, drop_docstart=True)
        subset = dataset.select(sample_indices(len(dataset), size, seed))
        write_span_json(subset, out_dir / output, overwrite=overwrite)
        written[output] = len(subset)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "conll03_en_de")
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
