"""Monitoring: the self-training diagnostics reach every `report_to` integration through `Trainer.log`."""

from __future__ import annotations

import pytest

from tests.test_related_objectives import run_method


def test_report_to_tensorboard_writes_the_self_training_diagnostics(tiny_encoder_dir, tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator", reason='pip install ".[tensorboard]"'
    )
    output_dir, _ = run_method(tmp_path, tiny_encoder_dir, "maral", "--report_to=tensorboard")
    event_files = sorted(output_dir.rglob("events.out.tfevents*"))
    assert event_files
    tags = set()
    for path in event_files:
        accumulator = event_accumulator.EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    diagnostics = {tag for tag in tags if tag.startswith("train/self_training/") or tag.startswith("self_training/")}
    names = {tag.split("self_training/", 1)[1] for tag in diagnostics}
    assert {"target_prior/PER", "reliable_fraction/O", "loss_terms/target_loss", "visited_fraction"} <= names
    assert any(name.startswith("pseudo_label_oracle/") for name in names)
