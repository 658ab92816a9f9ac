"""Finding released SAEs by model, site, layer, width and L0, with every filter checked.

A filter naming something the catalog cannot hold (a model or site it does not know, a layer past
the model's last block, a width that is not one of Gemma Scope's, a negative L0, a generation other
than 1 or 2) is refused with a
``ValueError`` naming the valid values; ``generation=1`` keeps Gemma Scope (Gemma 2), ``generation=2``
Gemma Scope 2 (Gemma 3). A filter that is possible but matches nothing (layer 3 of
the 27B residual release, which covers layers 10, 22 and 34) gives an empty list, and
:func:`why_empty` says which filter emptied it and what was there instead.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

from gemma_scope_ext.pretrained.catalog import (
    WIDTHS,
    CatalogEntry,
    all_entries,
    get_release,
    parse_width,
)

__all__ = ["check_filters", "find_saes", "why_empty"]

_LABELS = {v: k for k, v in WIDTHS.items()}


def _closest(value: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(value, valid, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return f"expected one of: {', '.join(valid)}{hint}"


def _n_layers(model: str) -> int:
    from gemma_scope_ext.models.families import get_spec

    return get_spec(model).n_layers


def _generation(generation: object) -> int | None:
    if generation is not None and (isinstance(generation, bool) or generation not in (1, 2)):
        raise ValueError(
            f"generation must be 1 (Gemma Scope, Gemma 2), 2 (Gemma Scope 2, Gemma 3) or None "
            f"(both), got {generation!r}"
        )
    return generation  # type: ignore[return-value]


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return value


def check_filters(
    model: str | None = None,
    site: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    l0: float | None = None,
    release: str | None = None,
    generation: int | None = None,
) -> tuple[str | None, int | None]:
    """Raise unless every given filter could match a released SAE.

    Returns the model without a ``google/`` prefix and the width as a number of latents.
    """
    entries = all_entries(generation=_generation(generation))
    for name, value in (("model", model), ("site", site), ("release", release)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    if model is not None:
        model = model.removeprefix("google/")
        models = {e.model for e in entries}
        if model not in models:
            raise ValueError(f"unknown model {model!r}; {_closest(model, models)}")
    if site is not None:
        sites = {e.site for e in entries}
        if site not in sites:
            raise ValueError(f"unknown site {site!r}; {_closest(site, sites)}")
    if release is not None:
        get_release(release)  # names the closest releases
    if layer is not None:
        _whole("layer", layer)
        models = [model] if model else sorted({e.model for e in entries})
        most = max(_n_layers(m) for m in models)
        if not 0 <= layer < most:
            where = f"{model} has {most} layers" if model else f"the deepest model has {most}"
            raise ValueError(f"layer {layer} is impossible: {where}; expected 0 to {most - 1}")
    d_sae = None
    if width is not None:
        if isinstance(width, int) and not isinstance(width, bool):
            d_sae = width
        elif isinstance(width, str):
            d_sae = parse_width(width)
        else:
            raise TypeError(f"width must be an int or a label such as '16k', got {width!r}")
        if d_sae not in _LABELS:
            labels = ", ".join(f"{k} ({v})" for k, v in WIDTHS.items())
            raise ValueError(f"width {width!r} is not a Gemma Scope width; expected one of {labels}")
    if l0 is not None:
        if isinstance(l0, bool) or not isinstance(l0, int | float):
            raise TypeError(f"l0 must be a number, got {l0!r} ({type(l0).__name__})")
        if not math.isfinite(l0) or l0 < 0:
            raise ValueError(f"l0 {l0!r} is impossible; expected an average L0 >= 0 (e.g. 100)")
    return model, d_sae


def _matching(
    entries: list[CatalogEntry], model, site, layer, d_sae, release, skip=None
) -> list[CatalogEntry]:
    return [
        e
        for e in entries
        if (skip is None or e.skip == skip)
        and (model is None or e.model == model)
        and (site is None or e.site == site)
        and (layer is None or e.layer == layer)
        and (d_sae is None or e.width == d_sae)
        and (release is None or e.release == release)
    ]


def find_saes(
    model: str | None = None,
    site: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    l0: float | None = None,
    release: str | None = None,
    include_aliases: bool = False,
    generation: int | None = None,
    skip: bool | None = None,
) -> list[CatalogEntry]:
    """Entries matching every given filter, ordered by model, site, layer, width and L0.

    ``generation`` 1 keeps Gemma Scope (Gemma 2), 2 Gemma Scope 2 (Gemma 3); ``skip`` True or
    False keeps the Gemma Scope 2 transcoders with or without an affine skip connection (every
    other entry has none). With ``l0``, only the entry with the nearest average L0 is kept at each
    (release, site, layer, width, skip); ``l0=100`` returns Gemma Scope 1's canonical SAEs.
    Canonical aliases are left out unless ``include_aliases`` (each points at an entry that is
    already listed). Filters that no release could match raise ``ValueError`` (see
    :func:`check_filters`).
    """
    if skip is not None and not isinstance(skip, bool):
        raise TypeError(f"skip must be True, False or None, got {skip!r}")
    model, d_sae = check_filters(model, site, layer, width, l0, release, generation)
    entries = all_entries(include_aliases or release is not None, generation)
    hits = _matching(entries, model, site, layer, d_sae, release, skip)
    if l0 is not None:
        best: dict[tuple, tuple] = {}
        for e in hits:
            key = (e.release, e.site, e.layer, e.width, e.skip)
            # Ties go to the canonical entry, then to the sparser one.
            rank = (abs(e.l0 - l0), not e.canonical, e.l0)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, e)
        hits = [e for _, e in best.values()]
    return sorted(
        hits,
        key=lambda e: (
            e.model,
            e.site,
            -1 if e.layer is None else e.layer,
            e.width,
            e.l0,
            e.skip,
            e.release,
        ),
    )


def why_empty(
    model: str | None = None,
    site: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    release: str | None = None,
    generation: int | None = None,
) -> str:
    """Which filter left nothing, given the ones before it, and the values that were there.

    Filters are applied in the order release, model, site, layer, width (``l0`` never empties a
    result: it picks the nearest), within ``generation`` if given. Returns an empty string if the
    filters match something.
    """
    model, d_sae = check_filters(model, site, layer, width, None, release, generation)
    entries = all_entries(release is not None, generation)
    steps = [
        ("release", release, lambda e: e.release, str),
        ("model", model, lambda e: e.model, str),
        ("site", site, lambda e: e.site, str),
        ("layer", layer, lambda e: e.layer, lambda v: "embedding" if v is None else str(v)),
        ("width", d_sae, lambda e: e.width, lambda v: _LABELS.get(v, str(v))),
    ]
    kept: list[str] = []
    for name, value, key, show in steps:
        if value is None:
            continue
        left = [e for e in entries if key(e) == value]
        if not left:
            there = sorted({key(e) for e in entries}, key=lambda v: (v is not None, v or 0))
            scope = f" among {' '.join(kept)}" if kept else ""
            return (
                f"no SAE has {name} {show(value)}{scope}; there: "
                f"{', '.join(show(v) for v in there)}"
            )
        entries = left
        kept.append(f"{name}={show(value)}")
    return ""
