"""Feature dashboards: what each latent of an SAE or transcoder responds to and writes.

One streaming pass records per latent its density, activation histogram, exact top-k contexts and
examples from equal-mass activation quantiles (``collect_features``); the decoder's output side is
read through the unembedding (``output_view``); ``write_dashboard`` renders a static site that works
from file:// and ``save_features`` / ``load_features`` keep the data to re-render without the model.
"""

from gemma_scope_ext.features.build import collect_features, feature_dashboards
from gemma_scope_ext.features.collect import LatentRecorder, collect_latents
from gemma_scope_ext.features.config import FeatureConfig
from gemma_scope_ext.features.output import OutputView, output_view
from gemma_scope_ext.features.results import Context, FeatureData, LatentView, QuantileBin, SAEInfo
from gemma_scope_ext.features.site import render_saved, write_dashboard
from gemma_scope_ext.features.store import load_features, save_features

__all__ = [
    "Context",
    "FeatureConfig",
    "FeatureData",
    "LatentRecorder",
    "LatentView",
    "OutputView",
    "QuantileBin",
    "SAEInfo",
    "collect_features",
    "collect_latents",
    "feature_dashboards",
    "load_features",
    "output_view",
    "render_saved",
    "save_features",
    "write_dashboard",
]
