"""A suite: many Gemma Scope SAEs and transcoders trained together from one language-model pass.

Gemma Scope trained every site of every layer at several sparsities from activations it generated
once. A suite describes such a run: a list of :class:`SuiteEntry` (kind, site, layer, width, L0
coefficient, seed) and the settings they share (:class:`SuiteConfig`). Each entry's training class
and optimiser settings come from ``gemma_scope_sae_config`` / ``gemma_scope_transcoder_config``, so
an entry trains exactly as a single run of the recipe would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gemma_scope_ext.models.families import get_spec
from gemma_scope_ext.models.sites import get_site, hook_name, hook_name_out, site_d_in

__all__ = ["SuiteConfig", "SuiteEntry", "suite_entries"]

KINDS = ("sae", "transcoder")


@dataclass(frozen=True)
class SuiteEntry:
    """One SAE or transcoder of a suite."""

    kind: Literal["sae", "transcoder"]
    """``sae`` (reconstructs its hook) or ``transcoder`` (predicts the MLP output from its input)."""
    site: str
    """Gemma Scope site: res, mlp, att, embedding, or transcoder (the only site of a transcoder)."""
    layer: int | None
    """Block index; None for the embedding site."""
    d_sae: int
    """Number of latents."""
    l0_coefficient: float = 5e-4
    """Sparsity weight lambda (one rung of the L0 ladder)."""
    seed: int = 0
    """Seed of the weight initialisation."""
    l0_warm_up_steps: int = 10_000
    """Steps over which lambda rises linearly from 0."""
    training_tokens: int | None = None
    """Tokens this entry trains on; None uses the suite's ``training_tokens``."""

    @property
    def name(self) -> str:
        """Folder and manifest key, e.g. ``res-L3-w256-l0c0.0005-s0``."""
        where = "emb" if self.layer is None else f"L{self.layer}"
        kind = "transcoder" if self.kind == "transcoder" else self.site
        return f"{kind}-{where}-w{self.d_sae}-l0c{self.l0_coefficient:g}-s{self.seed}"

    def hooks(self, model: str) -> tuple[str, ...]:
        """The hooks it reads: (input,) for an SAE, (input, target) for a transcoder."""
        first = hook_name(model, self.site, self.layer)
        if self.kind == "transcoder":
            return first, hook_name_out(model, self.site, self.layer)
        return (first,)


