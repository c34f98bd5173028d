"""Model heads with their configs, registered with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel

from hf_contrastive.modeling.bi_encoder import BiEncoder, BiEncoderConfig
from hf_contrastive.modeling.configuration_sentence_encoder import POOLING_MODES, SentenceEncoderConfig
from hf_contrastive.modeling.modeling_sentence_encoder import (
    ProjectionHead,
    SentenceEncoder,
    SentenceEncoderOutput,
    SentenceEncoderPreTrainedModel,
)
from hf_contrastive.modeling.pooling import pool


def _register() -> None:
    # Idempotent: a second import (or a reload) must not raise "already registered".
    try:
        AutoConfig.register(SentenceEncoderConfig.model_type, SentenceEncoderConfig)
    except ValueError:
        pass
    try:
        AutoModel.register(SentenceEncoderConfig, SentenceEncoder)
    except ValueError:
        pass
    try:
        AutoConfig.register(BiEncoderConfig.model_type, BiEncoderConfig)
        AutoModel.register(BiEncoderConfig, BiEncoder)
    except ValueError:
        pass


_register()

__all__ = [
    "BiEncoder",
    "BiEncoderConfig",
    "POOLING_MODES",
    "SentenceEncoderConfig",
    "SentenceEncoder",
    "SentenceEncoderOutput",
    "SentenceEncoderPreTrainedModel",
    "ProjectionHead",
    "pool",
]

# -- relation classification (TKRE head) --
from hf_contrastive.modeling.configuration_relation import RelationClassifierConfig  # noqa: E402
from hf_contrastive.modeling.modeling_relation import (  # noqa: E402
    RelationClassificationHead,
    RelationClassifier,
    RelationClassifierOutput,
    render_relation_card,
)


def _register_relation() -> None:
    try:
        AutoConfig.register(RelationClassifierConfig.model_type, RelationClassifierConfig)
    except ValueError:
        pass
    try:
        AutoModel.register(RelationClassifierConfig, RelationClassifier)
    except ValueError:
        pass


_register_relation()
__all__ += [
    "RelationClassifierConfig",
    "RelationClassifier",
    "RelationClassifierOutput",
    "RelationClassificationHead",
    "render_relation_card",
]
