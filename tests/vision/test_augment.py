"""Image and caption augmentations of the improved CLIP recipe, each against a hand computation."""

from __future__ import annotations

import colorsys
import math
import random
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from hf_contrastive.vision import augment as A

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------

# float64 unit roundoff: values in [0, 1] computed with a handful of operations agree within a few of them
ULP = torch.finfo(torch.float64).eps


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_image(h: int = 12, w: int = 16, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(3, h, w, generator=gen(seed), dtype=dtype)


def pil_image(h: int = 20, w: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def hand_rrc_box(height, width, scale, ratio, g):
    """The standard RandomResizedCrop draw, written out: 10 tries, then the centre-crop fallback."""
    area = height * width
    for _ in range(10):
        u_area = float(torch.rand((), generator=g, dtype=torch.float64))
        u_ratio = float(torch.rand((), generator=g, dtype=torch.float64))
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_ratio
        w = int(round(math.sqrt(target * math.exp(log_r))))
        h = int(round(math.sqrt(target / math.exp(log_r))))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    return None


# ----------------------------------------------------------------------------------------------------------
# RandomResizedCrop
# ----------------------------------------------------------------------------------------------------------


def test_rrc_box_is_the_standard_draw():
    crop = A.RandomResizedCrop(8)
    for seed in range(30):
        assert crop.get_params(37, 53, gen(seed)) == hand_rrc_box(
            37, 53, (0.08, 1.0), (3 / 4, 4 / 3), gen(seed)
        )


def test_rrc_boxes_lie_inside_the_image_with_the_asked_area_and_ratio():
    crop = A.RandomResizedCrop(8, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    g = gen(3)
    for _ in range(200):
        top, left, h, w = crop.get_params(90, 120, g)
        assert top >= 0 and top + h <= 90 and left >= 0 and left + w <= 120
        # w and h are the drawn real sides rounded to the nearest pixel (at most half a pixel away)
        assert (w - 0.5) * (h - 0.5) <= 0.6 * 90 * 120 and (w + 0.5) * (h + 0.5) >= 0.3 * 90 * 120
        assert (w - 0.5) / (h + 0.5) <= 2.0 and (w + 0.5) / (h - 0.5) >= 0.5


def test_rrc_fallback_is_the_centre_crop_clipped_to_the_ratio():
    # a square box of the whole area never fits a 10 x 100 image: 10 tries fail, then the centre fallback
    crop = A.RandomResizedCrop(4, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert crop.get_params(10, 100, gen(0)) == (0, (100 - 10) // 2, 10, 10)
    assert crop.get_params(100, 10, gen(0)) == ((100 - 10) // 2, 0, 10, 10)
    # within the ratio range the fallback is the whole image
    # a wide image and tall boxes: the full height, the width of the largest allowed ratio, centred
    tall_boxes = A.RandomResizedCrop(4, scale=(1.0, 1.0), ratio=(0.05, 0.06))
    assert tall_boxes.get_params(10, 100, gen(0)) == (0, (100 - 1) // 2, 10, round(10 * 0.06))


def test_rrc_output_is_the_box_content():
    x = rand_image(16, 16)
    crop = A.RandomResizedCrop(8, scale=(0.25, 0.25), ratio=(1.0, 1.0), interpolation="nearest")
    top, left, h, w = crop.get_params(16, 16, gen(5))
    assert (h, w) == (8, 8)  # area 64 of 256, square
    out = crop(x, generator=gen(5))
    assert torch.equal(out, x[:, top : top + 8, left : left + 8])
    whole = A.RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(whole(x, generator=gen(1)), x)


def test_rrc_pil_and_tensor_shapes_and_replay():
    crop = A.RandomResizedCrop((6, 10), scale=(0.5, 1.0))
    img = pil_image()
    out = crop(img, generator=gen(2))
    assert isinstance(out, Image.Image) and out.size == (10, 6)
    t = crop(rand_image(20, 30, dtype=torch.float32), generator=gen(2))
    assert t.shape == (3, 6, 10) and t.dtype == torch.float32 and float(t.min()) >= 0 and float(t.max()) <= 1
    assert np.array_equal(np.asarray(crop(img, generator=gen(2))), np.asarray(out))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size must be an int > 0"),
        ({"size": (4, -1)}, "size must be an int > 0"),
        ({"size": 4, "scale": (0.0, 1.0)}, r"\(0, 1\]"),
        ({"size": 4, "scale": (0.5, 1.5)}, r"\(0, 1\]"),
        ({"size": 4, "scale": (0.9, 0.5)}, "min <= max"),
        ({"size": 4, "ratio": (0.0, 1.0)}, "ratio"),
        ({"size": 4, "interpolation": "lanczos"}, "interpolation"),
    ],
)
def test_rrc_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.RandomResizedCrop(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# flip, resize, centre crop, to tensor, normalise
# ----------------------------------------------------------------------------------------------------------


def test_flip_reverses_columns_for_tensors_and_pil():
    x = rand_image()
    out = A.RandomHorizontalFlip(1.0)(x)
    assert torch.equal(out, torch.stack([x[:, :, x.shape[-1] - 1 - j] for j in range(x.shape[-1])], dim=-1))
    assert torch.equal(A.RandomHorizontalFlip(0.0)(x), x)
    img = pil_image()
    flipped = np.asarray(A.RandomHorizontalFlip(1.0)(img))
    assert np.array_equal(flipped, np.asarray(img)[:, ::-1])


def test_flip_probability_and_replay():
    flip = A.RandomHorizontalFlip(0.5)
    x = rand_image()
    g = gen(11)
    flips = sum(not torch.equal(flip(x, generator=g), x) for _ in range(400))
    # binomial(400, 0.5): 5 standard deviations is 50
    assert abs(flips - 200) <= 5 * math.sqrt(400 * 0.25)
    assert [torch.equal(flip(x, generator=gen(s)), x) for s in range(20)] == [
        torch.equal(flip(x, generator=gen(s)), x) for s in range(20)
    ]


def test_resize_shorter_side_and_centre_crop_offsets():
    x = rand_image(30, 60)
    assert A.Resize(15)(x).shape == (3, 15, 30)
    assert A.Resize(15)(rand_image(61, 30)).shape == (3, int(15 * 61 / 30), 15)
    assert A.Resize(15)(pil_image(30, 60)).size == (30, 15)
    y = rand_image(10, 13)
    out = A.CenterCrop(4)(y)
    top, left = round((10 - 4) / 2), round((13 - 4) / 2)
    assert torch.equal(out, y[:, top : top + 4, left : left + 4])
    assert A.CenterCrop((4, 6))(pil_image(10, 13)).size == (6, 4)
    with pytest.raises(ValueError, match="larger than the image"):
        A.CenterCrop(11)(y)


def test_to_tensor_and_normalize():
    img = pil_image(5, 7)
    t = A.ToTensor()(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    assert torch.equal(A.ToTensor()((t * 255).round().to(torch.uint8)), t)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    x = rand_image()
    out = A.Normalize(mean, std)(x)
    for c in range(3):
        assert torch.allclose(out[c], (x[c] - mean[c]) / std[c], rtol=0, atol=8 * ULP)
    with pytest.raises(ValueError, match="std must be a finite number > 0"):
        A.Normalize(mean, (0.5, 0.0, 1.0))
    with pytest.raises(TypeError, match="ToTensor before Normalize"):
        A.Normalize(mean, std)(img)
    with pytest.raises(ValueError, match=r"C in \(3,\)"):
        A.Normalize(mean, std)(torch.rand(1, 4, 4))


# ----------------------------------------------------------------------------------------------------------
# photometric operations
# ----------------------------------------------------------------------------------------------------------


def test_grayscale_uses_bt601_weights_and_matches_pil():
    x = rand_image()
    gray = A.RandomGrayscale(1.0)(x)
    expected = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    assert gray.shape == (3, 12, 16)
    for c in range(3):
        assert torch.allclose(gray[c], expected, rtol=0, atol=8 * ULP)
    img = pil_image()
    ours = A.RandomGrayscale(1.0)(img)[0]
    theirs = torch.from_numpy(np.asarray(img.convert("L")).astype(np.float64)) / 255
    # PIL: the same sum with 16-bit fixed-point weights, rounded to 8 bits; ours in float32
    fixed = (19595 / 65536, 38470 / 65536, 7471 / 65536)
    weight_error = sum(abs(a - b) for a, b in zip(fixed, (0.299, 0.587, 0.114)))
    assert float((ours.double() - theirs).abs().max()) <= 0.5 / 255 + weight_error + 1e-6
    assert torch.equal(A.RandomGrayscale(0.0)(x), x)


def test_gaussian_kernel_is_normalised_and_separable_blur_matches_hand_gaussian():
    sigma = 1.3
    k = A.gaussian_kernel1d(sigma, dtype=torch.float64)
    radius = math.ceil(3 * sigma)
    hand = torch.tensor(
        [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)], dtype=torch.float64
    )
    hand = hand / hand.sum()
    assert k.shape == (2 * radius + 1,)
    assert abs(float(k.sum()) - 1) <= k.numel() * ULP and torch.allclose(k, hand, rtol=0, atol=8 * ULP)
    # an impulse far from the borders spreads into the outer product of the 1-D kernel
    x = torch.zeros(3, 21, 21, dtype=torch.float64)
    x[:, 10, 10] = 1.0
    out = A.gaussian_blur(x, sigma)
    patch = out[0, 10 - radius : 10 + radius + 1, 10 - radius : 10 + radius + 1]
    assert torch.allclose(patch, torch.outer(hand, hand), rtol=0, atol=8 * ULP)
    assert abs(float(out[0].sum()) - 1) <= out[0].numel() * ULP
    constant = torch.full((3, 6, 7), 0.3, dtype=torch.float64)
    assert torch.allclose(A.gaussian_blur(constant, 2.0), constant, rtol=0, atol=8 * ULP)


def test_gaussian_blur_op_draws_sigma_in_range():
    x = rand_image(9, 9)
    blur = A.GaussianBlur((0.5, 0.5), p=1.0)
    assert torch.allclose(blur(x, generator=gen(0)), A.gaussian_blur(x, 0.5), rtol=0, atol=0)
    assert torch.equal(A.GaussianBlur(p=0.0)(x), x)
    with pytest.raises(ValueError, match="sigma"):
        A.GaussianBlur((0.0, 1.0))


def test_brightness_contrast_saturation_by_hand():
    x = rand_image()
    assert torch.allclose(A.adjust_brightness(x, 0.5), 0.5 * x, rtol=0, atol=8 * ULP)
    assert torch.allclose(A.adjust_brightness(x, 3.0), (3 * x).clamp(0, 1), rtol=0, atol=8 * ULP)
    mean = float((0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean())
    assert torch.allclose(A.adjust_contrast(x, 0.3), (0.3 * x + 0.7 * mean).clamp(0, 1), rtol=0, atol=8 * ULP)
    gray = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    assert torch.allclose(A.adjust_saturation(x, 0.0), gray.expand(3, -1, -1), rtol=0, atol=8 * ULP)
    assert torch.allclose(
        A.adjust_saturation(x, 1.5), (1.5 * x - 0.5 * gray).clamp(0, 1), rtol=0, atol=8 * ULP
    )


def test_hue_shift_matches_colorsys():
    x = rand_image(4, 5)
    shift = 0.23
    out = A.adjust_hue(x, shift)
    for i in range(4):
        for j in range(5):
            h, s, v = colorsys.rgb_to_hsv(*[float(x[c, i, j]) for c in range(3)])
            expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
            assert max(abs(float(out[c, i, j]) - expected[c]) for c in range(3)) < 1e-12
    red = torch.zeros(3, 1, 1, dtype=torch.float64)
    red[0] = 1.0
    assert torch.allclose(
        A.adjust_hue(red, 1 / 3)[:, 0, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    )
    assert torch.allclose(A.adjust_hue(x, 0.0), x, rtol=0, atol=1e-12)


def test_color_jitter_identity_factors_and_replay():
    x = rand_image()
    identity = A.ColorJitter((1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (0.0, 0.0), p=1.0)
    assert torch.allclose(identity(x, generator=gen(0)), x, rtol=0, atol=1e-12)
    jitter = A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    order, b, c, s, h = jitter.get_params(gen(4))
    assert sorted(order) == [0, 1, 2, 3] and 0.6 <= b <= 1.4 and 0.6 <= c <= 1.4 and 0.6 <= s <= 1.4
    assert -0.1 <= h <= 0.1
    # the op = its drawn factors applied in its drawn order (the first draw is the p coin)
    g = gen(4)
    torch.rand((), generator=g, dtype=torch.float64)
    order, b, c, s, h = jitter.get_params(g)
    fns = {0: lambda y: A.adjust_brightness(y, b), 1: lambda y: A.adjust_contrast(y, c)}
    fns.update({2: lambda y: A.adjust_saturation(y, s), 3: lambda y: A.adjust_hue(y, h)})
    expected = x
    for k in order:
        expected = fns[k](expected)
    assert torch.allclose(jitter(x, generator=gen(4)), expected, rtol=0, atol=8 * ULP)
    assert torch.equal(A.ColorJitter(p=0.0)(x, generator=gen(4)), x)


@pytest.mark.parametrize(
    "make",
    [
        lambda: A.RandomHorizontalFlip(1.5),
        lambda: A.RandomGrayscale(-0.1),
        lambda: A.GaussianBlur(p=2),
        lambda: A.ColorJitter(p=1.01),
        lambda: A.RandomApply(lambda x: x, p=-1),
    ],
)
def test_probabilities_outside_unit_interval_are_refused(make):
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        make()


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        A.RandomHorizontalFlip(1.0)(torch.rand(2, 3, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        A.ColorJitter()(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL image or a float tensor"):
        A.RandomResizedCrop(4)(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="hue"):
        A.ColorJitter(hue=0.7)


# ----------------------------------------------------------------------------------------------------------
# pipelines
# ----------------------------------------------------------------------------------------------------------


def test_pipelines_shapes_and_replay():
    img = pil_image(40, 60)
    for make in (A.global_view_transform, A.strong_view_transform, A.eval_transform):
        t = make(24, A.CLIP_MEAN, A.CLIP_STD)
        a, b = t(img, generator=gen(7)), t(img, generator=gen(7))
        assert a.shape == (3, 24, 24) and a.dtype == torch.float32 and torch.equal(a, b)
    strong = A.strong_view_transform(24)
    assert not torch.equal(strong(img, generator=gen(1)), strong(img, generator=gen(2)))
    evaluated = A.eval_transform(24)(img)
    assert torch.equal(evaluated, A.eval_transform(24)(img))  # deterministic


def test_global_view_has_no_flip_unless_asked():
    names = [type(t).__name__ for t in A.global_view_transform(8).transforms]
    assert names == ["RandomResizedCrop", "ToTensor", "Normalize"]
    assert "RandomHorizontalFlip" in [
        type(t).__name__ for t in A.global_view_transform(8, flip=True).transforms
    ]
    crop = A.global_view_transform(8).transforms[0]
    assert crop.scale == (0.5, 1.0)
    strong = A.strong_view_transform(8).transforms
    assert strong[0].scale == (0.08, 1.0)
    assert (strong[2].brightness, strong[2].hue, strong[2].p) == ((0.6, 1.4), (-0.1, 0.1), 0.8)
    assert (strong[3].p, strong[4].sigma, strong[4].p, strong[5].p) == (0.2, (0.1, 2.0), 0.5, 0.5)


def test_compose_passes_generator_only_to_ops_that_take_it():
    seen = []

    def plain(x):
        seen.append("plain")
        return x

    def seeded(x, generator=None):
        seen.append(generator)
        return x

    g = gen(0)
    A.Compose([plain, seeded])(rand_image(), generator=g)
    assert seen == ["plain", g]
    with pytest.raises(TypeError, match="callable"):
        A.Compose([1])


def test_strong_view_of_a_real_coco_image(shared_data):
    path = next(iter(sorted((shared_data / "vision" / "coco-mini" / "train2017").glob("*.jpg"))), None)
    if path is None:
        pytest.skip("no COCO image under the shared data")
    with Image.open(path) as im:
        img = im.convert("RGB")
    out = A.strong_view_transform(64)(img, generator=gen(0))
    assert out.shape == (3, 64, 64) and bool(torch.isfinite(out).all())


# ----------------------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------------------

CAPTION = "A man riding a horse on the beach next to the ocean ."


def test_remove_stopwords_caption_level():
    assert A.remove_stopwords(CAPTION, 1.0, random.Random(0)) == "man riding horse beach next ocean ."
    assert A.remove_stopwords(CAPTION, 0.0, random.Random(0)) == CAPTION
    # only stop words: the caption is kept rather than emptied
    assert A.remove_stopwords("it is on the", 1.0, random.Random(0)) == "it is on the"
    # one draw per caption: with p = 0.5 a caption is either untouched or fully stripped
    outs = Counter(A.remove_stopwords(CAPTION, 0.5, random.Random(s)) for s in range(200))
    assert set(outs) == {CAPTION, "man riding horse beach next ocean ."}
    assert abs(outs[CAPTION] - 100) <= 5 * math.sqrt(200 * 0.25)


def test_remove_stopwords_per_word_rate():
    words = ["the", "cat"] * 300
    text = " ".join(words)
    out = A.remove_stopwords(text, 0.3, random.Random(1), per_word=True).split()
    assert out.count("cat") == 300
    removed = 300 - out.count("the")
    assert abs(removed - 90) <= 5 * math.sqrt(300 * 0.3 * 0.7)
    assert A.remove_stopwords("the a", 1.0, random.Random(0), per_word=True) == "the a"


def test_random_swap_keeps_the_words():
    for seed in range(50):
        out = A.random_swap(CAPTION, random.Random(seed), n=1)
        assert Counter(out.split()) == Counter(CAPTION.split())
        assert sum(a != b for a, b in zip(out.split(), CAPTION.split())) in (0, 2)
    assert A.random_swap("alone", random.Random(0), n=3) == "alone"
    assert A.random_swap(CAPTION, random.Random(5), 2) == A.random_swap(CAPTION, random.Random(5), 2)


def test_random_delete_rate_and_never_empty():
    words = [f"w{i}" for i in range(1000)]
    out = A.random_delete(" ".join(words), 0.3, random.Random(0)).split()
    assert out == [w for w in words if w in set(out)]  # order kept
    deleted = 1000 - len(out)
    # binomial(1000, 0.3): within 5 standard deviations
    assert abs(deleted - 300) <= 5 * math.sqrt(1000 * 0.3 * 0.7)
    for seed in range(20):
        left = A.random_delete(CAPTION, 1.0, random.Random(seed)).split()
        assert len(left) == 1 and left[0] in CAPTION.split()
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        A.random_delete(CAPTION, 1.2, random.Random(0))


def test_synonym_replace_uses_only_listed_synonyms():
    table = A.load_synonyms()
    assert table is not None and "dog" in table and "the" not in table
    text = "A dog runs along the street near a small house"
    replaced = set()
    for seed in range(60):
        out = A.synonym_replace(text, random.Random(seed), n=1).split()
        changed = [(a, b) for a, b in zip(text.split(), out) if a != b]
        assert (
            len(out) == len(text.split()) and len(changed) == 1
        )  # n=1: one word, each synonym one word here
        ((word, synonym),) = changed
        assert synonym in table[word.lower()]
        replaced.add(word)
    assert replaced == {"dog", "runs", "street", "small", "house"}  # never a stop word ("A", "along", "near")
    custom = {"cat": ["kitten"], "sat": ["rested"]}
    assert A.synonym_replace("The Cat sat.", random.Random(0), n=2, synonyms=custom) == "The Kitten rested."
    assert A.synonym_replace("the cat, the cat", random.Random(0), synonyms=custom).count("kitten") == 2


def test_missing_synonym_list_warns_once_and_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(A, "_WARNED_MISSING", set())
    monkeypatch.setattr(A, "SYNONYMS_PATH", tmp_path / "absent.tsv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = A.synonym_replace("a dog in a park", random.Random(0))
        second = A.synonym_replace("a cat in a park", random.Random(0))
        strong = A.strong_caption("a cat in a park", random.Random(0), weights=(1.0, 0.0, 0.0), p=0.0)
    assert (first, second, strong) == ("a dog in a park", "a cat in a park", "a cat in a park")
    messages = [str(w.message) for w in caught if "synonym list" in str(w.message)]
    assert len(messages) == 1 and "absent.tsv" in messages[0]


def test_strong_and_weak_captions():
    for seed in range(100):
        out = A.strong_caption("a dog", random.Random(seed))
        assert out.strip()
    assert A.weak_caption(CAPTION, random.Random(3), 1.0) == A.remove_stopwords(
        CAPTION, 1.0, random.Random(3)
    )
    stripped = "man riding horse beach next ocean ."
    swapped = A.strong_caption(CAPTION, random.Random(2), 1.0, weights=(0.0, 1.0, 0.0))
    assert Counter(swapped.split()) == Counter(stripped.split())
    deleted = A.strong_caption(CAPTION, random.Random(2), 1.0, weights=(0.0, 0.0, 1.0), delete_p=1.0)
    assert len(deleted.split()) == 1
    assert A.strong_caption(CAPTION, random.Random(9)) == A.strong_caption(CAPTION, random.Random(9))
    # the operation mix: synonym 0.4, swap 0.4, delete 0.2, each seen through its effect on "cat dog"
    custom = {"cat": ["kitten"], "dog": ["puppy"]}
    seen = Counter()
    for seed in range(1000):
        out = A.strong_caption("cat dog", random.Random(seed), 0.0, synonyms=custom, delete_p=1.0)
        seen[
            "synonym" if ("kitten" in out or "puppy" in out) else "swap" if out == "dog cat" else "delete"
        ] += 1
        assert out in ("kitten dog", "cat puppy", "dog cat", "cat", "dog")
    for name, p in (("synonym", 0.4), ("swap", 0.4), ("delete", 0.2)):
        assert abs(seen[name] - 1000 * p) <= 5 * math.sqrt(1000 * p * (1 - p)), seen
    with pytest.raises(ValueError, match="weights"):
        A.strong_caption(CAPTION, random.Random(0), weights=(0.0, 0.0, 0.0))


def test_caption_bad_input():
    with pytest.raises(ValueError, match="empty caption"):
        A.weak_caption("   ", random.Random(0))
    with pytest.raises(TypeError, match="caption string"):
        A.random_swap(["a", "b"], random.Random(0))
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        A.remove_stopwords(CAPTION, -0.5, random.Random(0))


def test_shipped_word_lists():
    stop = A.load_stopwords()
    assert {"a", "the", "of", "on", "is"} <= stop and not {"dog", "red", "two", "man"} & stop
    table = A.load_synonyms()
    assert len(table) >= 200
    assert all(word not in syns for word, syns in table.items())


def test_solarize_inverts_values_at_or_above_the_threshold_with_probability_p():
    image = torch.tensor([[[0.0, 0.25, 0.5, 0.75, 1.0]]])
    out = A.Solarize(0.5)(image)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.25, 0.5, 0.25, 0.0]]]), rtol=0, atol=0)
    assert torch.equal(A.Solarize(0.5, p=0.0)(image), image)
    # one draw of the generator per call, whatever the outcome (replayable pipelines)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    A.Solarize(0.5, p=0.3)(image, generator=g1)
    torch.rand((), generator=g2, dtype=torch.float64)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(ValueError, match="probability"):
        A.Solarize(p=1.5)
