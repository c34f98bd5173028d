"""CIDEr-D and BLEU: hand-computed cases, the COCO evaluation code (pycocoevalcap) on real coco-mini captions, the
tokenizer, bad input."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from hf_contrastive.vision.caption_metrics import (
    bleu,
    caption_metrics,
    cider_d,
    cider_d_scores,
    tokenize_caption,
)

HAS_COCOEVAL = importlib.util.find_spec("pycocoevalcap") is not None


def test_tokenizer_lowercases_and_drops_punctuation():
    assert tokenize_caption("A man's bike, parked -- by the X-ray room!") == [
        "a",
        "man's",
        "bike",
        "parked",
        "by",
        "the",
        "x",
        "ray",
        "room",
    ]
    assert tokenize_caption("  Two   dogs.\nOne cat ") == ["two", "dogs", "one", "cat"]
    assert tokenize_caption("...") == []
    with pytest.raises(TypeError):
        tokenize_caption(3)


def test_cider_d_by_hand():
    # Image 1: the candidate repeats "a"; image 2: the candidate equals its only reference.
    # Every n-gram occurs in the references of one image only: idf = log(2) - log(1) = log 2 for all of them.
    # Image 2: cosine 1 at every order, equal lengths -> 10 * mean(1, 1, 1, 1) / 1 reference = 10.
    # Image 1: unigrams: candidate {a: 4 log2}, reference {a, b, c, d: log2 each};
    #   sum min(c, r) * r = log2 * log2; norms 4 log2 and 2 log2 -> cosine 1/8.
    #   Bigrams (a a) share nothing with (a b), (b c), (c d): 0; trigrams and 4-grams likewise.
    #   Lengths in bigrams are 3 and 3: no penalty. Score = 10 * (1/8 + 0 + 0 + 0) / 4 = 0.3125.
    scores = cider_d_scores(["a a a a", "e f g h"], [["a b c d"], ["e f g h"]], tokenizer=None)
    assert scores == pytest.approx([0.3125, 10.0], abs=1e-12)
    assert cider_d(["a a a a", "e f g h"], [["a b c d"], ["e f g h"]], tokenizer=None) == pytest.approx(
        5.15625, abs=1e-12
    )
    # A single image: every n-gram has idf log(1) - log(1) = 0, so every score is 0.
    assert cider_d_scores(["a a a a"], [["a b c d"]], tokenizer=None) == [0.0]
    # The Gaussian length penalty (n = 2): image 2's candidate has 5 bigrams, its reference 3 (delta 2).
    # Unigram cosine: 4 shared words of weight log 2 (x, y occur in no reference: idf log 2 - log 1 as well)
    # against norms sqrt(6) log 2 and 2 log 2; bigram cosine: 3 shared of 5 and 3 -> 3 / sqrt(15).
    longer = cider_d_scores(["a b c d", "e f g h x y"], [["a b c d"], ["e f g h"]], n=2, tokenizer=None)
    cosines = 4 / (math.sqrt(6) * 2) + 3 / math.sqrt(15)
    assert longer[1] == pytest.approx(10 * cosines / 2 * math.exp(-(2**2) / (2 * 6.0**2)), abs=1e-12)
    assert longer[0] == pytest.approx(10.0, abs=1e-12)


def test_bleu_by_hand():
    cand = "the cat sat on the mat"
    refs = ["the cat is on the mat", "a cat sat on a mat"]
    # clipped matches: unigrams the(2 vs max 2) cat sat on mat -> 6/6; bigrams: the cat, cat sat, sat on, on the,
    # the mat -> all 5 occur in one of the references -> 5/5; trigrams: the cat sat (no), cat sat on (ref 2),
    # sat on the (no), on the mat (ref 1) -> 2/4; 4-grams: cat sat on the (no), the cat sat on (no),
    # sat on the mat (no) -> 0/3. Lengths equal (6): no brevity penalty.
    b = bleu([cand], [refs], tokenizer=None)
    assert b[0] == pytest.approx(1.0, abs=1e-12)
    assert b[1] == pytest.approx(1.0, abs=1e-12)
    assert b[2] == pytest.approx((1.0 * 1.0 * 0.5) ** (1 / 3), abs=1e-12)
    assert b[3] == 0.0  # no 4-gram matches: exactly 0
    # Brevity penalty: candidate of 4 words, closest reference length 6 -> exp(1 - 6/4); all 4 unigrams match.
    short = bleu(["the cat sat on"], [refs], max_n=1, tokenizer=None)
    assert short[0] == pytest.approx(math.exp(1 - 6 / 4), abs=1e-12)
    # Closest reference length, the shorter one on a tie: 5 words against references of 4 and 6 -> r = 4 (no penalty).
    assert bleu(["a b c d e"], [["a b c d", "a b c d e f"]], max_n=1, tokenizer=None) == [1.0]


def test_tokenizer_none_scores_pretokenised_strings_like_our_tokenizer():
    cands = ["A dog, running!", "Two cats."]
    refs = [["a dog runs.", "The dog is running"], ["two cats sleeping", "Cats, two of them."]]
    tok = [" ".join(tokenize_caption(c)) for c in cands]
    tok_refs = [[" ".join(tokenize_caption(r)) for r in rs] for rs in refs]
    assert caption_metrics(cands, refs) == caption_metrics(tok, tok_refs, tokenizer=None)


@pytest.mark.skipif(
    not HAS_COCOEVAL,
    reason="pycocoevalcap is not installed (pip install pycocoevalcap==1.2; CI installs it with the dev extra)",
)
def test_same_scores_as_the_coco_evaluation_code_on_real_captions(shared_data):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    data = json.loads(
        (shared_data / "vision" / "coco-mini" / "annotations" / "captions_val2017.json").read_text()
    )
    captions: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        captions.setdefault(int(ann["image_id"]), []).append(ann["caption"])
    ids = sorted(captions)[:40]
    # Each image's first caption against its other references (different lengths, shared and rare n-grams).
    cands = [captions[i][0] for i in ids]
    refs = [captions[i][1:] for i in ids]
    tok = {i: [" ".join(tokenize_caption(c)) for c in captions[i]] for i in ids}
    gts = {i: tok[i][1:] for i in ids}
    res = {i: tok[i][:1] for i in ids}
    coco_cider, coco_per_image = Cider().compute_score(gts, res)
    coco_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = caption_metrics(cands, refs)
    assert ours["cider_d"] == pytest.approx(float(coco_cider), abs=1e-9)
    assert cider_d_scores(cands, refs) == pytest.approx([float(s) for s in coco_per_image], abs=1e-9)
    for k in range(4):
        # pycocoevalcap adds 1e-15 / 1e-9 to each count ratio; at these counts (hundreds) that moves BLEU by ~1e-12
        assert ours[f"bleu_{k + 1}"] == pytest.approx(coco_bleu[k], abs=1e-9)
    assert 0.5 < ours["cider_d"] < 2.0  # human captions against the others: COCO's human CIDEr is about 0.85


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        cider_d(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        bleu(["a"], [[]])
    with pytest.raises(ValueError, match="non-empty list"):
        bleu(["a"], ["a dog"])
    with pytest.raises(TypeError, match="sequence of strings"):
        cider_d("a dog", [["a dog"]])
    with pytest.raises(ValueError, match="No candidates"):
        cider_d([], [])
    with pytest.raises(ValueError, match="sigma"):
        cider_d(["a"], [["a"]], sigma=0)
