"""Tests of the peers' comparison (`benchmarks/peers/`): SpanMarker's and GLiNER's output dicts -> our spans (word
indices, character offsets, label names), their metrics by our evaluation on known entities, the transformers-4
view of an encoder, the budget a peer is given, the tables. The end-to-end run of both peers on a tiny encoder needs
the peers' virtual environment (`make peers-install`) and is skipped without it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from benchmarks import matrix
from benchmarks.peers import common, compare, conversion
from data_loading import load_spans
from modeling_maral import join_words
from tests.tiny_models import TINY_SOURCE_RECORDS, build_tiny_wordpiece_tokenizer, tiny_bert_config

LABELS = ["O", "LOC", "MISC", "ORG", "PER"]
LOC, MISC, ORG, PER = 1, 2, 3, 4
GLINER_NAMES = compare.label_names("gliner", LABELS)
TOKENS = ["Angela", "Merkel", "besuchte", "Paris", "und", "die", "UNO", "."]
# Character offsets in "Angela Merkel besuchte Paris und die UNO ." (words joined by single spaces).
ANGELA_MERKEL, PARIS, UNO = (0, 13), (23, 28), (37, 40)


# ---------------------------------------------------------------------------------------------------------------
# Peer output dicts -> our entities
# ---------------------------------------------------------------------------------------------------------------


def test_label_names_map_both_ways():
    assert GLINER_NAMES == {"LOC": "location", "MISC": "miscellaneous", "ORG": "organization", "PER": "person"}
    assert compare.label_names("spanmarker", LABELS) == {name: name for name in LABELS[1:]}
    assert conversion.peer_label_ids(LABELS, GLINER_NAMES) == {
        "location": 1,
        "miscellaneous": 2,
        "organization": 3,
        "person": 4,
    }
    with pytest.raises(conversion.PeerOutputError, match="MISC"):
        conversion.peer_label_ids(LABELS, {"LOC": "location", "ORG": "organization", "PER": "person"})
    text = common.format_label_names(GLINER_NAMES)
    assert common.parse_label_names(text) == GLINER_NAMES
    assert common.parse_label_names("LOC, PER") == {"LOC": "LOC", "PER": "PER"}
    for bad in ("", "LOC,LOC", "LOC=x,PER=x", "=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--labels"):
            common.parse_label_names(bad)


def test_char_span_to_words_aligns_and_snaps():
    _, offsets = join_words(TOKENS)
    assert conversion.char_span_to_words(*ANGELA_MERKEL, offsets) == (0, 1)
    assert conversion.char_span_to_words(*PARIS, offsets) == (3, 3)
    assert conversion.char_span_to_words(2, 9, offsets) == (0, 1)  # inside words: the words it overlaps
    assert conversion.char_span_to_words(12, 14, offsets) == (1, 1)  # the space after a word belongs to no word
    with pytest.raises(conversion.PeerOutputError, match="overlap no word"):
        conversion.char_span_to_words(13, 14, offsets)


def test_spanmarker_word_indices_end_exclusive():
    label_ids = conversion.peer_label_ids(LABELS, compare.label_names("spanmarker", LABELS))
    entities = [
        {"span": ["Paris"], "label": "LOC", "score": 0.9, "word_start_index": 3, "word_end_index": 4},
        {"span": ["Angela", "Merkel"], "label": "PER", "score": 0.8, "word_start_index": 0, "word_end_index": 2},
    ]
    assert conversion.peer_entities(entities, TOKENS, label_ids) == [(0, 1, PER, 0.8), (3, 3, LOC, 0.9)]
    text_entities = [{"label": "ORG", "score": 0.7, "char_start_index": UNO[0], "char_end_index": UNO[1]}]
    assert conversion.peer_entities(text_entities, TOKENS, label_ids) == [(6, 6, ORG, 0.7)]


def test_gliner_char_offsets_and_prompt_names():
    label_ids = conversion.peer_label_ids(LABELS, GLINER_NAMES)
    text = " ".join(TOKENS)
    entities = [
        {"start": start, "end": end, "text": text[start:end], "label": label, "score": 0.6}
        for (start, end), label in ((UNO, "organization"), (ANGELA_MERKEL, "person"), (PARIS, "location"))
    ]
    assert [entity["text"] for entity in entities] == ["UNO", "Angela Merkel", "Paris"]
    assert conversion.peer_entities(entities, TOKENS, label_ids) == [
        (0, 1, PER, 0.6),
        (3, 3, LOC, 0.6),
        (6, 6, ORG, 0.6),
    ]


def test_bad_peer_entities_name_the_problem():
    label_ids = conversion.peer_label_ids(LABELS, GLINER_NAMES)
    with pytest.raises(conversion.PeerOutputError, match="unknown label 'PER'"):
        conversion.peer_entities([{"start": 0, "end": 6, "label": "PER"}], TOKENS, label_ids)
    with pytest.raises(conversion.PeerOutputError, match="outside a sentence of 8 words"):
        conversion.peer_entities([{"word_start_index": 7, "word_end_index": 9, "label": "person"}], TOKENS, label_ids)
    with pytest.raises(conversion.PeerOutputError, match="without word indices or character offsets"):
        conversion.peer_entities([{"label": "person"}], TOKENS, label_ids)


# ---------------------------------------------------------------------------------------------------------------
# Metrics of known entities
# ---------------------------------------------------------------------------------------------------------------


def gold_rows() -> list[dict]:
    """Two sentences: 3 + 2 gold entities, one of them 5 words wide (beyond a span width of 4)."""
    return [
        {
            "sentence_id": 0,
            "tokens": TOKENS,
            "spans": [
                {"start": 0, "end": 1, "label": PER},
                {"start": 3, "end": 3, "label": LOC},
                {"start": 6, "end": 6, "label": ORG},
            ],
        },
        {
            "sentence_id": 1,
            "tokens": ["Die", "Freie", "Universität", "zu", "Berlin", "tagt", "in", "Dahlem"],
            "spans": [{"start": 0, "end": 4, "label": ORG}, {"start": 7, "end": 7, "label": LOC}],
        },
    ]


def gliner_record(sentence_id: int, tokens: list[str], spans, words_read: int | None = None) -> dict:
    """A raw GLiNER line: its character-offset dicts for `(start_word, end_word, name)` spans."""
    _, offsets = join_words(tokens)
    entities = [
        {"start": offsets[start][0], "end": offsets[end][1], "label": name, "score": 0.9} for start, end, name in spans
    ]
    return {
        "sentence_id": sentence_id,
        "words_read": len(tokens) if words_read is None else words_read,
        "entities": entities,
    }


def test_known_predictions_give_known_f1():
    rows = gold_rows()
    # Sentence 0: PER right, LOC right, UNO as LOC (wrong label); sentence 1: Dahlem right, nothing for the wide ORG.
    records = [
        gliner_record(1, rows[1]["tokens"], [(7, 7, "location")]),
        gliner_record(0, TOKENS, [(0, 1, "person"), (3, 3, "location"), (6, 6, "location")]),
    ]
    metrics, entities = conversion.score_peer(rows, records, LABELS, GLINER_NAMES, max_span_width=4)
    assert entities == [[(0, 1, PER, 0.9), (3, 3, LOC, 0.9), (6, 6, LOC, 0.9)], [(7, 7, LOC, 0.9)]]
    # Span F1: 3 correct of 4 predicted, 4 reachable gold (the 5-word ORG is beyond the span width).
    assert metrics["span_precision"] == pytest.approx(3 / 4)
    assert metrics["span_recall"] == pytest.approx(3 / 4)
    assert metrics["span_f1"] == pytest.approx(3 / 4)
    # seqeval counts all 5 gold entities, the wide ORG too.
    assert metrics["seqeval_precision"] == pytest.approx(3 / 4)
    assert metrics["seqeval_recall"] == pytest.approx(3 / 5)
    assert metrics["seqeval_f1"] == pytest.approx(2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))
    assert metrics["per_label"]["PER"]["span_f1"] == pytest.approx(1.0)
    assert metrics["per_label"]["ORG"]["span_f1"] == 0.0


def test_truncated_words_leave_span_f1_but_not_seqeval():
    rows = gold_rows()[:1]
    perfect = [(0, 1, "person"), (3, 3, "location"), (6, 6, "organization")]
    metrics, _ = conversion.score_peer(rows, [gliner_record(0, TOKENS, perfect)], LABELS, GLINER_NAMES, 4)
    assert metrics["span_f1"] == metrics["seqeval_f1"] == pytest.approx(1.0)
    # The peer read 5 words: the UNO (word 6) is out of its reach, so span F1 does not count it; seqeval does.
    metrics, _ = conversion.score_peer(rows, [gliner_record(0, TOKENS, perfect[:2], 5)], LABELS, GLINER_NAMES, 4)
    assert metrics["span_f1"] == pytest.approx(1.0)
    assert metrics["seqeval_recall"] == pytest.approx(2 / 3)
    assert (6, 6) not in conversion.ReachableSpans(4, 5)
    assert (0, 3) in conversion.ReachableSpans(4, 5) and (0, 4) not in conversion.ReachableSpans(4, 5)


def test_predictions_must_cover_the_sentences():
    rows = gold_rows()
    with pytest.raises(conversion.PeerOutputError, match="raw_target_test.jsonl: 1 predictions for 2 sentences"):
        conversion.score_peer(rows, [gliner_record(0, TOKENS, [])], LABELS, GLINER_NAMES, 4, "raw_target_test.jsonl")


# ---------------------------------------------------------------------------------------------------------------
# Inputs, the encoder view and the budget
# ---------------------------------------------------------------------------------------------------------------


def test_export_records_carry_tags_and_spans(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(TINY_SOURCE_RECORDS[:2]), encoding="utf-8")
    records = list(compare.export_records(load_spans(str(path), labels=LABELS), LABELS))
    assert records[0]["tokens"][:2] == ["Peter", "Blackburn"]
    assert records[0]["tags"][:4] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert records[1]["spans"] == [{"start": 0, "end": 0, "label": "ORG"}, {"start": 2, "end": 2, "label": "MISC"}]


def save_tiny_encoder(directory: Path, max_positions: int = 128) -> Path:
    """A random tiny BERT encoder saved by this environment's transformers (5), with its WordPiece tokenizer."""
    tokenizer = build_tiny_wordpiece_tokenizer()
    torch.manual_seed(0)
    config = tiny_bert_config(len(tokenizer))
    config.pad_token_id, config.max_position_embeddings = tokenizer.pad_token_id, max_positions
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_readable_encoder_renames_the_transformers_5_tokenizer_class(tmp_path):
    encoder = save_tiny_encoder(tmp_path / "encoder")
    saved = json.loads((encoder / "tokenizer_config.json").read_text())
    view = common.readable_encoder(encoder, tmp_path / "run")
    if saved.get("tokenizer_class") not in common.TRANSFORMERS_5_TOKENIZER_CLASSES:
        assert view == encoder
        return
    assert view == tmp_path / "run" / "encoder"
    written = json.loads((view / "tokenizer_config.json").read_text())
    assert written["tokenizer_class"] == "PreTrainedTokenizerFast" and "backend" not in written
    assert (view / "model.safetensors").resolve() == (encoder / "model.safetensors").resolve()
    words = ["Peter", "visited", "Brussels"]
    ids = AutoTokenizer.from_pretrained(view)(words, is_split_into_words=True)["input_ids"]
    assert ids == AutoTokenizer.from_pretrained(encoder)(words, is_split_into_words=True)["input_ids"]
    assert common.readable_encoder(view, tmp_path / "again") == view  # a readable folder is used as it is


