"""Random cut forest over shingled per-window order counts (``rrcf``), with a warm-up and a quantile threshold.

How it scores (one point per closed window, never per event — rrcf streaming costs ~50 ms a point at 100 trees):

- each window's order count ``n`` is variance-stabilised with the Anscombe transform ``a(n) = 2·sqrt(n + 3/8)``
  (Poisson noise then has the same spread, ≈ 1, at 3 a.m. and at noon);
- **daily rhythm** (``seasonal=True``): the detector keeps the count of every time-of-day slot of the previous
  day(s) (an average of the days seen, updated only by normal windows). A window's value is the residual
  ``a(n) − a(expected)`` against that slot (averaged with its two neighbours); the forest learns how residuals
  behave, so a surge at 3 a.m. and an outage at noon stand out alike without a fixed threshold. The last
  ``shingle_size`` residuals form one point (the *shape* of the last 40 minutes with 10-minute windows);
  ``time_of_day_radius`` > 0 adds the time of day on a circle as two more coordinates (off by default);
- defaults follow AWS's RANDOM_CUT_FOREST: ``num_trees=100``, ``tree_size=256`` (sample size); every tree
  holds the last ``tree_size`` normal points (rrcf's streaming recipe: insert the newest, forget the oldest);
  the score is the collusive displacement (CoDisp) averaged over the trees;
- **warm-up**: the first day only fills the time-of-day profile; the next ``warmup_windows`` points (one more
  day) build the forest in one batch. No window is judged before. Deployed, the detector's state carries
  over from day to day, so this is paid once;
- **threshold**: ``threshold_factor × quantile(threshold_quantile)`` of the scores of recent *normal*
  windows (the warm-up's at first, then a rolling ``score_history``). With the defaults (q = 0.99, factor
  2.0 — chosen on simulated days: 1.5 let ~1 Poisson fluke a day through) a window must displace the forest
  twice as much as the top 1 % of normal windows did;
- a window judged anomalous is scored and then forgotten again, and does not update the profile, so an
  incident never becomes "normal" while it lasts (and its end does not look like a second incident);
- **deviation bar**: an alarm also needs ``|residual| ≥ deviation_factor × quantile(deviation_quantile)`` of the
  last ``deviation_history`` normal windows' |residuals| (defaults: the threshold's quantile over the score history);
  a recorded real series uses a week and its largest normal deviation (``_series.series_config``; until half the
  history is known, the default bar: the maximum of a few days is a fluke's size, not a yardstick);
- **return level** (``return_period_days`` > 0, for recorded real series, :func:`shoplake.alarm._series.series_config`):
  real count series burst every few days without an incident, so the bar is not a multiple of normal deviations but
  the deviation a day's peak reaches once in ``return_period_days`` — a Gumbel fit (method of moments) of the daily
  peak |residual| of the last ``peak_days`` days, incidents included (a burst that recurs raises the bar, a one-off
  incident barely moves it). Deviations are judged at two scales: one window, and the sum of the last
  ``sustained_windows`` residuals ÷ √n (a sustained rise whose single windows look ordinary), each against its own
  return level (at least ``deviation_floor`` σ); no window alarms before ``min_peak_days`` daily peaks are known.
  Such series also use a median profile (``profile_days``: the median of the slot's last N days, every window
  included — robust to a burst without clipping, and a level shift becomes the expectation after half of N days),
  and with ``profile_weeks`` the same slot of the week's median instead when it is nearer (a weekly rhythm);
- **lazy scoring** (``score_every_window=False``, for recorded series): a window within the deviation bar cannot
  alarm, so the forest is not consulted for it (its score is None) unless a level shift is being learnt; it is held
  as a normal point, and the trees are planted anew from the held points when a window past the bar needs judging
  and ≥ ``tree_size``/4 points changed since the last planting (the threshold then follows the planted points'
  scores). Streaming inserts cost ~1 ms a tree in ``rrcf``; this keeps the forest's verdict where it matters at a
  fraction of the cost. The stream scores every window (its chart and the Lambda's state show each window's score).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shoplake.errors import ConfigError

with warnings.catch_warnings():  # rrcf 0.4.4 imports pkg_resources (setuptools < 82) for __version__; it warns
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import rrcf

DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS


@dataclass(frozen=True)
class RcfConfig:
    """Knobs of the forest (defaults as AWS RANDOM_CUT_FOREST where it has one)."""

    num_trees: int = 100
    tree_size: int = 256
    shingle_size: int = 4
    warmup_windows: int = 144  # one day of 10-minute windows (after the day that fills the profile)
    threshold_quantile: float = 0.99
    threshold_factor: float = 2.0
    score_history: int = 288
    window_seconds: int = 600
    seasonal: bool = True
    profile_weight: float = 0.5  # weight of the newest day in the time-of-day profile
    time_of_day_radius: float = 0.0
    deviation_factor: float = 2.0  # and |residual| ≥ factor × quantile(deviation_quantile) of recent normal |residuals|
    deviation_quantile: float | None = None  # None: threshold_quantile
    deviation_history: int = 0  # recent normal |residuals| the deviation bar looks at; 0: score_history
    score_every_window: bool = True  # False: only windows past the deviation bar are scored by the forest (below)
    adapt_after_seconds: float = 21_600.0  # an anomaly lasting longer is a new normal (a level shift): learn it
    profile_days: int = 0  # 0: the profile averages the days seen (profile_weight); N: median of the slot's last N days
    profile_weeks: int = 0  # N > 0 (with profile_days): also the median of the same hour of the week, last N weeks
    sustained_windows: int = 0  # > 1: deviations are also judged summed over this many windows (÷ √n)
    return_period_days: float = 0.0  # > 0: the bar is the return level of daily peak deviations (see the module doc)
    peak_days: int = 28  # daily peaks the return level is fitted on (incidents included)
    min_peak_days: int = 5  # daily peaks needed before any window can alarm (with return_period_days)
    deviation_floor: float = 4.0  # the return level is at least this (4 σ: a calm series' noise never alarms)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.num_trees < 1 or self.tree_size < 8 or self.shingle_size < 1:
            raise ConfigError("rcf needs num_trees ≥ 1, tree_size ≥ 8 and shingle_size ≥ 1")
        if self.warmup_windows < self.shingle_size + 8:
            raise ConfigError(
                f"warmup_windows must be ≥ shingle_size + 8 = {self.shingle_size + 8}, got {self.warmup_windows}"
            )
        if not 0.5 <= self.threshold_quantile <= 1.0 or self.threshold_factor <= 0:
            raise ConfigError("threshold_quantile must be in [0.5, 1] and threshold_factor > 0")
        if self.window_seconds <= 0 or DAY_SECONDS % self.window_seconds:
            raise ConfigError(f"window_seconds must divide a day (86400 s), got {self.window_seconds}")
        if not 0 < self.profile_weight <= 1:
            raise ConfigError("profile_weight must be in (0, 1]")
        if self.deviation_quantile is not None and not 0.5 <= self.deviation_quantile <= 1.0:
            raise ConfigError("deviation_quantile must be in [0.5, 1]")
        if self.deviation_history < 0:
            raise ConfigError("deviation_history must be ≥ 0 windows")
        if self.profile_days < 0 or self.sustained_windows < 0 or self.profile_weeks < 0:
            raise ConfigError("profile_days, profile_weeks and sustained_windows must be ≥ 0")
        if self.profile_weeks and not self.profile_days:
            raise ConfigError("profile_weeks needs the median profile (profile_days > 0)")
        if self.return_period_days and (self.return_period_days <= 1 or not 2 <= self.min_peak_days <= self.peak_days):
            raise ConfigError("return_period_days must be > 1 day, and 2 ≤ min_peak_days ≤ peak_days")


@dataclass(frozen=True)
class RcfScore:
    """The forest's view of one closed window."""

    count: int
    score: float | None  # None while warming up (and, with lazy scoring, for a window within the deviation bar)
    threshold: float | None
    anomalous: bool
    expected: float | None  # the time-of-day profile's order count for this window


