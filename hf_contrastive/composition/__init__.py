"""Recursive composition models.

- ReCAT (Hu et al., ICLR 2024): contextual inside-outside layers over a CKY chart pruned to O(n) cells by the merge
  order of a top-down split scorer, stacked under span self-attention over the nodes of the best tree.
  [`ReCATModel`] (loads with `AutoModel`), [`ReCATForMaskedLM`] (masked LM + parser loss, `AutoModelForMaskedLM`),
  [`ReCATForSpanClassification`] (a classifier on span vectors, e.g. relation classification), the chart
  (`hf_contrastive.composition.chart`) and the plain-loop reference [`full_cky_inside_outside`].

Importing this package registers [`ReCATConfig`] with `AutoConfig`, `AutoModel` and `AutoModelForMaskedLM`.
"""

from __future__ import annotations

from hf_contrastive.composition.chart import (
    ChartBatch,
    PrunedChart,
    build_pruned_chart,
    full_chart,
    merge_order_from_scores,
)
from hf_contrastive.composition.configuration import ReCATConfig
from hf_contrastive.composition.modeling import (
    RECAT_CITATION,
    CIOLayerOutput,
    ReCATBlock,
    ReCATCIOLayer,
    ReCATComposer,
    ReCATForMaskedLM,
    ReCATForSpanClassification,
    ReCATMaskedLMOutput,
    ReCATModel,
    ReCATModelOutput,
    ReCATParser,
    ReCATPreTrainedModel,
    ReCATSpanClassifierOutput,
    chart_splits,
    full_cky_inside_outside,
)

__all__ = [
    "RECAT_CITATION",
    "CIOLayerOutput",
    "ChartBatch",
    "PrunedChart",
    "ReCATBlock",
    "ReCATCIOLayer",
    "ReCATComposer",
    "ReCATConfig",
    "ReCATForMaskedLM",
    "ReCATForSpanClassification",
    "ReCATMaskedLMOutput",
    "ReCATModel",
    "ReCATModelOutput",
    "ReCATParser",
    "ReCATPreTrainedModel",
    "ReCATSpanClassifierOutput",
    "build_pruned_chart",
    "chart_splits",
    "full_chart",
    "full_cky_inside_outside",
    "merge_order_from_scores",
]