def peer_args(tmp_path: Path, **overrides) -> argparse.Namespace:
    return argparse.Namespace(
        **{"encoder": tmp_path / "encoder", "threads": 1, "max_steps": -1, "peer_python": Path("python"), **overrides}
    )


def test_peer_command_carries_the_protocol_budget(tmp_path):
    protocol = matrix.resolve_protocol("cpu")
    layout = compare.PeerLayout.for_protocol(tmp_path / "peers", tmp_path / "results", tmp_path / "bench", protocol)
    command = compare.peer_command(compare.PeerCell("gliner", "wikiann_zh", 2), protocol, layout, peer_args(tmp_path))
    flags = dict(flag[2:].split("=", 1) for flag in command[2:] if "=" in flag)
    assert command[1].endswith("gliner_peer.py") and command[-1] == "--freeze_word_embeddings"
    assert flags["labels"] == "LOC=location,ORG=organization,PER=person"
    assert (flags["max_span_width"], flags["max_seq_length"], flags["epochs"]) == ("8", "128", "2")
    assert (flags["batch_size"], flags["learning_rate"], flags["head_learning_rate"]) == ("8", "5e-05", "0.001")
    assert (flags["warmup_ratio"], flags["weight_decay"], flags["seed"]) == ("0.1", "0.01", "2")
    assert layout.result_file(compare.PeerCell("gliner", "wikiann_zh", 2)) == (
        tmp_path / "results" / "peers" / "seed2" / "gliner_wikiann_zh.json"
    )
    assert layout.result_file(compare.PeerCell("spanmarker", "conll_de", 1)).name == "spanmarker_conll_de.json"
    gpu = matrix.resolve_protocol("gpu")
    with pytest.raises(SystemExit, match="warm-up in steps"):
        compare.budget_flags(gpu)


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------


