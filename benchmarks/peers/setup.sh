#!/usr/bin/env bash
# Makes the peers' virtual environment (default benchmarks/peers/.venv, git-ignored) with SpanMarker and GLiNER on
# transformers 4 (pins and reasons: requirements.txt) and checks that both import. `make peers-install` runs it.
#   PYTHON=python3.11 PEERS_VENV=/path/to/venv bash benchmarks/peers/setup.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
venv="${PEERS_VENV:-$here/.venv}"

"$python" -m venv "$venv"
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
"$venv/bin/python" -m pip install --quiet "$(grep '^torch==' "$here/requirements.txt")"
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -c "
import gliner, span_marker, torch, transformers
print(f'peers venv: span_marker {span_marker.__version__}, gliner {gliner.__version__}, '
      f'transformers {transformers.__version__}, torch {torch.__version__}')
"
touch "$venv/.installed"
