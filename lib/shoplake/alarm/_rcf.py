"""Random cut forest over shingled per-window order counts (``krcf``: AWS's random cut forest), with a warm-up and a
quantile threshold.

How it scores (one point per closed window, never per event; ``krcf`` — the Python binding of
aws/random-cut-forest-by-aws, in Rust — scores and learns a point in ~0.1 ms at 100 trees, so every window is scored):

- each window's order count ``n`` is variance-stabilised with the Anscombe transform ``a(n) = 2·sqrt(n + 3/8)``
  (Poisson noise then has the same spread, ≈ 1, at 3 a.m. and at noon);
- **daily rhythm** (``seasonal=True``): the detector keeps the count of every time-of-day slot of the previous
  day(s) (an average of the days seen, updated only by normal windows). A window's value is the residual
  ``a(n) − a(expected)`` against that slot (averaged with its two neighbours); the forest learns how residuals
  behave, so a surge at 3 a.m. and an outage at noon stand out alike without a fixed threshold. The last
  ``shingle_size`` residuals form one point (the *shape* of the last 40 minutes with 10-minute windows; shingled here,
  not by krcf); ``time_of_day_radius`` > 0 adds the time of day on a circle as two more coordinates (off by default);
- defaults follow AWS's RANDOM_CUT_FOREST: ``num_trees=100``, ``tree_size=256`` (each tree's sample size); the
  sampler is AWS's time-decayed reservoir and the score AWS's anomaly score (≈ 0.6–1 for ordinary points, rising to
  ~4–6 for points far outside the sample; not rrcf's CoDisp, whose scale is open-ended);
- **what the forest holds**: normal points only, fed in order; the state keeps every point fed since the forest was
  planted and rebuilds it from them on load (seed ``seed + plantings``: the same forest, the same scores). When
  2 × ``tree_size`` points were fed, the forest is planted anew from the last ``tree_size`` (its sample fills with
  them), which bounds the state (< 2 × 256 points, ≤ 65 KB compressed with the window history) and the rebuild
  (~0.07 s);
- **warm-up**: the first day only fills the time-of-day profile; the next ``warmup_windows`` points (one more day) are
  fed to the forest, the second half of them scored before they are learnt (the threshold's first history). No window
  is judged before. Deployed, the detector's state carries over from day to day, so this is paid once;
- **threshold**: ``threshold_factor × quantile(threshold_quantile)`` of the scores of recent *normal* windows (those
  learnt and within the deviation bar, a rolling ``score_history``). Defaults q = 0.99, factor 1.25, chosen on
  simulated days (24 seeds, 96 incidents): 1.0–1.4 all find the same 95 (rrcf at its factor 2: 93) with no false
  alarm, at most 1.95 windows late; 1.5 is 4 windows late once; 2.0 (rrcf's factor) misses a third — AWS's score is
  bounded (log-like), so the margin over normal scores is a fraction, not a multiple;
- a window the forest finds unusual is scored and not learnt (not fed to the forest, not in the profile), so an
  incident never becomes "normal" while it lasts (and its end does not look like a second incident); after
  ``adapt_after_seconds`` of unusual windows in a row (with the return-level bar: unusual and past it) it is a level
  shift and learnt;
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
  and with ``profile_weeks`` the same slot of the week's median instead when it is nearer (a weekly rhythm).

(Until krcf the forest was ``rrcf``, pure Python at ~20 ms a window: recorded series were scored lazily — only windows
past the deviation bar, the trees replanted from held points — and a state saved then is refused with the reason.)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from krcf import RandomCutForest

from shoplake.errors import ConfigError

ENGINE = "krcf"  # the forest library the state was made with (an rrcf state's scores are on another scale)
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
    threshold_factor: float = 1.25
    score_history: int = 288
    window_seconds: int = 600
    seasonal: bool = True
    profile_weight: float = 0.5  # weight of the newest day in the time-of-day profile
    time_of_day_radius: float = 0.0
    deviation_factor: float = 2.0  # and |residual| ≥ factor × quantile(deviation_quantile) of recent normal |residuals|
    deviation_quantile: float | None = None  # None: threshold_quantile
    deviation_history: int = 0  # recent normal |residuals| the deviation bar looks at; 0: score_history
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


def config_from_dict(data: dict[str, Any]) -> RcfConfig:
    """An :class:`RcfConfig` from its ``asdict``; ``score_every_window`` (the rrcf forest's lazy scoring, gone: every
    window is scored) is ignored, so a state saved before krcf gets as far as the reason it cannot be loaded."""
    return RcfConfig(**{k: v for k, v in data.items() if k != "score_every_window"})


@dataclass(frozen=True)
class RcfScore:
    """The forest's view of one closed window."""

    count: int
    score: float | None  # None while warming up
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
        self.points: deque[list[float]] = deque()  # the normal points fed to the forest since it was planted
        self.plantings = 0  # forests planted so far (each one's seed is seed + plantings)
        self.learnt = 0  # normal points learnt in all (the warm-up ends at warmup_windows − shingle_size + 1)
        self.scores: deque[float] = deque(maxlen=cfg.score_history)
        self.deviations: deque[float] = deque(maxlen=cfg.deviation_history or cfg.score_history)  # normal |residual|
        self.threshold: float | None = None
        self.forest: RandomCutForest | None = None
        self.windows_seen = 0
        self.anomalous_run = 0  # consecutive unusual windows (past the bar, with the return-level bar)
        self.slot_counts: dict[int, list[float]] = {}  # median profile: the slot's counts of its last profile_days days
        self.week_counts: dict[int, list[float]] = {}  # ... and the same slot of the week's, of its last profile_weeks
        self.recent: deque[float] = deque(maxlen=max(cfg.sustained_windows, 1))  # residuals since the last gap
        self.day_peaks: deque[list[float]] = deque(maxlen=cfg.peak_days)  # per day: [peak |dev| 1 window, n windows]
        self.today: list[float] = []  # [day number, peak 1 window, peak n windows] of the day being seen
        self.armed_at: float | None = None  # the first window that could alarm (min_peak_days of peaks known)

    @property
    def warm(self) -> bool:
        """The warm-up is over: every window from now on is judged."""
        return self.threshold is not None

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
        """Score the newest window (order count, start in epoch seconds); learn it when it is normal."""
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
            self._warm_up(point)
            self._learn_normal(count, window_start)
            return RcfScore(count, None, self.threshold, False, expected)
        bar = self.deviation_bar()
        past = self._past_bar(deviations, bar)
        score = self._score(point)
        outlier = score >= (self.threshold or math.inf)  # the forest: this shape is unusual
        # the run of unusual windows a level shift is adopted after; with the return-level bar only of those past it
        # (a recorded series' median profile learns every window, so a drift within the bar needs no adopting, and a
        # never-seen day that the bar does not yet flag is not learnt as normal before it can alarm)
        run = outlier and (past or not cfg.return_period_days)
        self.anomalous_run = self.anomalous_run + 1 if run else 0
        adopted = outlier and self.anomalous_run * cfg.window_seconds > cfg.adapt_after_seconds
        if adopted:
            # a level shift: after adapt_after_seconds of anomaly the new level is learnt as normal (no alarm storm);
            # its scores stay out of the threshold's history (they are not what normal windows score)
            outlier = False
        # an alarm-worthy window is an outlier that is also far from its expectation (not noise of a bursty series)
        anomalous = outlier and past
        if not outlier:  # an outlier is scored, never learnt: an incident does not become normal while it lasts
            self._learn(point)
            if not adopted and not past:  # the threshold follows the scores of windows within the deviation bar
                self.scores.append(score)
            self._learn_normal(count, window_start, bar)
            self._set_threshold()
        return RcfScore(count, score, self.threshold, anomalous, expected)

    def _score(self, point: list[float]) -> float:
        assert self.forest is not None
        return float(self.forest.score(point))

    def _warm_up(self, point: list[float]) -> None:
        """Learn a warm-up point; the second half of the warm-up is scored first (the threshold's first history:
        scored like every later window, before it is learnt, by a forest that already holds half the warm-up)."""
        needed = self.config.warmup_windows - self.config.shingle_size + 1
        if self.forest is not None and 2 * self.learnt >= needed:
            self.scores.append(self._score(point))
        self._learn(point)
        if self.learnt >= needed:
            self._set_threshold()

    def _learn(self, point: list[float]) -> None:
        """Feed a normal point to the forest. The state keeps every point fed since the forest was planted (it is
        rebuilt from them on load); at 2 × ``tree_size`` of them the forest is planted anew from the last
        ``tree_size`` (its sample fills with them), so the state stays small."""
        size = self.config.tree_size
        self.learnt += 1
        self.points.append([float(x) for x in point])
        if self.forest is None or len(self.points) >= 2 * size:
            while len(self.points) > size:
                self.points.popleft()
            self.plantings += 1
            self._plant()
        else:
            self.forest.update(self.points[-1])

    def _plant(self) -> None:
        """A new forest (seed ``seed + plantings``) fed the points held, in order: the same forest every time."""
        cfg = self.config
        dimensions = cfg.shingle_size + (2 if cfg.time_of_day_radius > 0 else 0)
        self.forest = RandomCutForest(
            {
                "dimensions": dimensions,
                "shingle_size": 1,  # the points are shingled here (residuals against the profile)
                "internal_shingling": False,
                "num_trees": cfg.num_trees,
                "sample_size": cfg.tree_size,
                "output_after": 1,
                "random_seed": cfg.seed + self.plantings,
                "parallel_execution_enabled": False,
            }
        )
        for point in self.points:
            self.forest.update(point)

    def _set_threshold(self) -> None:
        cfg = self.config
        if self.scores:
            self.threshold = float(cfg.threshold_factor * np.quantile(np.asarray(self.scores), cfg.threshold_quantile))

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable: profile, shingle, and the points fed to the forest (it is rebuilt from them)."""
        return {
            "engine": ENGINE,
            "config": asdict(self.config),
            "profile": {str(k): v for k, v in self.profile.items()},
            "values": list(self.values),
            "recent_counts": list(self.recent_counts),
            "points": list(self.points),
            "plantings": self.plantings,
            "learnt": self.learnt,
            "scores": list(self.scores),
            "deviations": list(self.deviations),
            "threshold": self.threshold,
            "windows_seen": self.windows_seen,
            "anomalous_run": self.anomalous_run,
            "slot_counts": {str(k): v for k, v in self.slot_counts.items()},
            "week_counts": {str(k): v for k, v in self.week_counts.items()},
            "recent": list(self.recent),
            "day_peaks": list(self.day_peaks),
            "today": self.today,
            "armed_at": self.armed_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RateForest:
        if state.get("engine") != ENGINE:  # an rrcf state: its config may also carry score_every_window
            raise ConfigError(
                "the saved detector state was made by the earlier rrcf forest (its scores are on another scale): "
                "reset it (consume(reset=True)) or use a new consumer name"
            )
        forest = cls(config_from_dict(state["config"]))
        forest.profile = {int(k): float(v) for k, v in state["profile"].items()}
        forest.values.extend(state["values"])
        forest.recent_counts.extend(state["recent_counts"])
        forest.points = deque([float(x) for x in p] for p in state["points"])
        forest.plantings = int(state["plantings"])
        forest.learnt = int(state["learnt"])
        forest.scores.extend(state["scores"])
        forest.deviations.extend(state["deviations"])
        forest.threshold = state["threshold"]
        forest.windows_seen = int(state["windows_seen"])
        forest.anomalous_run = int(state["anomalous_run"])
        forest.slot_counts = {int(k): [float(x) for x in v] for k, v in state["slot_counts"].items()}
        forest.week_counts = {int(k): [float(x) for x in v] for k, v in state["week_counts"].items()}
        forest.recent.extend(state["recent"])
        forest.day_peaks.extend([float(x) for x in p] for p in state["day_peaks"])
        forest.today = [float(x) for x in state["today"]]
        forest.armed_at = state["armed_at"]
        if forest.points:
            forest._plant()
        return forest