def test_tables_show_ratios_and_missing_cells(tmp_path):
    protocol = matrix.resolve_protocol("cpu")
    layout = compare.PeerLayout.for_protocol(tmp_path / "peers", tmp_path / "results", tmp_path / "bench", protocol)
    peer = {
        "target_test_span_f1": 0.4,
        "target_test_seqeval_f1": 0.38,
        "source_dev_span_f1": 0.8,
        "train_seconds_per_sentence": 0.5,
        "inference_sentences_per_second": 10.0,
        "peak_rss_mb": 4000.0,
    }
    ours = {"target_test_span_f1": 0.5, "peak_rss_mb": 3000.0, "all_results": {"train_samples_per_second": 4.0}}
    common.write_json(layout.result_file(compare.PeerCell("gliner", "conll_de", 1)), peer)
    common.write_json(layout.our_result_file("conll_de", "source_only", 1), ours)
    rows, missing = compare.comparison_rows(layout, ["gliner", "spanmarker"], ["conll_de"], 1)
    text = compare.comparison_text(rows, missing)
    assert "| conll_de | gliner | 40.00 | 38.00 | 80.00 | 50.00 (1.25) | — (—) |" in text
    assert "| conll_de | gliner | 0.500 (0.250, 0.50) | 10.00 | 4000 (3000, 0.75) |" in text
    assert "| conll_de | spanmarker | — | — | — | 50.00 (—) | — (—) |" in text
    assert "spanmarker_conll_de.json" in text and "maral_seed1.json" in text and "Missing (2)" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{compare.README_BEGIN}\nold\n{compare.README_END}\nend\n", encoding="utf-8")
    compare.update_readme(text, readme)
    assert readme.read_text() == f"# x\n{compare.README_BEGIN}\n{text}{compare.README_END}\nend\n"