def anscombe(count: float) -> float:
    """Variance-stabilising transform of a Poisson count."""
    return 2.0 * math.sqrt(max(count, 0.0) + 0.375)


def time_of_day(ts: float, radius: float) -> list[float]:
    """The window's time of day as a point on a circle of ``radius`` (23:50 is next to 00:00); [] when 0."""
    if radius <= 0:
        return []
    angle = 2.0 * math.pi * (ts % DAY_SECONDS) / DAY_SECONDS
    return [radius * math.cos(angle), radius * math.sin(angle)]


class RateForest:
    """Streaming RCF over per-window order counts: ``update(count, window_start)`` once per closed window."""

    def __init__(self, config: RcfConfig | None = None) -> None:
        self.config = config or RcfConfig()
        cfg = self.config
        self.profile: dict[int, float] = {}  # second-of-day of a window start -> typical order count
        self.values: deque[float] = deque(maxlen=cfg.shingle_size)
        self.recent_counts: deque[int] = deque(maxlen=3)  # for expected when not seasonal
        self.warmup: list[list[float]] = []
        self.points: deque[tuple[int, list[float]]] = deque()  # (index, point) held by every tree
        self.scores: deque[float] = deque(maxlen=cfg.score_history)
        self.deviations: deque[float] = deque(maxlen=cfg.deviation_history or cfg.score_history)  # normal |residual|
        self.planted_at = 0  # normal points added since the trees were last planted (lazy scoring)
        self.next_index = 0
        self.threshold: float | None = None
        self.trees: list[rrcf.RCTree] = []
        self.windows_seen = 0
        self.anomalous_run = 0  # consecutive anomalous windows
        self.slot_counts: dict[int, list[float]] = {}  # median profile: the slot's counts of its last profile_days days
        self.week_counts: dict[int, list[float]] = {}  # ... and the same slot of the week's, of its last profile_weeks
        self.recent: deque[float] = deque(maxlen=max(cfg.sustained_windows, 1))  # residuals since the last gap
        self.day_peaks: deque[list[float]] = deque(maxlen=cfg.peak_days)  # per day: [peak |dev| 1 window, n windows]
        self.today: list[float] = []  # [day number, peak 1 window, peak n windows] of the day being seen
        self.armed_at: float | None = None  # the first window that could alarm (min_peak_days of peaks known)

    @property
    def warm(self) -> bool:
        return bool(self.trees)

    def _slot(self, ts: float, period: int = DAY_SECONDS) -> int:
        """The window's start within the day (or within ``period``, e.g. the week), in seconds."""
        return int(ts % period) // self.config.window_seconds * self.config.window_seconds

    def expected(self, window_start: float) -> float | None:
        """Typical order count of this time of day (mean of the slot and its neighbours), None if unknown."""
        if not self.config.seasonal:
            return float(np.mean(self.recent_counts)) if self.recent_counts else None
        slot, step = self._slot(window_start), self.config.window_seconds
        if self.config.profile_days:
            counts = self.slot_counts.get(slot)
            return float(np.median(counts)) if counts else None
        if slot not in self.profile:
            return None
        near = [
            self.profile[s % DAY_SECONDS] for s in (slot - step, slot, slot + step) if s % DAY_SECONDS in self.profile
        ]
        return math.fsum(near) / len(near)

    def gap(self) -> None:
        """Intervals are missing (no data, not zero orders): the shingle starts over after them."""
        self.values.clear()
        self.recent.clear()
        self.anomalous_run = 0

    def _deviations(self, residual: float) -> tuple[float, float | None]:
        """|deviation| over one window and, when ``sustained_windows`` residuals in a row are known, over them."""
        self.recent.append(residual)
        n = self.config.sustained_windows
        sustained = abs(math.fsum(self.recent)) / math.sqrt(n) if n > 1 and len(self.recent) == n else None
        return abs(residual), sustained

    def _track_peaks(self, deviations: tuple[float, float | None], window_start: float) -> None:
        """Keep each day's peak deviation at both scales (every window: incidents are part of the series' history)."""
        day = float(window_start // DAY_SECONDS)
        if self.today and self.today[0] != day:
            self.day_peaks.append(self.today[1:])
            self.today = []
            if self.armed_at is None and len(self.day_peaks) >= self.config.min_peak_days:
                self.armed_at = window_start
        if not self.today:
            self.today = [day, 0.0, 0.0]
        one, sustained = deviations
        self.today[1] = max(self.today[1], one)
        self.today[2] = max(self.today[2], sustained or 0.0)

    def return_levels(self) -> tuple[float, float] | None:
        """The deviations a day's peak reaches once in ``return_period_days`` at both scales (a Gumbel fit of the
        recent daily peaks by the method of moments); None until ``min_peak_days`` days are known."""
        cfg = self.config
        if len(self.day_peaks) < cfg.min_peak_days:
            return None
        reduced = -math.log(-math.log(1.0 - 1.0 / cfg.return_period_days))  # the Gumbel variate of the period
        peaks = np.asarray(self.day_peaks, dtype=float)
        beta = peaks.std(axis=0) * math.sqrt(6.0) / math.pi
        mu = peaks.mean(axis=0) - 0.5772156649 * beta
        one, sustained = (mu + beta * reduced).tolist()
        # a calm series' peaks are Poisson noise (σ ≈ 1 after the Anscombe transform): its return level would be
        # ~3 σ and alarm every other week on nothing; the floor asks for a deviation noise reaches once in years
        return max(one, cfg.deviation_floor), max(sustained, cfg.deviation_floor)

    def _past_bar(self, deviations: tuple[float, float | None], bar: float) -> bool:
        """Is this window far enough from its expectation to alarm (the forest still has to find it unusual)?"""
        one, sustained = deviations
        if not self.config.return_period_days:
            return one >= bar
        levels = self.return_levels()
        if levels is None:
            return False
        return one >= levels[0] or (sustained is not None and sustained >= levels[1])

    def deviation_bar(self) -> float:
        """The smallest |residual| an anomalous window must show: ``deviation_factor`` × the recent normal
        residuals' quantile, at least the Poisson noise (≈ 1 after the Anscombe transform); 0 when off."""
        cfg = self.config
        if not cfg.seasonal or cfg.deviation_factor <= 0 or len(self.deviations) < 16:
            return 0.0
        q, factor = cfg.threshold_quantile, cfg.deviation_factor
        if cfg.deviation_quantile is not None:
            if 2 * len(self.deviations) >= (self.deviations.maxlen or 0):
                q = cfg.deviation_quantile
            else:  # the extreme of a short history is no yardstick yet (a 3 σ fluke is its maximum): as by default
                factor = max(factor, RcfConfig.deviation_factor)
        top = max(self.deviations) if q >= 1.0 else float(np.quantile(np.asarray(self.deviations), q))
        return factor * max(1.0, top)

    def _learn_normal(self, count: int, window_start: float, bar: float | None = None) -> None:
        if self.config.profile_days:  # the median profile learns every window (_remember), the bar is not clipped
            self.recent_counts.append(count)
            return
        slot, w = self._slot(window_start), self.config.profile_weight
        old = self.profile.get(slot)
        bar = (self.deviation_bar() if bar is None else bar) or math.inf
        if old is not None and self.deviations:
            # robust: a window learns the profile at most one deviation bar away from it (a spike that was not
            # judged anomalous, e.g. in the warm-up or an incident's first window, is not tomorrow's expectation)
            low, high = anscombe(old) - bar, anscombe(old) + bar
            a = min(max(anscombe(count), low), high)
            count = max(0.0, (a / 2.0) ** 2 - 0.375)
        if self.values and self.config.seasonal and old is not None:
            self.deviations.append(min(abs(self.values[-1]), bar))  # clipped: one onset cannot lift the bar
        self.profile[slot] = float(count) if old is None else (1 - w) * old + w * count
        self.recent_counts.append(count)

    def _nearer_expectation(self, count: int, expected: float, window_start: float) -> float:
        """With ``profile_weeks``: the same hour of the week's median when it is nearer the count than the day's
        (a Saturday is judged against Saturdays once one is known; an incident is far from both)."""
        weekly = self.week_counts.get(self._slot(window_start, WEEK_SECONDS)) if self.config.profile_weeks else None
        if not weekly:
            return expected
        week = float(np.median(weekly))
        return week if abs(anscombe(count) - anscombe(week)) < abs(anscombe(count) - anscombe(expected)) else expected

    def _remember(self, count: int, window_start: float) -> None:
        """Median profile: the slot keeps its counts of the last ``profile_days`` days (and ``profile_weeks`` weeks)."""
        cfg = self.config
        for store, period, keep in (
            (self.slot_counts, DAY_SECONDS, cfg.profile_days),
            (self.week_counts, WEEK_SECONDS, cfg.profile_weeks),
        ):
            if keep:
                counts = store.setdefault(self._slot(window_start, period), [])
                counts.append(float(count))
                del counts[:-keep]

    # ------------------------------------------------------------------ scoring
    def update(self, count: int, window_start: float) -> RcfScore:
        """Score the newest window (order count, start in epoch seconds); builds the forest after the warm-up."""
        cfg = self.config
        self.windows_seen += 1
        expected = self.expected(window_start)
        if expected is not None and cfg.profile_weeks:
            expected = self._nearer_expectation(count, expected, window_start)
        self._remember(count, window_start)
        if expected is None:  # the first day (seasonal) or first window: learn the rhythm only
            self._learn_normal(count, window_start)
            return RcfScore(count, None, None, False, None)
        residual = anscombe(count) - anscombe(expected) if cfg.seasonal else anscombe(count)
        deviations = self._deviations(residual)
        if cfg.return_period_days:
            self._track_peaks(deviations, window_start)
        self.values.append(residual)
        if len(self.values) < cfg.shingle_size:
            self._learn_normal(count, window_start)
            return RcfScore(count, None, None, False, expected)
        point = list(self.values) + time_of_day(window_start, cfg.time_of_day_radius)
        if not self.warm:
            self.warmup.append(point)
            self._learn_normal(count, window_start)
            if len(self.warmup) + cfg.shingle_size - 1 >= cfg.warmup_windows:
                self._build(self.warmup)
                self.warmup = []
            return RcfScore(count, None, self.threshold, False, expected)
        bar = self.deviation_bar()
        past = self._past_bar(deviations, bar)
        shifting = self.anomalous_run * cfg.window_seconds > cfg.adapt_after_seconds  # a level shift being learnt
        if not cfg.score_every_window and not past and not shifting:
            # lazy scoring: a window within the deviation bar cannot alarm (an alarm needs both), so the forest is not
            # consulted (while a level shift is learnt it still is: it says when the shift is normal); the window is
            # held as a normal point and reaches the trees at their next planting
            self.anomalous_run = 0
            self._hold(self.next_index, point)
            self.next_index += 1
            self._learn_normal(count, window_start, bar)
            return RcfScore(count, None, self.threshold, False, expected)
        if not cfg.score_every_window and self.planted_at >= max(1, cfg.tree_size // 4):
            self._replant()
        index = self.next_index
        self.next_index += 1
        for tree in self.trees:
            tree.insert_point(np.asarray(point), index=index)
        score = float(np.mean([tree.codisp(index) for tree in self.trees]))
        outlier = score >= (self.threshold or math.inf)  # the forest: this shape is unusual
        self.anomalous_run = self.anomalous_run + 1 if outlier else 0
        adopted = outlier and self.anomalous_run * cfg.window_seconds > cfg.adapt_after_seconds
        if adopted:
            # a level shift: after adapt_after_seconds of anomaly the new level is learnt as normal (no alarm storm);
            # its scores stay out of the threshold's history (they are not what normal windows score)
            outlier = False
        # an alarm-worthy window is an outlier that is also far from its expectation (not noise of a bursty series)
        anomalous = outlier and past
        if outlier or not cfg.score_every_window:
            for tree in self.trees:  # lazy scoring: the trees change only when planted
                tree.forget_point(index)
        if not outlier:
            if cfg.score_every_window:
                self.points.append((index, point))
                while len(self.points) > cfg.tree_size:
                    old, _ = self.points.popleft()
                    for tree in self.trees:
                        tree.forget_point(old)
            else:
                self._hold(index, point)
            if not adopted:
                self.scores.append(score)
            self._learn_normal(count, window_start, bar)
            self._set_threshold()
        return RcfScore(count, score, self.threshold, anomalous, expected)

    def _hold(self, index: int, point: list[float]) -> None:
        """Lazy scoring: keep a normal point for the next planting (the last ``tree_size`` are kept)."""
        self.points.append((index, point))
        while len(self.points) > self.config.tree_size:
            self.points.popleft()
        self.planted_at += 1

    def _replant(self) -> None:
        """Lazy scoring: plant the trees anew from the normal points held; their scores refresh the threshold."""
        self._plant(seed_offset=self.next_index)
        self.planted_at = 0
        held = [i for i, _ in self.points]
        scores = np.mean([[tree.codisp(i) for i in held] for tree in self.trees], axis=0)
        self.scores.clear()  # the threshold follows the normal points the trees now hold
        self.scores.extend(float(x) for x in scores)
        self._set_threshold()

    def _build(self, points: list[list[float]]) -> None:
        cfg = self.config
        recent = points[-cfg.tree_size :]
        self.points = deque((self.next_index + i, list(map(float, p))) for i, p in enumerate(recent))
        self.next_index += len(self.points)
        self._plant(seed_offset=0)
        labels = [i for i, _ in self.points]
        scores = np.mean([[tree.codisp(i) for i in labels] for tree in self.trees], axis=0)
        self.scores.extend(float(s) for s in scores)
        self._set_threshold()

    def _plant(self, seed_offset: int) -> None:
        """(Re)build every tree in one batch from the points held."""
        cfg = self.config
        labels = [i for i, _ in self.points]
        # rrcf's batch build fails on identical points; a deterministic nudge far below the noise (σ ≈ 1) avoids them
        nudge = ((np.asarray(labels, dtype=float) * 0.6180339887) % 1.0)[:, None] * 1e-6
        data = np.asarray([p for _, p in self.points], dtype=float) + nudge
        self.trees = [
            rrcf.RCTree(data, index_labels=labels, random_state=cfg.seed + seed_offset + t)
            for t in range(cfg.num_trees)
        ]

    def _set_threshold(self) -> None:
        cfg = self.config
        self.threshold = float(cfg.threshold_factor * np.quantile(np.asarray(self.scores), cfg.threshold_quantile))

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable: profile, shingle, and the points the trees hold (the trees are rebuilt from them)."""
        return {
            "config": asdict(self.config),
            "profile": {str(k): v for k, v in self.profile.items()},
            "values": list(self.values),
            "recent_counts": list(self.recent_counts),
            "warmup": self.warmup,
            "points": [[i, p] for i, p in self.points],
            "scores": list(self.scores),
            "deviations": list(self.deviations),
            "next_index": self.next_index,
            "threshold": self.threshold,
            "windows_seen": self.windows_seen,
            "anomalous_run": self.anomalous_run,
            "slot_counts": {str(k): v for k, v in self.slot_counts.items()},
            "week_counts": {str(k): v for k, v in self.week_counts.items()},
            "recent": list(self.recent),
            "day_peaks": list(self.day_peaks),
            "today": self.today,
            "armed_at": self.armed_at,
            "warm": self.warm,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RateForest:
        forest = cls(RcfConfig(**state["config"]))
        forest.profile = {int(k): float(v) for k, v in state["profile"].items()}
        forest.values.extend(state["values"])
        forest.recent_counts.extend(state["recent_counts"])
        forest.warmup = [list(p) for p in state["warmup"]]
        forest.points = deque((int(i), list(p)) for i, p in state["points"])
        forest.scores.extend(state["scores"])
        forest.deviations.extend(state.get("deviations", []))
        forest.next_index = int(state["next_index"])
        forest.threshold = state["threshold"]
        forest.windows_seen = int(state["windows_seen"])
        forest.anomalous_run = int(state.get("anomalous_run", 0))
        forest.slot_counts = {int(k): [float(x) for x in v] for k, v in state.get("slot_counts", {}).items()}
        forest.week_counts = {int(k): [float(x) for x in v] for k, v in state.get("week_counts", {}).items()}
        forest.recent.extend(state.get("recent", []))
        forest.day_peaks.extend([float(x) for x in p] for p in state.get("day_peaks", []))
        forest.today = [float(x) for x in state.get("today", [])]
        forest.armed_at = state.get("armed_at")
        if state["warm"]:
            forest._plant(seed_offset=forest.next_index)
        return forest
