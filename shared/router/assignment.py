"""How a request is assigned to a variant and to shadows, for one endpoint.

Without a sticky key, a variant is drawn at random in proportion to the weights.

With a sticky key the assignment is a pure function of (endpoint, salt, key, variant
names and weights): no process state, no ``hash()`` (so no ``PYTHONHASHSEED``), the same
on every instance and after restarts. It uses *weighted rendezvous hashing* (highest
random weight): each variant ``v`` gets ``u_v = H(endpoint, salt, key, v)``, a uniform
point in (0, 1) from BLAKE2b, and the key goes to the variant with the highest score
``-weight_v / ln(u_v)``. Each variant wins with probability ``weight_v / sum(weights)``.

Why not cumulative buckets over one hash point? Changing an early variant's weight
shifts every later bucket boundary and moves many keys between variants that did not
change. With rendezvous scores, a variant's score depends only on its own name and
weight, so a change moves only the keys that must move:

- raising ``v``'s weight moves keys only *to* ``v``, lowering it only *from* ``v``;
  the fraction moved is the change in ``v``'s share (the theoretical minimum);
- adding a variant moves keys only to the new variant; removing one moves only its keys;
- changing a variant's model (not its name) moves no keys: its users follow it.

A new ``salt`` reshuffles every key (a fresh experiment). Renaming a variant reshuffles
that variant's keys. Shadows are chosen independently of variants, from their own hash
(``u_s < fraction``), so with a key the same users are shadowed every time.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable
from itertools import accumulate

from shared.router.config import EndpointConfig

_SCALE = 2.0 ** -53


def _part(text: str) -> bytes:
    """Length-prefixed UTF-8, so that no two different tuples of strings hash alike."""
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


def unit(digest: bytes) -> float:
    """The first 53 bits of a digest as a uniform point strictly inside (0, 1)."""
    return ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) * _SCALE


class EndpointPlan:
    """One endpoint's config compiled for fast assignment."""

    __slots__ = ("config", "variants", "weights", "cumulative", "total", "by_name",
                 "_prefix", "_variant_tags", "_shadow_tags")

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.variants = config.variants
        self.weights = [v.weight for v in config.variants]
        self.cumulative = list(accumulate(self.weights))
        self.total = self.cumulative[-1]
        self.by_name = {v.name: i for i, v in enumerate(config.variants)}
        self._prefix = hashlib.blake2b(_part(config.name) + _part(config.salt), digest_size=8)
        self._variant_tags = [_part("variant") + _part(v.name) for v in config.variants]
        self._shadow_tags = [_part("shadow") + _part(s.name) for s in config.shadow]

    def keyed(self, key: str) -> hashlib.blake2b:
        """The hash state of (endpoint, salt, key), to derive per-variant points from."""
        state = self._prefix.copy()
        state.update(_part(key))
        return state

    def sticky_index(self, state: hashlib.blake2b) -> int:
        """The variant a key goes to (weighted rendezvous; see the module docstring)."""
        if len(self._variant_tags) == 1:
            return 0
        best, best_score = 0, -1.0
        for i, tag in enumerate(self._variant_tags):
            h = state.copy()
            h.update(tag)
            score = -self.weights[i] / math.log(unit(h.digest()))
            if score > best_score:
                best, best_score = i, score
        return best

    def random_index(self, random: Callable[[], float]) -> int:
        """A variant drawn in proportion to the weights."""
        if len(self.cumulative) == 1:
            return 0
        i = bisect.bisect_right(self.cumulative, random() * self.total)
        return min(i, len(self.cumulative) - 1)  # random() * total may round up to total

    def shadow_indexes(self, state: hashlib.blake2b | None, random: Callable[[], float]) -> list[int]:
        """The shadows chosen for a request: by the key's hash when there is one, else at random."""
        chosen = []
        for i, shadow in enumerate(self.config.shadow):
            if state is None:
                point = random()
            else:
                h = state.copy()
                h.update(self._shadow_tags[i])
                point = unit(h.digest())
            if point < shadow.fraction:
                chosen.append(i)
        return chosen
