from __future__ import annotations

import pytest

from tests.vision.tiny_vision import tiny_processor, write_images


@pytest.fixture(scope="module")
def vision_processor(tmp_path_factory):
    return tiny_processor(tmp_path_factory.mktemp("vision_tok"))


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory):
    paths = write_images(tmp_path_factory.mktemp("vision_images"), 8, seed=2)
    words = "a man is eating food the woman plays guitar dog runs in park cat sleeps on sofa".split()
    return [
        {"image": p, "captions": [" ".join(words[k : k + 4]), " ".join(words[k + 1 : k + 6])]}
        for k, p in enumerate(paths)
    ]