@dataclass
class SuiteConfig:
    """What a suite trains and the settings its entries share (recipe defaults are Gemma Scope's)."""

    model_name: str
    """Model family member, e.g. ``tiny-gemma2`` or ``gemma-2-2b``."""
    entries: list[SuiteEntry]
    """The SAEs and transcoders to train (``suite_entries`` builds ladders)."""
    training_tokens: int
    """Tokens each entry trains on unless the entry says otherwise."""
    output_path: str = "suite"
    """Folder for each entry's stock SAELens folder, ``manifest.json`` and checkpoints."""
    dataset: str = "docstrings:train"
    """Token source for live training: ``docstrings[:split]`` (built in) or a token file."""
    cache_path: str | None = None
    """Train from this activation cache (``gemma-scope harvest``) instead of running the model."""
    shuffle_shards: bool = True
    """Read the cache's shards in a seeded random order each epoch (False: in harvest order)."""
    context_size: int = 1024
    """Tokens per row (BOS included) for live training."""
    store_batch_size_prompts: int = 8
    """Rows per language-model forward pass."""
    train_batch_size_tokens: int = 4096
    """Activations per optimiser step (Gemma Scope: 4096)."""
    n_batches_in_buffer: int = 8
    """Mixing buffer size, in training batches."""
    mix_fraction: float = 0.5
    """Share of the mixing buffer kept back to mix with new activations; 0 keeps stream order."""
    exclude_special_tokens: bool = True
    """Drop BOS, EOS and pad positions (their activations are outliers), as Gemma Scope did."""
    lr: float = 7e-5
    """Adam learning rate (Gemma Scope: 7e-5)."""
    lr_warm_up_steps: int = 1000
    """Linear learning-rate warm-up steps."""
    adam_beta1: float = 0.0
    """Adam beta1 (Gemma Scope: 0)."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    dead_feature_window: int = 1000
    """Steps without firing after which a latent counts as dead."""
    feature_sampling_window: int = 2000
    """Steps per sparsity window."""
    checkpoint_every_steps: int = 0
    """Write a resumable checkpoint every this many steps (0: none)."""
    seed: int = 0
    """Seed of the data order (mixing buffer and shard order)."""
    device: str = "cpu"
    """Device of the model and the SAEs."""
    dtype: str = "float32"
    """Precision of the SAEs and activations."""
    log_to_wandb: bool = False
    """Mirror the suite's metrics to one Weights & Biases run (``training/suite_wandb.py``)."""
    wandb_project: str = "gemma_scope_suite"
    """W&B project (as SAELens's ``LoggingConfig.wandb_project``)."""
    wandb_entity: str | None = None
    """W&B entity (team or user); None: W&B's default."""
    run_name: str | None = None
    """W&B run name; None: W&B's default."""
    distributed: Literal["data_parallel", "entries"] = "data_parallel"
    """Under torchrun: ``data_parallel`` (every rank trains every entry on its share of the rows,
    gradients all-reduced) or ``entries`` (each rank trains some entries on every row, activations
    exchanged). Ignored in one process."""
    data_streams: int | None = None
    """Independent data streams the global batch is drawn from (disjoint shards or token rows,
    each with its own mixing buffer); None: one per process. Results depend on this, not on the
    number of processes, so 2 ranks with 2 streams train what 1 process with 2 streams trains."""
    distributed_timeout_s: float = 1800.0
    """Seconds a collective may wait for the other ranks before the job stops with an error."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further recipe settings for every entry (fields of GemmaScopeTrainingSAEConfig)."""

    def __post_init__(self) -> None:
        self.entries = [e if isinstance(e, SuiteEntry) else SuiteEntry(**e) for e in self.entries]
        if not self.entries:
            raise ValueError("a suite needs at least one entry; build them with suite_entries()")
        spec = get_spec(self.model_name)
        seen: dict[str, SuiteEntry] = {}
        for e in self.entries:
            if e.kind not in KINDS:
                raise ValueError(f"entry kind must be one of {KINDS}, got {e.kind!r}")
            site = get_site(spec, e.site)  # unknown sites fail here, with the list of known ones
            if (e.kind == "transcoder") != (e.site == "transcoder"):
                raise ValueError(
                    f"entry {e.name}: kind {e.kind!r} at site {e.site!r}; a transcoder lives at "
                    "site 'transcoder' and an SAE at res, mlp, att or embedding"
                )
            if e.kind == "sae" and site.hook_in != site.hook_out:
                raise ValueError(
                    f"entry {e.name}: site {e.site!r} maps {hook_name(spec, e.site, e.layer)} to "
                    f"{hook_name_out(spec, e.site, e.layer)}, which "
                    "an SAE cannot; suites train transcoders at site 'transcoder' (without a skip "
                    "connection)"
                )
            e.hooks(spec)  # layer range and presence checked
            if e.d_sae < 1 or e.l0_coefficient < 0:
                raise ValueError(f"entry {e.name}: need d_sae >= 1 and l0_coefficient >= 0")
            if e.name in seen:
                raise ValueError(f"duplicate entry {e.name}: every entry must differ in kind, site, "
                                 "layer, width, l0_coefficient or seed")  # fmt: skip
            seen[e.name] = e
        if self.training_tokens < self.train_batch_size_tokens:
            raise ValueError(f"training_tokens ({self.training_tokens}) is less than one batch "
                             f"({self.train_batch_size_tokens})")  # fmt: skip
        if self.distributed not in ("data_parallel", "entries"):
            raise ValueError(f"distributed must be 'data_parallel' or 'entries', got {self.distributed!r}")
        n = self.data_streams
        if n is not None and (n < 1 or self.train_batch_size_tokens % n):
            raise ValueError(f"data_streams={n} must be >= 1 and divide train_batch_size_tokens "
                             f"({self.train_batch_size_tokens}): each stream serves an equal share")  # fmt: skip
        if self.distributed_timeout_s <= 0:
            raise ValueError(f"distributed_timeout_s must be positive, got {self.distributed_timeout_s}")
        if not 0 <= self.mix_fraction < 1:
            raise ValueError(f"mix_fraction must be in [0, 1), got {self.mix_fraction}")
        if self.context_size < 2 or self.store_batch_size_prompts < 1 or self.n_batches_in_buffer < 1:
            raise ValueError("context_size >= 2, store_batch_size_prompts >= 1 and "
                             "n_batches_in_buffer >= 1 are needed")  # fmt: skip

    def entry_tokens(self, entry: SuiteEntry) -> int:
        """Tokens ``entry`` trains on."""
        return entry.training_tokens or self.training_tokens

    def hooks(self) -> list[str]:
        """Every hook some entry reads, without repeats, in entry order."""
        return list(dict.fromkeys(h for e in self.entries for h in e.hooks(self.model_name)))

    def hook_widths(self) -> dict[str, int]:
        """Width of each hook's flattened activation (``hook_z`` is heads x d_head)."""
        widths = {}
        for e in self.entries:
            hooks = e.hooks(self.model_name)
            for h in hooks:
                widths[h] = site_d_in(self.model_name, e.site)
        return widths

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what the manifest and YAML files hold)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteConfig:
        """Inverse of ``to_dict``; unknown keys are refused by name."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown suite settings {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**data)


def suite_entries(
    model: str | Any,
    sites: Iterable[str],
    layers: Iterable[int | None],
    d_sae: int,
    l0_coefficients: Iterable[float],
    seed: int = 0,
    **fields_: Any,
) -> list[SuiteEntry]:
    """The product sites x layers x l0_coefficients, e.g. one layer's Gemma Scope ladder.

    Site ``transcoder`` gives transcoder entries, every other site SAE entries; ``fields_`` go to
    every ``SuiteEntry`` (``l0_warm_up_steps``, ``training_tokens``).
    """
    name = get_spec(model).name
    coefs, layers = list(l0_coefficients), list(layers)
    out = []
    for site in sites:
        kind = "transcoder" if site == "transcoder" else "sae"
        for layer in layers:
            for c in coefs:
                out.append(SuiteEntry(kind=kind, site=site, layer=layer, d_sae=d_sae,
                                      l0_coefficient=c, seed=seed, **fields_))  # fmt: skip
    for e in out:
        e.hooks(name)
    return out
