from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_contrastive.generation.metrics import (
    DecodingCoherence,
    DecodingDiversity,
    coherence,
    diversity,
    isotropy,
    mauve_score,
    model_isotropy,
    rep_n,
    repetition_and_diversity,
)


def test_rep_n_and_diversity_by_hand():
    texts = ["a b a b a", "c d e"]
    # bigrams: text1 ab ba ab ba (2 unique / 4), text2 cd de (2 / 2) -> 4 unique / 6 total
    assert rep_n(texts, 2) == pytest.approx(100 * (1 - 4 / 6))
    # trigrams: aba bab aba (2/3), cde (1/1) -> 3/4
    assert rep_n(texts, 3) == pytest.approx(25.0)
    # 4-grams: abab baba (2/2) -> 0
    assert rep_n(texts, 4) == 0.0
    expected = 100 * (4 / 6) * 0.75 * 1.0
    assert diversity(texts) == pytest.approx(expected)
    res = repetition_and_diversity(texts)
    assert set(res) == {"rep-2", "rep-3", "rep-4", "diversity"}
    assert res["diversity"] == pytest.approx(expected)


def test_degenerate_text_has_low_diversity():
    loop = ["the cat sat on the mat " * 10]
    fresh = [" ".join(f"w{i}" for i in range(60))]
    assert diversity(loop) < 15 < 99 < diversity(fresh)
    assert rep_n(fresh, 2) == 0.0


def test_bad_inputs():
    with pytest.raises(TypeError):
        rep_n("a b c", 2)
    with pytest.raises(ValueError):
        rep_n([], 2)
    with pytest.raises(ValueError):
        rep_n(["a b"], 0)
    with pytest.raises(ValueError, match="equal counts"):
        coherence(["a"], ["b", "c"], lambda t: np.ones((len(t), 3)))
    with pytest.raises(TypeError, match="encode"):
        coherence(["a"], ["b"], object())


class _BagOfLetters:
    """Tiny stand-in sentence encoder: letter counts."""

    def encode(self, texts, batch_size=32):
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out


def test_coherence_with_encode_object_and_callable():
    enc = _BagOfLetters()
    prefixes = ["aaa bbb", "xyz"]
    same = coherence(prefixes, ["ab ab", "zyx"], enc)
    diff = coherence(prefixes, ["zzz", "aaa"], enc)
    # letter counts: "aaa bbb" ~ "ab ab" (a=b) and "xyz" ~ "zyx" are parallel; "zzz"/"aaa" share no letter
    assert same == pytest.approx(1.0, abs=1e-6)
    assert diff == pytest.approx(0.0, abs=1e-6)
    mean, per = coherence(prefixes, ["ab ab", "zzz"], lambda t: torch.tensor(enc.encode(t)), return_all=True)
    assert len(per) == 2 and mean == pytest.approx(sum(per) / 2)


def test_isotropy():
    d = 16
    same = torch.ones(5, d)
    assert isotropy(same) == pytest.approx(0.0, abs=1e-6)
    ortho = torch.eye(d)[:6]
    assert isotropy(ortho) == pytest.approx(1.0, abs=1e-6)
    # padding positions are ignored
    batch = torch.stack([torch.eye(d)[:4], torch.eye(d)[:4]])
    batch[1, 3] = batch[1, 0]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert isotropy(batch, mask) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        isotropy(torch.ones(2, 3, 4, 5))


def test_model_isotropy_on_tiny_model():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, 50)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2)).eval()
    texts = ["w2 w3 w4 w5", "w9 w8 w7"]
    # by hand: 1 - mean pairwise cosine of each text's own last-layer states (no padding), averaged over texts
    by_hand = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            h = torch.nn.functional.normalize(
                model(ids, output_hidden_states=True).hidden_states[-1][0], dim=-1
            )
            t = h.shape[0]
            by_hand.append(1.0 - float((h @ h.T).sum() - t) / (t * (t - 1)))
    want = sum(by_hand) / len(by_hand)
    assert abs(by_hand[0] - by_hand[1]) > 1e-3  # the two texts differ, so a wrong weighting would show
    # one padded batch: the pad position of the short text must not count
    assert model_isotropy(model, tok, texts) == pytest.approx(want, abs=1e-5)
    # one text per batch: batches are weighted by their number of sequences
    assert model_isotropy(model, tok, texts, batch_size=1) == pytest.approx(want, abs=1e-5)


def test_evaluate_modules():
    res = DecodingDiversity().compute(predictions=["a b a b a", "c d e"])
    assert res == pytest.approx(repetition_and_diversity(["a b a b a", "c d e"]))
    coh = DecodingCoherence().compute(predictions=["ab ab"], references=["aaa bbb"], encoder=_BagOfLetters())
    assert coh["coherence"] > 0.9


def test_mauve_optional():
    try:
        import mauve  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="mauve-text"):
            mauve_score(["a"], ["b"])
        return
    pytest.skip("mauve-text installed; its default featuriser needs the Hub")
