"""The attribution graph of one prompt: direct effects between SAE/transcoder features and targets.

In the frozen replacement model (``frozen``: attention patterns and RMSNorm scales fixed at their
values on the prompt, each spliced site's output ``decode(f) + e`` with its features and error as
constants) everything between the nodes is linear, so the edge from source s to target t,
``a_s * d(input of t)/d(a_s)``, is exactly the change in t's input when s is zeroed and nothing else
moves. A feature's input is its SAE pre-activation; a target's is its readout (``targets``).

Nodes: the token embeddings (one per position, including BOS), active features, the error term of
each site at each position, the output of every MLP that no SAE replaces (kind ``error``, site
``mlp``: circuit-tracer needs a transcoder on every layer; here any layer may go without), then the
targets. SAEs of every site mix freely with transcoders. ``drop_bos=True`` leaves out the feature
and error nodes at position 0, as circuit-tracer does (the BOS token's own node stays).

Work: one forward pass; then the target rows and the feature rows in batches, each batch one
vectorised backward pass. With ``max_feature_nodes`` the features are attributed in order of their
influence on what has been attributed so far (re-ranked every ``update_interval`` batches), as
circuit-tracer does, and the rest are left out of the graph: memory is then
``(max_feature_nodes + targets) x nodes``, linear in the prompt's length. The budget counts
features that receive edges; source-only features (MLP-output and embedding SAEs) are all kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from gemma_scope_ext.circuits.feature_graph import FeatureGraph
from gemma_scope_ext.circuits.frozen import (
    FrozenRun,
    check_affine,
    decoder_rows,
    encoder_rows,
    frozen_forward,
    pre_activations,
    pull_back,
)
from gemma_scope_ext.circuits.nodes import Edge, GraphInfo, GraphNode, stream_rank
from gemma_scope_ext.circuits.pruning import influence
from gemma_scope_ext.circuits.targets import Readout, Softcap, Target, as_targets, readouts

__all__ = ["Edge", "FeatureGraph", "GraphNode", "feature_graph", "pre_activations"]

_CHUNK_ELEMENTS = 1 << 24  # bound on a [rows, positions, slots + width] block in the contraction


class _Group(NamedTuple):
    """Source nodes sharing one leaf, columns ``start:start + n`` in node order (by position).

    The nodes at position ``positions[i]`` are the first ones of ``vectors[i]`` [slots, width]
    (zero-padded); the edge to a node is the leaf's gradient at its position dotted with its
    vector (activation x decoder row, or the error / embedding vector itself).
    """

    source: int  # index of the leaf among the pulled-back sources
    start: int
    positions: Tensor  # [p] distinct positions
    vectors: Tensor  # [p, slots, width]
    valid: Tensor  # [n] indices into the flattened [p, slots] grid, in node order


def _group(source: int, start: int, pos: Tensor, vectors: Tensor) -> _Group:
    """Lay the vectors of nodes sorted by position out as a [rows, slots, width] grid.

    A row holds up to ``slots`` nodes of one position; a position with more nodes (BOS often has
    many) takes several rows, so padding stays under about twice the vectors' own size.
    """
    device = pos.device
    positions, counts = torch.unique_consecutive(pos, return_counts=True)
    if len(counts) == 0:
        return _Group(source, start, positions, vectors.new_zeros(0, 0, vectors.shape[-1]),
                      torch.zeros(0, dtype=torch.long, device=device))
    slots = max(1, math.ceil(2 * len(pos) / len(counts)))
    per_position = (counts + slots - 1) // slots
    first_row = torch.cumsum(per_position, 0) - per_position
    owner = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    rank = torch.arange(len(pos), device=device) - (torch.cumsum(counts, 0) - counts)[owner]
    row = first_row[owner] + rank // slots
    slot = rank % slots
    grid = vectors.new_zeros(int(per_position.sum()), slots, vectors.shape[-1])
    grid[row, slot] = vectors
    return _Group(source, start, torch.repeat_interleave(positions, per_position), grid,
                  row * slots + slot)


class _Layout(NamedTuple):
    nodes: list[GraphNode]
    sources: list[Tensor]
    groups: list[_Group]
    candidates: list[tuple[int, int, int, int]]  # (site index, position, feature, node index)


def _layout(run: FrozenRun, tokens: list[int], drop_bos: bool) -> _Layout:
    nodes: list[GraphNode] = []
    sources: list[Tensor] = []
    groups: list[_Group] = []
    candidates = []
    first = 1 if drop_bos else 0

    def vectors(leaf: Tensor, values: Tensor, kind: str, site: str, layer: int | None,
                from_pos: int) -> None:
        pos = torch.arange(from_pos, values.shape[0], device=values.device)
        start = len(nodes)
        norms = values[pos].norm(dim=-1).tolist()  # one transfer, not one per node
        for p, norm in zip(pos.tolist(), norms, strict=True):
            feature = tokens[p] if kind == "embedding" else None
            nodes.append(GraphNode(kind, site, layer, p, feature, norm))
        groups.append(_group(_source(leaf), start, pos, values[pos]))

    def _source(leaf: Tensor) -> int:
        for i, s in enumerate(sources):
            if s is leaf:
                return i
        sources.append(leaf)
        return len(sources) - 1

    blocks: list[tuple[tuple[int, int], Callable[[], None]]] = []
    if run.embed is not None:
        blocks.append(((-1, 0), lambda: vectors(run.embed, run.embed.detach()[0], "embedding",
                                                "embedding", None, 0)))
    for layer, leaf in run.mlp.items():
        blocks.append(((layer, 5), lambda leaf=leaf, layer=layer: vectors(
            leaf, leaf.detach()[0], "error", "mlp", layer, first)))
    for i, site in enumerate(run.sites):

        def add_site(i: int = i, site: Any = site) -> None:
            f = site.features.clone()
            f[:first] = 0
            pos, feat = torch.nonzero(f, as_tuple=True)
            uniq, inverse = torch.unique(feat, return_inverse=True)
            directions = decoder_rows(site.sae, uniq)[inverse]
            check_affine(site, f, directions, (pos, feat))
            start = len(nodes)
            acts = f[pos, feat].tolist()
            for p, k, a in zip(pos.tolist(), feat.tolist(), acts, strict=True):
                if site.has_inputs:
                    candidates.append((i, p, k, len(nodes)))
                nodes.append(GraphNode("feature", site.info.site, site.info.layer, p, k, a))
            vectors_ = (f[pos, feat, None] * directions).to(site.leaf.dtype)
            groups.append(_group(_source(site.leaf), start, pos, vectors_))
            vectors(site.leaf, site.error, "error", site.info.site, site.info.layer, first)

        blocks.append((stream_rank(site.info.hook_out), add_site))
    for _, add in sorted(blocks, key=lambda b: b[0]):
        add()
    return _Layout(nodes, sources, groups, candidates)


def _contract(grads: list[Tensor | None], groups: list[_Group], out: Tensor) -> None:
    """Write each group's edges into ``out`` [rows, nodes] (one batched product per chunk)."""
    b = out.shape[0]
    for g in groups:
        grad = grads[g.source]
        n = len(g.valid)
        if grad is None or n == 0:
            continue
        grad = grad.reshape(b, -1, g.vectors.shape[-1])
        slots, width = g.vectors.shape[1:]
        step = max(1, _CHUNK_ELEMENTS // (b * (slots + width)))
        edges = torch.cat([torch.einsum("bpd,pkd->bpk", grad[:, g.positions[c:c + step]],
                                        g.vectors[c:c + step]).reshape(b, -1)
                           for c in range(0, len(g.positions), step)], dim=1)
        out[:, g.start:g.start + n] = edges[:, g.valid].to(out.dtype)


def _target_rows(run: FrozenRun, reads: list[Readout], lay: _Layout, out: Tensor) -> None:
    go = torch.stack([r.vector for r in reads])[:, None].to(run.unembed_in.dtype)
    _contract(pull_back([run.unembed_in], [go], lay.sources), lay.groups, out)


def _feature_rows(run: FrozenRun, lay: _Layout, batch: list[int], out: Tensor) -> None:
    by_site: dict[int, list[int]] = {}
    for r, c in enumerate(batch):
        by_site.setdefault(lay.candidates[c][0], []).append(r)
    outputs, grad_outputs = [], []
    for i, rows in by_site.items():
        site = run.sites[i]
        device = site.sae_in.device
        pos = torch.tensor([lay.candidates[batch[r]][1] for r in rows], device=device)
        feat = torch.tensor([lay.candidates[batch[r]][2] for r in rows], device=device)
        enc = encoder_rows(site.sae, site.sae_in.detach()[0, pos], feat)
        go = torch.zeros(len(batch), *site.sae_in.shape, dtype=site.sae_in.dtype, device=device)
        go[torch.tensor(rows, device=device), 0, pos] = enc.to(go.dtype)
        outputs.append(site.sae_in)
        grad_outputs.append(go)
    _contract(pull_back(outputs, grad_outputs, lay.sources), lay.groups, out)


def _attribute(run: FrozenRun, lay: _Layout, reads: list[Readout], max_feature_nodes: int | None,
               batch_size: int, update_interval: int, bar: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Target rows, then feature rows (all, or the most influential within the budget).

    Returns the row buffer [rows, nodes], each row's node, and which candidates were attributed.
    """
    device = run.unembed_in.device
    n_nodes, n_t, n_c = len(lay.nodes), len(reads), len(lay.candidates)
    first_target = n_nodes - n_t
    budget = n_c if max_feature_nodes is None else min(max_feature_nodes, n_c)
    buffer = torch.zeros(n_t + budget, n_nodes, device=device)
    row_node = torch.zeros(n_t + budget, dtype=torch.long, device=device)
    for i in range(0, n_t, batch_size):
        chunk = reads[i:i + batch_size]
        _target_rows(run, chunk, lay, buffer[i:i + len(chunk)])
        row_node[i:i + len(chunk)] = first_target + torch.arange(i, i + len(chunk))
        bar.update(len(chunk))
    tw = torch.zeros(n_nodes, device=device)
    tw[first_target:] = torch.tensor([r.weight for r in reads], device=device)
    cand_nodes = torch.tensor([c[3] for c in lay.candidates], dtype=torch.long, device=device)
    visited = torch.zeros(n_c, dtype=torch.bool, device=device)
    st = n_t
    while st - n_t < budget:
        if budget == n_c:
            pending = torch.arange(n_c, device=device)
        else:
            # float32 is plenty for an order (as in circuit-tracer) and halves the copy.
            inf = influence(buffer[:st], row_node[:st], tw, torch.float32)[cand_nodes]
            ranked = inf.argsort(descending=True, stable=True)
            size = min(update_interval * batch_size, budget - (st - n_t))
            pending = ranked[~visited[ranked]][:size]
        for j in range(0, len(pending), batch_size):
            batch = pending[j:j + batch_size]
            _feature_rows(run, lay, batch.tolist(), buffer[st:st + len(batch)])
            row_node[st:st + len(batch)] = cand_nodes[batch]
            visited[batch] = True
            st += len(batch)
            bar.update(len(batch))
    return buffer, row_node, visited


def feature_graph(
    model: Any, saes: Any, tokens: Int[Tensor, "1 pos"],
    metric: Callable[[Tensor], Tensor] | None = None, batch_size: int = 32, progress: bool = True,
    *, targets: Sequence[Target | int] | Tensor | None = None, softcap: Softcap = "pre",
    max_feature_nodes: int | None = None, drop_bos: bool = False, max_n_logits: int = 10,
    desired_logit_prob: float = 0.95, update_interval: int = 4,
) -> FeatureGraph:
    """The attribution graph of one prompt (see the module docstring).

    Targets: ``metric`` (any scalar function of the logits), and/or ``targets`` (token ids,
    ``LogitTarget``, ``DirectionTarget``, ``MetricTarget``); with neither, circuit-tracer's salient
    logits (top tokens up to ``desired_logit_prob``, at most ``max_n_logits``, weighted by
    probability). ``softcap`` says whether logit targets read logits before Gemma 2's final
    soft-cap (``pre``, exact, circuit-tracer's choice) or after it (``post``, linearised).
    """
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"feature_graph takes one prompt, tokens of shape [1, pos]; got "
                         f"{tuple(tokens.shape)}")
    if batch_size < 1 or update_interval < 1:
        raise ValueError(f"batch_size and update_interval must be >= 1, got {batch_size}, "
                         f"{update_interval}")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError(f"max_feature_nodes must be >= 0 or None, got {max_feature_nodes}")
    saes = list(saes) if isinstance(saes, (list, tuple)) else [saes]
    tok = model.tokenizer
    decode = (lambda t: tok.decode([t])) if tok is not None else None
    cap = float(getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0)
    with frozen_forward(model, saes, tokens) as run:
        chosen = as_targets(metric, targets, run.logits, max_n_logits, desired_logit_prob)
        reads = readouts(chosen, run.logits, run.pre_logits, run.unembed_in, model.W_U, cap,
                         softcap, decode)
        lay = _layout(run, tokens[0].tolist(), drop_bos)
        lay.nodes.extend(GraphNode(r.kind, r.kind, None, r.position, r.feature, r.value, r.weight,
                                   r.label) for r in reads)
        n_c = len(lay.candidates)
        total = len(reads) + (n_c if max_feature_nodes is None else min(max_feature_nodes, n_c))
        bar = tqdm(total=total, desc="feature graph", disable=not progress)
        buffer, row_node, visited = _attribute(run, lay, reads, max_feature_nodes, batch_size,
                                               update_interval, bar)
        bar.close()
        info = GraphInfo(model.cfg.n_layers, model.cfg.d_vocab, softcap, drop_bos,
                         tuple(s.info for s in run.sites))
    keep = torch.ones(len(lay.nodes), dtype=torch.bool)
    keep[[c[3] for c, seen in zip(lay.candidates, visited.tolist(), strict=True) if not seen]] = False
    # Columns first: without them the row buffer is much smaller, and its copy too.
    weights = buffer if keep.all() else buffer[:, keep.to(buffer.device)]
    weights = weights[row_node.argsort()].cpu()
    strings = tuple(model.to_str_tokens(tokens[0])) if tok is not None else ()
    return FeatureGraph(tuple(n for n, k in zip(lay.nodes, keep.tolist(), strict=True) if k),
                        weights, tuple(tokens[0].tolist()), strings, info)
