"""Inference on real text (`modeling_maral`): long texts in overlapping windows, scripts without spaces, empty texts
and progress bars, with tiny models whose head labels a known span wherever it stands."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modeling_maral import (
    join_words,
    merge_window_entities,
    plan_windows,
    split_into_words,
    word_subword_counts,
)
from tests.tiny_models import TRAINING_TEXT, build_span_marking_model, build_tiny_wordpiece_tokenizer

FILLER = ["the", "veterinary", "committee", "said", "on", "Monday", "that", "it", "would", "boycott", "lamb", ","]
CHINESE_TEXT = "我在北京工作。"


@pytest.fixture(scope="module")
def brussels_model(wordpiece_tokenizer):
    """Labels the word "Brussels" LOC and nothing else."""
    return build_span_marking_model(wordpiece_tokenizer, ["Brussels"], "LOC")


def long_words(num_words: int, positions: list[int]) -> list[str]:
    """`num_words` filler words with "Brussels" at `positions`."""
    words = list(itertools.islice(itertools.cycle(FILLER), num_words))
    for position in positions:
        words[position] = "Brussels"
    return words


# -- windows ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_plan_windows_covers_every_span_within_budget(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 5, size=int(rng.integers(1, 80)))
    budget, stride, width = int(rng.integers(6, 20)), int(rng.integers(0, 6)), 4
    windows = plan_windows(lengths, budget, stride, width - 1)
    assert windows[0][0] == 0 and windows[-1][1] == len(lengths)
    for (start, end), (next_start, next_end) in itertools.pairwise(windows):
        assert start < next_start <= end < next_end  # overlapping or adjacent, each adds a word
    for start, end in windows:
        assert lengths[start:end].sum() <= budget or end - start == 1
    for first in range(len(lengths)):  # every span of <= width words that fits a window lies whole in one
        for last in range(first, min(first + width, len(lengths))):
            if lengths[first : last + 1].sum() <= budget:
                assert any(start <= first and last < end for start, end in windows), (first, last)


def test_plan_windows_gives_an_overlong_word_its_own_window():
    assert plan_windows([1, 1, 1, 9, 1, 1], budget=4, stride=1) == [(0, 3), (3, 4), (4, 6)]
    assert plan_windows([], budget=4) == []
    assert plan_windows([2, 2], budget=4, stride=3) == [(0, 2)]


def test_merge_keeps_an_overlap_entity_once_and_resolves_conflicts_by_score():
    first = (0, [(2, 3, 1, 0.6), (5, 5, 2, 0.9)])
    second = (4, [(1, 1, 2, 0.7), (0, 1, 4, 0.95), (3, 4, 1, 0.8)])  # spans (5, 5), (4, 5) and (7, 8) of the text
    assert merge_window_entities([first, second], "greedy") == [(2, 3, 1, 0.6), (4, 5, 4, 0.95), (7, 8, 1, 0.8)]
    assert merge_window_entities([first, second], "none") == [
        (2, 3, 1, 0.6),
        (4, 5, 4, 0.95),
        (5, 5, 2, 0.9),  # found by both windows, kept once with the better score
        (7, 8, 1, 0.8),
    ]
    assert merge_window_entities([(0, [(1, 2, 3, 0.5)])], "greedy") == [(1, 2, 3, 0.5)]
    assert merge_window_entities([(0, []), (3, [])], "greedy") == []


def test_600_word_text_gets_entities_after_word_200_with_offsets_into_the_text(brussels_model):
    positions = [12, 230, 451, 598]
    words = long_words(600, positions)
    text = "  " + "  ".join(words) + " "
    counts = word_subword_counts(brussels_model.tokenizer, [words])[0]
    budget = brussels_model.config.max_seq_length - 2
    assert counts.sum() > 4 * budget  # several windows
    assert brussels_model.predict_words([words])[0].features.first_unread_word < 200  # one window reads < 200 words

    entities = brussels_model.predict(text)
    assert [entity["word_start"] for entity in entities] == positions
    for entity in entities:
        assert (entity["label"], entity["text"]) == ("LOC", "Brussels")
        assert text[entity["start"] : entity["end"]] == "Brussels"
        assert entity["word_end"] == entity["word_start"] and entity["score"] > 0.9
    pretokenized = brussels_model.predict(words, is_split_into_words=True)
    assert [(e["word_start"], e["text"]) for e in pretokenized] == [(p, "Brussels") for p in positions]
    joined = " ".join(words)
    assert all(joined[e["start"] : e["end"]] == "Brussels" for e in pretokenized)
    for stride in (0, 10, budget - 1):
        assert brussels_model.predict(text, stride=stride) == entities


@pytest.mark.parametrize("decoding", ["greedy", "none", "legacy"])
def test_an_entity_in_the_overlap_of_two_windows_is_returned_once(brussels_model, decoding):
    words = long_words(300, [])
    counts = word_subword_counts(brussels_model.tokenizer, [words])[0]
    budget = brussels_model.config.max_seq_length - 2
    windows = plan_windows(counts, budget, budget // 4, brussels_model.config.max_span_width - 1)
    shared = windows[1][0] + 1
    assert shared < windows[0][1]  # in windows 0 and 1
    words[shared] = "Brussels"
    entities = brussels_model.predict(words, is_split_into_words=True, decoding=decoding)
    assert [(entity["word_start"], entity["word_end"]) for entity in entities] == [(shared, shared)]


def test_stride_must_be_smaller_than_a_window(brussels_model):
    with pytest.raises(ValueError, match=r"`stride` must be at least 0 and less than a window \(126 subwords"):
        brussels_model.predict("Brussels", stride=126)


def test_a_word_longer_than_a_window_needs_allow_truncation(wordpiece_tokenizer):
    model = build_span_marking_model(wordpiece_tokenizer, ["Brussels"], "LOC", max_seq_length=8)
    long_word = "visitedvisitedvisited"  # nine subwords
    assert word_subword_counts(wordpiece_tokenizer, [[long_word]])[0][0] > 6
    text = f"Brussels said {long_word} on Monday in Brussels ."
    with pytest.raises(ValueError, match=r"inputs\[1\]: word 2 .* max_seq_length=8 .*allow_truncation=True"):
        model.predict(["Brussels", text])
    entities = model.predict(text, allow_truncation=True)
    assert [(entity["word_start"], entity["text"]) for entity in entities] == [(0, "Brussels"), (6, "Brussels")]


# -- empty texts --------------------------------------------------------------------------------------------------


def test_empty_and_whitespace_texts_give_empty_lists_in_place(brussels_model):
    alone = brussels_model.predict("x y Brussels")
    assert alone and brussels_model.predict(["", "x y Brussels"]) == [[], alone]
    assert brussels_model.predict(["  \t\n", "x y Brussels", ""]) == [[], alone, []]
    assert brussels_model.predict([[], ["x", "y", "Brussels"]]) == [[], alone]
    assert brussels_model.predict("") == [] and brussels_model.predict("   ") == []
    assert brussels_model.predict([]) == []


# -- scripts without spaces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (CHINESE_TEXT, ["我", "在", "北", "京", "工", "作", "。"]),
        ("2024年Merkel访问東京タワー。", ["2024", "年", "Merkel", "访", "问", "東", "京", "タ", "ワ", "ー", "。"]),
        ("わたしは Tokyo へ", ["わ", "た", "し", "は", "Tokyo", "へ"]),
        ("สวัสดีครับ Bangkok", ["ส", "วั", "ส", "ดี", "ค", "รั", "บ", "Bangkok"]),
        ("ພາສາລາວ", ["ພ", "າ", "ສ", "າ", "ລ", "າ", "ວ"]),
        ("ភាសាខ្មែរ", ["ភា", "សា", "ខ្", "មែ", "រ"]),
        ("မြန်မာ", ["မြ", "န်", "မာ"]),
        ("हिन्दी भाषा, नन्दा देवी", ["हिन्दी", "भाषा", ",", "नन्दा", "देवी"]),  # spaces: whole words, marks kept
        ("Angela Merkel (CDU)", ["Angela", "Merkel", "(", "CDU", ")"]),
    ],
)
def test_split_into_words_cuts_scripts_without_spaces_into_characters(text, words):
    got, offsets = split_into_words(text)
    assert got == words
    assert [text[start:end] for start, end in offsets] == words
    assert "".join(got) == "".join(text.split())


def test_raw_chinese_text_is_split_into_characters_and_a_character_span_comes_back_with_exact_offsets():
    tokenizer = build_tiny_wordpiece_tokenizer([*TRAINING_TEXT, CHINESE_TEXT])
    model = build_span_marking_model(tokenizer, ["北", "京"], "LOC")
    text = "Merkel 说：我在北京工作，住在北京。"
    entities = model.predict(text)
    assert [(entity["text"], entity["start"], entity["end"]) for entity in entities] == [
        ("北京", 11, 13),
        ("北京", 18, 20),
    ]
    assert all(text[entity["start"] : entity["end"]] == "北京" for entity in entities)
    assert [(entity["word_start"], entity["word_end"]) for entity in entities] == [(5, 6), (12, 13)]
    # pre-split words are kept as they are (not re-split into characters)
    (entity,) = model.predict(["我", "在", "北京", "工作"], is_split_into_words=True)
    assert (entity["text"], entity["word_start"], entity["word_end"], entity["start"]) == ("北京", 2, 2, 4)
    (entity,) = model.predict(["我", "在", "北", "京"], is_split_into_words=True)
    assert (entity["text"], entity["word_start"], entity["word_end"]) == ("北 京", 2, 3)


# -- progress bars ------------------------------------------------------------------------------------------------


def test_progress_bar_for_more_than_one_batch(brussels_model, capsys):
    texts = ["x Brussels", "Brussels y z"]
    assert brussels_model.predict(texts, batch_size=1, show_progress_bar=True) == brussels_model.predict(texts)
    assert "Predicting" in capsys.readouterr().err
    brussels_model.predict(texts, batch_size=2, show_progress_bar=True)  # one batch: no bar
    brussels_model.predict(texts, batch_size=1)  # not asked for
    brussels_model.predict_words([text.split() for text in texts], batch_size=1)
    assert "Predicting" not in capsys.readouterr().err
    brussels_model.predict_words([text.split() for text in texts], batch_size=1, show_progress_bar=True)
    assert "Predicting" in capsys.readouterr().err


def test_join_words_offsets():
    text, offsets = join_words(["北京", "is", "big"])
    assert text == "北京 is big" and [text[start:end] for start, end in offsets] == ["北京", "is", "big"]
    assert join_words([]) == ("", [])
