"""The local follower's lake cursor: where its next listing starts (Firehose's key names), and what it forgets."""

from __future__ import annotations

from shoplake.weblogs._delivery import LISTING_MARGIN_S, LakeCursor, _listing_start
from shoplake.weblogs._lake_io import RAW_PREFIX

KEY = RAW_PREFIX + "2026/12/06/03/shoplake-dev-weblogs-1-2026-12-06-03-14-08-075e48dd-909b-4b58-9eae-2d2da4b86499"


def _key(stamp: str, suffix: str = "0000") -> str:
    """A Firehose-style key for ``YYYY-MM-DD-HH-MM-SS``."""
    y, mo, d, h = stamp.split("-")[:4]
    return f"{RAW_PREFIX}{y}/{mo}/{d}/{h}/shoplake-dev-weblogs-1-{stamp}-{suffix}"


def test_the_listing_starts_a_margin_before_the_key_in_its_naming():
    assert LISTING_MARGIN_S == 10.0
    assert _listing_start(KEY, RAW_PREFIX) == RAW_PREFIX + "2026/12/06/03/shoplake-dev-weblogs-1-2026-12-06-03-13-58"
    # across an hour (and a day): the folder is the start's, not the key's
    assert _listing_start(_key("2026-12-07-00-00-05"), RAW_PREFIX) == (
        RAW_PREFIX + "2026/12/06/23/shoplake-dev-weblogs-1-2026-12-06-23-59-55"
    )


def test_every_key_from_the_margin_on_sorts_after_the_start():
    start = _listing_start(_key("2026-12-06-03-14-08"), RAW_PREFIX)
    assert start is not None
    later = [_key("2026-12-06-03-13-58", "0000"), _key("2026-12-06-03-13-58", "ffff"), _key("2026-12-06-04-00-00")]
    earlier = [_key("2026-12-06-03-13-57", "ffff"), _key("2026-12-06-02-59-59")]
    assert all(k > start for k in later) and all(k < start for k in earlier)


def test_keys_in_another_naming_list_everything():
    assert _listing_start(RAW_PREFIX + "manual/upload.log", RAW_PREFIX) is None
    assert _listing_start("file:/tmp/access.log", RAW_PREFIX) is None
    cursor = LakeCursor("bucket", seen={"file:/tmp/access.log", "probe", "sample"})
    cursor.mark(())
    assert cursor.start_after is None


def test_the_cursor_moves_forward_only_and_forgets_keys_behind_it():
    cursor = LakeCursor("bucket", seen={"file:/x.log"})
    old, new = _key("2026-12-06-03-00-00"), _key("2026-12-06-03-14-08")
    cursor.mark([old, new])
    assert cursor.start_after == _listing_start(new, RAW_PREFIX)
    assert cursor.seen == {new}  # the old key can no longer be listed: forgotten
    cursor.mark([_key("2026-12-06-03-14-01")])  # an older arrival does not move the start back
    assert cursor.start_after == _listing_start(new, RAW_PREFIX)


def test_listings_start_a_second_back_and_sweep_the_margin_every_few_seconds():
    from shoplake.weblogs._delivery import RECENT_MARGIN_S, SWEEP_EVERY_S

    now = [100.0]
    cursor = LakeCursor("bucket", seen=set(), clock=lambda: now[0])
    assert cursor.listing_start() is None  # nothing seen yet: the whole prefix
    newest = _key("2026-12-06-03-14-08")
    cursor.mark([newest])
    assert RECENT_MARGIN_S == 1.0 and SWEEP_EVERY_S == 2.0
    recent, sweep = _listing_start(newest, RAW_PREFIX, RECENT_MARGIN_S), _listing_start(newest, RAW_PREFIX)
    assert recent == RAW_PREFIX + "2026/12/06/03/shoplake-dev-weblogs-1-2026-12-06-03-14-07"
    assert (cursor.recent_after, cursor.start_after) == (recent, sweep)
    # a write of the newest key's second (or the one before) sorts after the recent start, whatever its suffix
    assert _key("2026-12-06-03-14-07", "0000") > recent and _key("2026-12-06-03-14-08", "0000") > recent
    now[0] += 0.5
    assert cursor.listing_start() == recent
    now[0] += SWEEP_EVERY_S  # due: one sweep from the margin, then the recent start again
    assert cursor.listing_start() == sweep
    assert cursor.listing_start() == recent
    now[0] += SWEEP_EVERY_S - 0.1
    assert cursor.listing_start() == recent
