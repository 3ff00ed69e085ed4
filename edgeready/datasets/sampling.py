"""Deterministic, complexity-stratified sampling of QA items.

The same items, n and seed give the same list on any machine and in any input order: items are sorted
(by id, then the other fields) before a `random.Random(seed)` shuffles each stratum, so neither input
order nor hash randomization reaches the result.

Strata are the item complexities ("simple", "complex"). Each gets a share of n proportional to its
size, rounded by largest remainder, so every share is within 1 of exact; when n allows (n >= number of
non-empty strata) every non-empty stratum gets at least one item.

The output interleaves the strata evenly (the i-th of a stratum's q picks sits at (i + 1/2) / q of the
way through the list), so any prefix is itself close to stratified: gates that evaluate in rounds can
stop early without skewing the mix.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction
from typing import get_args

from edgeready.records import Complexity, QAItem

STRATA: tuple[str, ...] = get_args(Complexity)


def stratified_sample(items: Sequence[QAItem], n: int | None, seed: int) -> list[QAItem]:
    """Pick min(n, len(items)) items, stratified by complexity; n=None takes all, in shuffled order."""
    if n is not None and n < 1:
        raise ValueError(f"sample size must be >= 1 or None, got {n}")
    rng = random.Random(seed)
    strata = _strata(items)
    sizes = [len(members) for members in strata]
    quotas = sizes if n is None or n >= len(items) else allocate(sizes, n)
    picks = []
    for members, quota in zip(strata, quotas, strict=True):
        rng.shuffle(members)
        picks.append(members[:quota])
    return _interleave(picks)


def allocate(sizes: Sequence[int], n: int) -> list[int]:
    """Split n over strata of these sizes: proportional, largest remainder, at least 1 per non-empty."""
    total = sum(sizes)
    if not 0 <= n <= total:
        raise ValueError(f"cannot allocate {n} items over strata totalling {total}")
    exact = [Fraction(n * size, total) if total else Fraction(0) for size in sizes]
    quotas = [int(share) for share in exact]
    # Largest fractional part first; ties go to the earlier stratum, for determinism.
    by_remainder = sorted(range(len(sizes)), key=lambda k: (-(exact[k] - quotas[k]), k))
    for k in by_remainder[: n - sum(quotas)]:
        quotas[k] += 1
    _ensure_one_each(quotas, sizes, exact)
    return quotas


def _ensure_one_each(quotas: list[int], sizes: Sequence[int], exact: Sequence[Fraction]) -> None:
    """Move single items to empty-but-present strata from the stratum most above its exact share."""
    non_empty = [k for k, size in enumerate(sizes) if size]
    if sum(quotas) < len(non_empty):
        return
    for k in non_empty:
        if quotas[k] == 0:
            donors = [d for d in range(len(quotas)) if quotas[d] > 1]
            donor = max(donors, key=lambda d: (quotas[d] - exact[d], -d))
            quotas[donor] -= 1
            quotas[k] = 1


def _strata(items: Sequence[QAItem]) -> list[list[QAItem]]:
    """Items split by complexity in `STRATA` order, each sorted so input order cannot matter."""
    ordered = sorted(items, key=_sort_key)
    return [[item for item in ordered if item.complexity == name] for name in STRATA]


def _sort_key(item: QAItem) -> tuple[str, str, tuple[str, ...], int, str, str]:
    # Every field, so even items that share an id (a malformed set) sort the same in any input order.
    return (item.id, item.question, item.answers, item.hops, item.source, item.topic)


def _interleave(picks: Sequence[Sequence[QAItem]]) -> list[QAItem]:
    """Merge the strata by each item's relative position within its own stratum (exact fractions)."""
    keyed = [
        (Fraction(2 * i + 1, 2 * len(members)), k, item)
        for k, members in enumerate(picks)
        for i, item in enumerate(members)
    ]
    keyed.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in keyed]
