"""The nodes and edges of a feature graph, and what each kind of node may connect to.

Sources: token embeddings, SAE/transcoder features, error terms, and frozen MLP outputs at layers
without an MLP-side SAE (kind ``error``, site ``mlp``). Targets: logit nodes, custom directions read
from the unembedding input, and scalar metrics of the logits. Features whose SAE input is reached
linearly from upstream (residual, attention and transcoder sites) receive edges; features at
``hook_mlp_out`` and ``hook_embed`` do not (their inputs pass through an MLP's nonlinearity or come
straight from the token), so they, like errors and embeddings, are sources only.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "SOURCE_ONLY_SITES",
    "TARGET_KINDS",
    "Edge",
    "GraphInfo",
    "GraphNode",
    "SiteInfo",
    "has_inputs",
    "stream_rank",
]

TARGET_KINDS = ("logit", "direction", "metric")
"""Node kinds that are read from the model's output; always the last nodes of a graph."""

SOURCE_ONLY_SITES = ("mlp", "embedding")
"""Sites whose SAE input (``hook_mlp_out``, ``hook_embed``) no upstream node reaches linearly."""

# Where each hook sits within a block, so that nodes are listed in the order the residual stream
# meets them (embedding first). A transcoder ranks at its output hook.
_STREAM_ORDER = (
    ("hook_embed", 0), ("hook_resid_pre", 1), ("attn.hook_z", 2), ("hook_attn_out", 3),
    ("hook_resid_mid", 4), ("hook_mlp_out", 5), ("hook_resid_post", 6),
)


def stream_rank(hook_out: str) -> tuple[int, int]:
    """(layer, place within the block) of a hook that a site writes; the embedding is (-1, 0)."""
    match = re.match(r"blocks\.(\d+)\.(.+)", hook_out)
    layer, tail = (int(match.group(1)), match.group(2)) if match else (-1, hook_out)
    for name, rank in _STREAM_ORDER:
        if tail == name:
            return layer, rank
    raise ValueError(f"no place in the residual stream is known for hook {hook_out!r}")


class GraphNode(NamedTuple):
    """One node of the graph."""

    kind: str
    """``feature``, ``error``, ``embedding``, or a target: ``logit``, ``direction``, ``metric``."""
    site: str
    """Gemma Scope site of the feature or error; ``embedding`` for tokens; the kind for targets."""
    layer: int | None
    """Block index; None for the embedding and for targets."""
    position: int | None
    """Token position (a target's read position; None for a metric)."""
    feature: int | None
    """Feature index; the token id of an embedding or logit node; for other targets a virtual
    id (d_vocab + index); None for errors."""
    activation: float
    """Feature activation; the vector's norm for error/embedding nodes; a target's value."""
    weight: float = 0.0
    """A target's weight in influence (its probability for salient logits); 0 for sources."""
    label: str = ""
    """A target's name (the token's text, or the name given); empty for sources."""

    @property
    def is_target(self) -> bool:
        """Whether this node is read from the model's output."""
        return self.kind in TARGET_KINDS

    @property
    def id(self) -> str:
        """A readable unique name, e.g. ``transcoder.2@5#113``, ``res.1@7#error``, ``logit@12#47``."""
        if self.kind == "metric":
            return f"metric#{self.feature}" if self.feature is not None else "metric"
        if self.kind in TARGET_KINDS:
            return f"{self.kind}@{self.position}#{self.feature}"
        if self.kind == "embedding":
            return f"embedding@{self.position}"
        tail = "error" if self.kind == "error" else str(self.feature)
        return f"{self.site}.{self.layer}@{self.position}#{tail}"


class Edge(NamedTuple):
    """A direct effect: ``weight`` is the change in the target's input caused by the source."""

    source: int
    """Index of the source node."""
    target: int
    """Index of the target node."""
    weight: float
    """Direct effect of the source's activation on the target's input."""


class SiteInfo(NamedTuple):
    """One SAE or transcoder of a graph, as the graph file records it."""

    site: str
    """Gemma Scope site (``res``, ``att``, ``mlp``, ``transcoder``, ``embedding``) or hook name."""
    layer: int | None
    """Block index (None for the embedding)."""
    hook_in: str
    """Hook the SAE reads."""
    hook_out: str
    """Hook whose value it replaces."""
    d_sae: int
    """Number of latents."""


class GraphInfo(NamedTuple):
    """How a graph was built: what its file needs beyond nodes and edges."""

    n_layers: int
    """Blocks in the model (circuit-tracer puts logit nodes at layer n_layers + 1)."""
    d_vocab: int
    """Vocabulary size (custom targets get virtual ids from here up)."""
    softcap: str
    """``pre`` or ``post``: whether logit targets read logits before or after the final soft-cap."""
    drop_bos: bool
    """Whether feature and error nodes at position 0 were left out, as circuit-tracer does."""
    sites: tuple[SiteInfo, ...]
    """The SAEs and transcoders, in residual-stream order."""


def has_inputs(node: GraphNode) -> bool:
    """Whether a node can receive edges: targets, and features at sites reached from upstream."""
    if node.is_target:
        return True
    return node.kind == "feature" and node.site not in SOURCE_ONLY_SITES
