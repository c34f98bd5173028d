"""Vision-language: image-text contrastive training on transformers' own dual encoders (`CLIPModel`,
`SiglipModel`, `VisionTextDualEncoderModel`), the CLIP and SigLIP losses across devices, the improved CLIP
recipe and its self-supervised add-ons, CLOSE text-only captioning and Hydra arbitrary positive pairs.

- `modeling`: `encode_images` / `encode_texts` / `zero_shot_classify` on the dual encoders, one forward that
  returns projected and pooled features for the losses;
- `losses`: [`CLIPLoss`] and [`SigLIPLoss`], local losses against features gathered with gradient (2 processes
  equal 1 process on the whole batch; equal to open_clip's `ClipLoss` / `SigLipLoss`);
- `data`: COCO caption files as `datasets` rows, [`ImageTextCollator`];
- `augment`: the image and caption augmentations of the improved CLIP recipe, written on tensors and PIL;
- `improved`: the improved CLIP recipe's loss (Fini et al. 2023): global and augmented views with their own
  projectors, label smoothing on the augmented terms, and the SimCLR / BarLIP / SiamLIP / BYOLIP / SwALIP add-ons;
- `trainer`: [`ImageTextContrastiveTrainer`] and [`ImageTextContrastiveConfig`];
- `evaluation`: retrieval recall@K both ways, zero-shot accuracy, the modality gap, an evaluator for `Trainer`;
- `close`: CLOSE (Gu et al. 2023), a captioner trained from text only: noisy, normalised text-tower embeddings
  mapped to prefix tokens of a language model, image embeddings swapped in at test time, the mean-shift
  variant; `caption_metrics`: CIDEr-D and BLEU-4 (equal to pycocoevalcap's scorers);
- `hydra`: Hydra / SimLAP (Wu et al. 2024), arbitrary class-pair positives through a label-pair-gated feature
  filter, with its multi-positive loss, pair sampling and online linear probe (`HydraModel` loads with
  `AutoModel`);
- `text_render`: [`TextRenderer`], text drawn with PIL as a strip of 16x16 patches with the mask of the patches
  it covers (plus PIXEL's end-of-text patch), truncation with a warning;
- `pixel_linguist`: Pixel Linguist (Xiao et al. 2024), a ViT-MAE sentence encoder over rendered text
  (`PixelLinguistModel` loads with `AutoModel`), typo and word-shuffle positives, the symmetric InfoNCE, the
  staged curriculum and checkpoint weight averaging;
- `dense/`: dense contrast between parts of images. `features`: dense features of any vision backbone
  ([`spatial_features`]), crop geometry ([`ViewGeometry`], [`TwoViewTransform`], [`positive_pairs`]) and
  [`dense_correspondence_score`]; `pixpro`: PixPro (Xie et al. 2021), pixel propagation consistency with a
  momentum encoder (`PixProModel` loads with `AutoModel`); `dito`: DITO (Kim et al. 2023), region-level
  image-text pretraining: a ViT (VitDet for shifted windows) with ViTDet's simple feature pyramid and RoI-Align
  region embeddings contrasted with captions by CLIP's loss next to the image-level term, and shifted-window
  learning (`DITOModel` loads with `AutoModel`); `roi_align`: torchvision's RoI-Align in plain PyTorch and the
  FPN level rule;
- `cosmo`: COSMO (Wang et al. 2024), a causal LM split into text-only and multimodal layers (Flamingo gated
  cross-attention to Perceiver-resampled image tokens, zero-initialised gates) trained with the LM loss plus an
  image-text contrastive loss on its text-only layers (`CosmoForCausalLM` loads with `AutoModel`).
"""

