"""Shared fixtures: no network, one thread, tiny tokenizers and encoders built in code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.tiny_models import (  # noqa: E402
    TINY_LABELS,
    build_tiny_encoder_dir,
    build_tiny_unigram_tokenizer,
    build_tiny_wordpiece_tokenizer,
)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    """A tiny BERT-style WordPiece fast tokenizer."""
    return build_tiny_wordpiece_tokenizer()


@pytest.fixture(scope="session")
def unigram_tokenizer():
    """A tiny XLM-R-style Unigram/Metaspace fast tokenizer (with a stand-alone `▁` piece)."""
    return build_tiny_unigram_tokenizer()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT encoder (random weights) with its WordPiece tokenizer."""
    return build_tiny_encoder_dir(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture()
def tiny_labels() -> list[str]:
    return list(TINY_LABELS)
