"""Peers side by side: SpanMarker and GLiNER on the benchmark's English sample, encoder and budget (`compare.py`)."""
