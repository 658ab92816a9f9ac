"""Route ``sae_lens.SAE.from_pretrained`` for Gemma Scope releases through this package's loader.

SAELens has no public API for adding or re-routing releases. ``SAE.from_pretrained(release,
sae_id)`` looks the release up in its bundled yaml, which names a ``conversion_func`` (``gemma_2``
for Gemma Scope SAEs, ``gemma_2_transcoder`` for the transcoders, ``gemma_3`` for every Gemma
Scope 2 id), and calls
``NAMED_PRETRAINED_SAE_LOADERS[conversion_func](repo_id, folder_name, ...)``. The least invasive
route found is to wrap those two entries of that dict:

* the wrapper handles a call only when ``(repo_id, folder_name)`` is a Gemma Scope id in this
  package's catalog, and hands every other call to SAELens's own loader unchanged;
* nothing else in SAELens is touched: not the yaml, not its cached directory (parsing the 43k-line
  yaml at import would cost about a second), not ``SAE.from_pretrained``;
* registering is two dict assignments, done once per process; a wrapper is recognised by a marker
  attribute, so registering again does nothing.

The release and id are validated by SAELens as usual; the wrapper then returns the config and
weights :func:`gemma_scope_ext.pretrained.loader.load_params` gives (npz checks, safetensors cache) and SAELens
builds the registered Gemma Scope class from them. SAELens's original loaders stay reachable via
:func:`original_loader` (``SAE.from_pretrained(..., converter=original_loader("gemma_2"))``).
"""

from __future__ import annotations

from functools import wraps
from typing import Any

__all__ = ["entry_for_path", "original_loader", "register_sae_lens_route"]

ROUTED_LOADERS = ("gemma_2", "gemma_2_transcoder", "gemma_3")
"""SAELens conversion functions that Gemma Scope releases name in its yaml (gemma_3: Gemma Scope 2)."""

_MARK = "_gemma_scope_original"


def entry_for_path(repo_id: str, folder_name: str) -> Any:
    """The catalog entry stored at ``folder_name`` in ``repo_id``, or None if there is none."""
    from gemma_scope_ext.pretrained.catalog import all_entries

    folder = folder_name.strip("/")
    for entry in all_entries():
        if entry.repo_id == repo_id and entry.path == folder:
            return entry
    return None


def _load_routed(
    original: Any,
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], None]:
    entry = entry_for_path(repo_id, folder_name)
    if entry is None:
        return original(repo_id, folder_name, device, force_download, cfg_overrides)
    from gemma_scope_ext.pretrained.loader import hook_ready_params, load_params, sae_config

    overrides = dict(cfg_overrides or {})
    revision = overrides.pop("revision", None)
    params = load_params(entry, revision=revision, force_download=force_download)
    device = overrides.pop("device", device)
    cfg = sae_config(entry, device=device, dtype=overrides.pop("dtype", "float32"))
    cfg_dict = cfg.to_dict()
    # SAELens passes the yaml's Neuronpedia id (None for most non-canonical ids); keep ours then.
    if overrides.get("neuronpedia_id") is None:
        overrides.pop("neuronpedia_id", None)
    if "neuronpedia_id" in overrides:
        cfg_dict["metadata"]["neuronpedia_id"] = overrides.pop("neuronpedia_id")
    cfg_dict.update(overrides)
    state = {k: v.to(cfg_dict["device"]) for k, v in hook_ready_params(entry, params).items()}
    return cfg_dict, state, None


def _wrap(original: Any) -> Any:
    @wraps(original)
    def loader(repo_id, folder_name, device="cpu", force_download=False, cfg_overrides=None):
        return _load_routed(original, repo_id, folder_name, device, force_download, cfg_overrides)

    setattr(loader, _MARK, original)
    return loader


def original_loader(name: str) -> Any:
    """SAELens's own loader registered as ``name`` (unwrapped if this package routed it)."""
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS

    loader = NAMED_PRETRAINED_SAE_LOADERS[name]
    return getattr(loader, _MARK, loader)


def register_sae_lens_route() -> None:
    """Send SAELens's Gemma 2 loaders' Gemma Scope ids to this package's loader. Idempotent."""
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS

    for name in ROUTED_LOADERS:
        current = NAMED_PRETRAINED_SAE_LOADERS[name]
        if not hasattr(current, _MARK):
            NAMED_PRETRAINED_SAE_LOADERS[name] = _wrap(current)