def test_readme_has_the_peers_table_markers():
    text = compare.README.read_text(encoding="utf-8")
    assert text.index(compare.README_BEGIN) < text.index(compare.README_END)


# ---------------------------------------------------------------------------------------------------------------
# End to end (needs the peers' environment)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not compare.DEFAULT_PEER_PYTHON.is_file(), reason="no peers venv (make peers-install)")
def test_both_peers_run_end_to_end_on_a_tiny_encoder(tmp_path):
    conll = tmp_path / "data" / "conll03_en_de"
    conll.mkdir(parents=True)
    for suffix in ("train", "dev", "unlabel", "test"):
        (conll / f"spanner.{suffix}").write_text(json.dumps(TINY_SOURCE_RECORDS), encoding="utf-8")
    # SpanMarker appends its marker tokens after the text: the encoder needs more than 128 positions.
    encoder = save_tiny_encoder(tmp_path / "encoder", max_positions=512)
    argv = ["--smoke", "--max_steps", "1", "--datasets", "conll_de", "--data_root", str(tmp_path / "data")]
    argv += ["--encoder", str(encoder), "--output_dir", str(tmp_path / "peers")]
    argv += ["--benchmark_output_dir", str(tmp_path / "bench"), "--results_dir", str(tmp_path / "results")]
    compare.main(argv)
    for peer in compare.PEERS:
        record = json.loads((tmp_path / "results" / "peers" / "smoke" / f"{peer}_conll_de.json").read_text())
        assert record["peer_run"]["train_steps"] == 1 and record["config"]["sentences"]["target_test"] == 6
        assert 0.0 <= record["target_test_span_f1"] <= 1.0 and record["inference_sentences_per_second"] > 0
        run_dir = tmp_path / "peers" / "smoke" / "conll_de" / f"{peer}_seed1"
        assert len((run_dir / "predictions_target_test.jsonl").read_text().splitlines()) == 6
        assert not (run_dir / common.CHECKPOINT_DIR).exists()
