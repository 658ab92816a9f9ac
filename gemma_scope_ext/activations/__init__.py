"""Activations for training: live from the model, a harvested cache on disk, a mixing buffer."""

from gemma_scope_ext.activations.buffer import ChunkSource, MixingBuffer
from gemma_scope_ext.activations.cache_format import FORMAT, read_cache_manifest
from gemma_scope_ext.activations.harvest import HarvestPlan, harvest, plan_harvest
from gemma_scope_ext.activations.live import LiveSource, activations_of, stop_layer
from gemma_scope_ext.activations.reader import CacheSource

__all__ = ["FORMAT", "CacheSource", "ChunkSource", "HarvestPlan", "LiveSource", "MixingBuffer",
           "activations_of", "harvest", "plan_harvest", "read_cache_manifest", "stop_layer"]
