"""Simulated progressive rollouts: how often each decision rule promotes, rolls back or waits.

A rollout as the controller runs it: the candidate's share of users steps up (5%, 25%, 50%),
and every few minutes an evaluation reads all the outcomes so far and decides. Users arrive
between two evaluations, each is assigned one arm (sticky) and brings several outcomes whose
log losses are correlated: a binary outcome's probability carries a per-user random effect
that neither model sees. A model's prediction is the true logit without that effect, plus
the model's own noise; the noisier model has the higher expected log loss.

Three decision rules read the same data:

- ``sequential``: the confidence sequence of ``shared/rollout/sequential.py`` and its
  :func:`~shared.rollout.sequential.outcome_decision`, at every evaluation;
- ``peeked_z``: the A/B report's fixed-horizon two-sided z test (``compare_independent`` in
  ``scorefn/ab/stats.py``: the same cluster-robust standard error) at every evaluation, which
  is what a controller built on it would do;
- ``final_z``: that z test once, at the last evaluation: the use it is valid for.

A rule stops a rollout at its first verdict. Every evaluation needs :data:`MIN_CLUSTERS` users
in each arm, for all three rules. The per-look statistics are cumulative sums of per-user
sums (``arm_variance`` takes sums), so the data are generated once and never re-read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scorefn.ab.stats import z_quantile
from shared.rollout.losses import per_row_loss
from shared.rollout.sequential import (
    ALPHA,
    MIN_CLUSTERS,
    ArmSummary,
    arm_variance,
    compare_arms,
    outcome_decision,
)

CHUNK = 100  # rollouts generated at once (bounds memory: ~40k outcomes per rollout)


@dataclass(frozen=True)
class Plan:
    """The rollout schedule and the users: ``looks_per_share`` evaluations, ``minutes_per_look``
    apart, at each candidate share; ``users_per_look`` new users between two evaluations, each
    with ``1 + Poisson(outcomes_per_user - 1)`` outcomes; ``user_sd`` the sd of a user's random
    effect on the logit (what correlates a user's outcomes); ``base_logit`` the intercept."""

    shares: tuple[float, ...] = (0.05, 0.25, 0.5)
    looks_per_share: int = 6
    minutes_per_look: int = 5
    users_per_look: int = 500
    outcomes_per_user: float = 4.0
    user_sd: float = 1.0
    base_logit: float = -1.0

    def __post_init__(self) -> None:
        if not self.shares or not all(0 < share < 1 for share in self.shares):
            raise ValueError(f"shares must be in (0, 1), not {self.shares}")
        if self.looks_per_share < 1 or self.users_per_look < 1 or self.outcomes_per_user < 1:
            raise ValueError("looks_per_share, users_per_look and outcomes_per_user must be >= 1")

    @property
    def looks(self) -> int:
        return len(self.shares) * self.looks_per_share

    def share_at(self) -> np.ndarray:
        """The candidate's share of the users arriving before each evaluation."""
        return np.repeat(np.asarray(self.shares, dtype=np.float64), self.looks_per_share)


@dataclass(frozen=True)
class RuleRates:
    """One decision rule over many rollouts: the share of rollouts it promoted, rolled back,
    found no difference in, or left undecided at the end, and the median number of outcomes
    (both arms) and minutes at which it promoted or rolled back (``None``: it never did)."""

    promoted: float
    rolled_back: float
    no_difference: float
    undecided: float
    median_outcomes_to_promote: float | None
    median_outcomes_to_roll_back: float | None
    median_minutes_to_promote: float | None
    median_minutes_to_roll_back: float | None

    @property
    def decided_wrongly_if_equal(self) -> float:
        """Promoted or rolled back: both are errors when the models are the same."""
        return self.promoted + self.rolled_back


@dataclass(frozen=True)
class SimulationResult:
    """The three rules on ``rollouts`` simulated rollouts; ``true_delta`` is the candidate's
    expected log loss minus the control's, per outcome."""

    rollouts: int
    looks: int
    alpha: float
    min_effect: float
    true_delta: float
    sequential: RuleRates
    peeked_z: RuleRates
    final_z: RuleRates
    plan: Plan = field(default_factory=Plan)


def simulate(*, control_noise: float, candidate_noise: float, rollouts: int = 1000, seed: int = 0,
             plan: Plan | None = None, alpha: float = ALPHA, min_effect: float = 0.02,
             tau: float | None = None) -> SimulationResult:
    """Simulate ``rollouts`` rollouts of a candidate whose predictions carry logit noise of sd
    ``candidate_noise`` against a control with ``control_noise`` (equal: an A/A rollout).
    ``min_effect`` is the smallest log loss difference that matters (``no_difference`` below
    it); ``tau``, the confidence sequence's mixing scale, defaults to it. The same ``seed``
    gives the same figures."""
    plan = plan or Plan()
    tau = min_effect if tau is None else tau
    seeds = np.random.SeedSequence(seed).spawn(math.ceil(rollouts / CHUNK) + 1)
    looks = [_looks(plan, control_noise, candidate_noise, min(CHUNK, rollouts - start),
                    np.random.default_rng(s))
             for start, s in zip(range(0, rollouts, CHUNK), seeds[1:])]
    sums = np.concatenate(looks)  # (rollouts, looks, arm, statistic), cumulative over looks
    minutes = (np.arange(plan.looks) + 1) * plan.minutes_per_look
    return SimulationResult(
        rollouts, plan.looks, alpha, min_effect,
        expected_delta(plan, control_noise, candidate_noise, np.random.default_rng(seeds[0])),
        _rates(_sequential(sums, alpha, tau, min_effect), sums, minutes),
        _rates(_z_test(sums, alpha, every_look=True), sums, minutes),
        _rates(_z_test(sums, alpha, every_look=False), sums, minutes),
        plan)


# -- the data --------------------------------------------------------------------------------

# The statistics kept per (rollout, look, arm): rows, clusters, total, sum S_g^2, sum S_g n_g,
# sum n_g^2 (arm_variance's arguments, in that order).
_STATS = 6


def _users(plan: Plan, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` users' outcome counts and random effects."""
    counts = 1 + rng.poisson(plan.outcomes_per_user - 1.0, n)
    return counts, rng.normal(0.0, plan.user_sd, n)


def _loss_sums(plan: Plan, noise: np.ndarray, counts: np.ndarray, effect: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Each user's sum of log losses, for users with ``counts`` outcomes, random ``effect``
    and a model whose logit noise is ``noise`` (per user)."""
    user = np.repeat(np.arange(counts.size), counts)
    f32 = np.float32  # the draws in single precision (twice as fast); the losses in double
    signal = f32(plan.base_logit) + rng.standard_normal(user.size, dtype=f32)  # what the model sees
    y = rng.random(user.size, dtype=f32) < _sigmoid(signal + effect[user].astype(f32))
    p = _sigmoid(signal + noise[user].astype(f32) * rng.standard_normal(user.size, dtype=f32))
    return np.bincount(user, weights=per_row_loss("log_loss", y, p), minlength=counts.size)


def _looks(plan: Plan, control_noise: float, candidate_noise: float, rollouts: int,
           rng: np.random.Generator) -> np.ndarray:
    """The cumulative per-arm statistics at every look of ``rollouts`` rollouts."""
    looks = plan.looks
    users = rollouts * looks * plan.users_per_look
    look = np.tile(np.repeat(np.arange(looks), plan.users_per_look), rollouts)
    arm = (rng.random(users) < plan.share_at()[look]).astype(np.int64)  # 1: the candidate
    counts, effect = _users(plan, users, rng)
    s = _loss_sums(plan, np.where(arm == 1, candidate_noise, control_noise), counts, effect, rng)
    n = counts.astype(np.float64)
    cell = (np.repeat(np.arange(rollouts), looks * plan.users_per_look) * looks + look) * 2 + arm
    cells = rollouts * looks * 2
    per = np.stack([np.bincount(cell, weights=w, minlength=cells)
                    for w in (n, np.ones_like(n), s, s * s, s * n, n * n)], axis=-1)
    return np.cumsum(per.reshape(rollouts, looks, 2, _STATS), axis=1)


def expected_delta(plan: Plan, control_noise: float, candidate_noise: float,
                   rng: np.random.Generator, users: int = 200_000) -> float:
    """The candidate's expected log loss minus the control's per outcome, by Monte Carlo on
    the same users and outcomes for both (so the difference is precise)."""
    counts, effect = _users(plan, users, rng)
    state = rng.bit_generator.state
    a = _loss_sums(plan, np.full(users, control_noise), counts, effect, rng)
    rng.bit_generator.state = state  # the same outcomes and model noise draws for both
    b = _loss_sums(plan, np.full(users, candidate_noise), counts, effect, rng)
    return float((b.sum() - a.sum()) / counts.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- the rules -------------------------------------------------------------------------------

_CODES = {"better": 1, "worse": 2, "no_difference": 3}  # 0: undecided


def _arm_stats(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clusters, means and variances of the means, (rollouts, looks, arm) each."""
    rows, clusters, total = sums[..., 0], sums[..., 1], sums[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / rows
    return clusters, mean, arm_variance(rows, clusters, total, sums[..., 3], sums[..., 4], sums[..., 5])


def _sequential(sums: np.ndarray, alpha: float, tau: float, min_effect: float) -> np.ndarray:
    """Per rollout, the look of the first verdict and its code (look -1: none). Each look goes
    through the typed calls the controller makes (``compare_arms``, ``outcome_decision``), so
    the simulation measures that code, not a copy of its rule."""
    clusters, mean, var = _arm_stats(sums)
    rows = sums[..., 0]
    out = np.zeros((sums.shape[0], 2), dtype=np.int64)
    out[:, 0] = -1
    for r in range(sums.shape[0]):
        for t in range(sums.shape[1]):
            arms = [ArmSummary(int(rows[r, t, a]), int(clusters[r, t, a]), float(mean[r, t, a]),
                               float(var[r, t, a])) for a in (0, 1)]
            decision = outcome_decision(compare_arms(arms[0], arms[1], tau=tau, alpha=alpha), min_effect)
            if decision != "undecided":
                out[r] = (t, _CODES[decision])
                break
    return out


def _z_test(sums: np.ndarray, alpha: float, *, every_look: bool) -> np.ndarray:
    """The two-sided z test at level ``alpha`` at every look (or the last only): per rollout,
    the look of the first significant difference and better (1) or worse (2)."""
    clusters, mean, var = _arm_stats(sums)
    delta = mean[..., 1] - mean[..., 0]
    se = np.sqrt(var[..., 0] + var[..., 1])
    enough = clusters.min(axis=-1) >= MIN_CLUSTERS
    with np.errstate(invalid="ignore"):
        hit = enough & (np.abs(delta) > z_quantile(1 - alpha / 2) * se)
    if not every_look:
        hit[:, :-1] = False
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    rows = np.arange(sums.shape[0])
    code = np.where(first >= 0, np.where(delta[rows, first] < 0, 1, 2), 0)
    return np.stack([first, code], axis=1)


def _rates(first: np.ndarray, sums: np.ndarray, minutes: np.ndarray) -> RuleRates:
    look, code = first[:, 0], first[:, 1]
    at = np.maximum(look, 0)  # the deciding look (look 0 stands in for none: masked below)
    outcomes = sums[np.arange(look.size), at, :, 0].sum(axis=-1)  # both arms, at that look

    def median(which: int, values: np.ndarray) -> float | None:
        picked = values[code == which]
        return float(np.median(picked)) if picked.size else None

    return RuleRates(
        promoted=float(np.mean(code == 1)), rolled_back=float(np.mean(code == 2)),
        no_difference=float(np.mean(code == 3)), undecided=float(np.mean(code == 0)),
        median_outcomes_to_promote=median(1, outcomes), median_outcomes_to_roll_back=median(2, outcomes),
        median_minutes_to_promote=median(1, minutes[at]), median_minutes_to_roll_back=median(2, minutes[at]))