from hf_contrastive.vision import augment
from hf_contrastive.vision.caption_metrics import bleu, caption_metrics, cider_d
from hf_contrastive.vision.close import (
    CLOSECaptioner,
    CLOSECollator,
    CLOSEConfig,
    CLOSETrainer,
    CLOSETrainingArguments,
    add_noise,
    apply_mean_shift,
    fit_mean_shift,
)
from hf_contrastive.vision.cosmo import (
    CosmoCollator,
    CosmoConfig,
    CosmoContrastiveLoss,
    CosmoForCausalLM,
    CosmoTrainer,
    CosmoTrainingArguments,
)
from hf_contrastive.vision.data import ImageTextCollator, coco_mini_dir, load_coco_captions
from hf_contrastive.vision.dense.dito import (
    DITOCollator,
    DITOConfig,
    DITOLoss,
    DITOModel,
    DITOOutput,
    DITOTrainer,
    DITOTrainingArguments,
)
from hf_contrastive.vision.dense.features import (
    TwoViewTransform,
    ViewGeometry,
    cell_centers,
    dense_correspondence_score,
    positive_pairs,
    spatial_features,
)
from hf_contrastive.vision.dense.pixpro import (
    PixProCollator,
    PixProConfig,
    PixProLoss,
    PixProModel,
    PixProOutput,
    PixProTrainer,
    PixProTrainingArguments,
    cosine_momentum,
)
from hf_contrastive.vision.dense.roi_align import assign_fpn_levels, roi_align
from hf_contrastive.vision.evaluation import (
    ImageTextRetrievalEvaluator,
    image_text_retrieval_metrics,
    modality_gap,
    zero_shot_accuracy,
)
from hf_contrastive.vision.hydra import (
    HydraConfig,
    HydraImageCollator,
    HydraLoss,
    HydraModel,
    HydraOutput,
    HydraTrainer,
    HydraTrainingArguments,
    coco_keyword_labels,
    load_labelled_images,
    sample_target_labels,
)
from hf_contrastive.vision.improved import (
    BarlowTwinsLoss,
    CrossDeviceBatchNorm1d,
    ImprovedCLIPConfig,
    ImprovedCLIPLoss,
    SiamLIPLoss,
    SimCLRImageLoss,
    SwALIPLoss,
    sinkhorn_knopp,
)
from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss
from hf_contrastive.vision.modeling import (
    DualEncoderOutput,
    dual_encoder_forward,
    encode_images,
    encode_texts,
    zero_shot_classify,
)
from hf_contrastive.vision.pixel_linguist import (
    CurriculumStage,
    PixelLinguistConfig,
    PixelLinguistModel,
    PixelLinguistOutput,
    PixelLinguistTrainer,
    PixelLinguistTrainingArguments,
    PixelPairCollator,
    average_checkpoints,
    character_typos,
    run_curriculum,
    visual_pairs,
    word_shuffle,
)
from hf_contrastive.vision.text_render import RenderedText, TextRenderer
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer

__all__ = [
    "CLOSECaptioner",
    "CLOSECollator",
    "CLOSEConfig",
    "CLOSETrainer",
    "CLOSETrainingArguments",
    "add_noise",
    "apply_mean_shift",
    "bleu",
    "caption_metrics",
    "cider_d",
    "fit_mean_shift",
    "HydraConfig",
    "HydraImageCollator",
    "HydraLoss",
    "HydraModel",
    "HydraOutput",
    "HydraTrainer",
    "HydraTrainingArguments",
    "coco_keyword_labels",
    "load_labelled_images",
    "sample_target_labels",
    "CurriculumStage",
    "PixelLinguistConfig",
    "PixelLinguistModel",
    "PixelLinguistOutput",
    "PixelLinguistTrainer",
    "PixelLinguistTrainingArguments",
    "PixelPairCollator",
    "RenderedText",
    "TextRenderer",
    "average_checkpoints",
    "character_typos",
    "run_curriculum",
    "visual_pairs",
    "word_shuffle",
    "TwoViewTransform",
    "ViewGeometry",
    "cell_centers",
    "dense_correspondence_score",
    "positive_pairs",
    "spatial_features",
    "DITOCollator",
    "DITOConfig",
    "DITOLoss",
    "DITOModel",
    "DITOOutput",
    "DITOTrainer",
    "DITOTrainingArguments",
    "PixProCollator",
    "PixProConfig",
    "PixProLoss",
    "PixProModel",
    "PixProOutput",
    "PixProTrainer",
    "PixProTrainingArguments",
    "cosine_momentum",
    "assign_fpn_levels",
    "roi_align",
    "CosmoCollator",
    "CosmoConfig",
    "CosmoContrastiveLoss",
    "CosmoForCausalLM",
    "CosmoTrainer",
    "CosmoTrainingArguments",
    "BarlowTwinsLoss",
    "CLIPLoss",
    "CrossDeviceBatchNorm1d",
    "ImprovedCLIPConfig",
    "ImprovedCLIPLoss",
    "SiamLIPLoss",
    "SimCLRImageLoss",
    "SwALIPLoss",
    "sinkhorn_knopp",
    "DualEncoderOutput",
    "ImageTextCollator",
    "ImageTextContrastiveConfig",
    "ImageTextContrastiveTrainer",
    "ImageTextRetrievalEvaluator",
    "SigLIPLoss",
    "augment",
    "coco_mini_dir",
    "dual_encoder_forward",
    "encode_images",
    "encode_texts",
    "image_text_retrieval_metrics",
    "load_coco_captions",
    "modality_gap",
    "zero_shot_accuracy",
    "zero_shot_classify",
]
