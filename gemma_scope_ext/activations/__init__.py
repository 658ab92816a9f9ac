"""Activations for training: live from the model, a harvested cache on disk, a mixing buffer."""

from gemma_scope_ext.activations.buffer import ChunkSource, MixingBuffer
from gemma_scope_ext.activations.live import LiveSource, activations_of, stop_layer

__all__ = ["ChunkSource", "LiveSource", "MixingBuffer", "activations_of", "stop_layer"]
