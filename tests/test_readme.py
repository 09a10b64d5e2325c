"""The README's Python examples run as written (a tiny encoder in place of the real one, a temporary folder in
place of `outputs/`, two steps in place of the epochs), so that they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
REAL_ENCODER = ".cache/encoders/multilingual-e5-small"


def python_blocks(section: str) -> list[str]:
    """The Python code blocks of one `###` section of the README, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"### {section}\n")
    end = text.find("\n### ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)


def runnable(block: str, encoder_dir: Path, output_root: Path) -> str:
    """`block` with the test's encoder, output folder and a two-step budget."""
    block = block.replace(REAL_ENCODER, str(encoder_dir)).replace('"outputs/', f'"{output_root}/')
    return re.sub(r"num_train_epochs=\d+", "max_steps=2, report_to='none'", block)


def test_readme_python_examples_run(tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    blocks = python_blocks("Python")
    assert len(blocks) >= 3  # one stage, teacher -> student, loading with plain transformers
    monkeypatch.chdir(README.parent)  # the examples read examples/data/ relative to the repository
    namespace: dict = {}
    for block in blocks:
        exec(compile(runnable(block, tiny_encoder_dir, tmp_path), "README.md", "exec"), namespace)
    assert (tmp_path / "en-de" / "model" / "config.json").is_file()
    assert (tmp_path / "en-de-maral" / "rounds" / "round_1" / "stage.json").is_file()
    assert namespace["student"].config.prediction_head == "vmf"
    teacher_f1, student_f1 = (float(value) for value in capsys.readouterr().out.split()[-2:])
    assert 0.0 <= teacher_f1 <= 1.0 and 0.0 <= student_f1 <= 1.0
