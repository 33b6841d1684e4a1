"""Schedule validation and next-occurrence arithmetic: time zones, DST, month ends, cron."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.db.ops_models import Schedule
from kvmmanager.services.automation.schedules import ScheduleSpec, next_run, validate_spec


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sched(**kw: Any) -> Schedule:
    return Schedule(**{"timezone": "UTC", **kw})


def test_daily_in_a_time_zone_follows_daylight_saving():
    s = sched(kind="daily", at_time="02:30", timezone="Europe/Berlin")
    # Winter: CET = UTC+1.
    assert next_run(s, utc(2026, 1, 10, 12, 0)) == utc(2026, 1, 11, 1, 30)
    # Summer: CEST = UTC+2; the same wall-clock time is an hour earlier in UTC.
    assert next_run(s, utc(2026, 7, 10, 12, 0)) == utc(2026, 7, 11, 0, 30)
    # 2026-03-29: 02:30 does not exist in Berlin (02:00 -> 03:00); it runs at 03:30 CEST.
    assert next_run(s, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 30)
    # 2026-10-25: 02:30 happens twice; it runs once, the first time (CEST).
    first = next_run(s, utc(2026, 10, 24, 12, 0))
    assert first == utc(2026, 10, 25, 0, 30)
    assert next_run(s, first) == utc(2026, 10, 26, 1, 30)


def test_daily_is_strictly_after():
    s = sched(kind="daily", at_time="06:00")
    assert next_run(s, utc(2026, 5, 1, 5, 59)) == utc(2026, 5, 1, 6, 0)
    assert next_run(s, utc(2026, 5, 1, 6, 0)) == utc(2026, 5, 2, 6, 0)


def test_weekly_picks_the_next_listed_weekday():
    # 2026-05-01 is a Friday (4). Mondays and Wednesdays at 08:00 New York time.
    s = sched(kind="weekly", at_time="08:00", weekdays=[0, 2], timezone="America/New_York")
    assert next_run(s, utc(2026, 5, 1, 0, 0)) == utc(2026, 5, 4, 12, 0)
    assert next_run(s, utc(2026, 5, 4, 12, 0)) == utc(2026, 5, 6, 12, 0)


def test_monthly_uses_the_last_day_of_short_months():
    s = sched(kind="monthly", at_time="23:00", day_of_month=31)
    assert next_run(s, utc(2026, 1, 31, 23, 0)) == utc(2026, 2, 28, 23, 0)
    assert next_run(s, utc(2026, 2, 28, 23, 0)) == utc(2026, 3, 31, 23, 0)
    assert next_run(s, utc(2026, 12, 31, 23, 30)) == utc(2027, 1, 31, 23, 0)


def test_once_and_cron():
    at = utc(2026, 6, 1, 10, 0)
    once = sched(kind="once", run_at=at)
    assert next_run(once, utc(2026, 6, 1, 9, 0)) == at
    assert next_run(once, at) is None
    cron = sched(kind="cron", cron="*/15 9-17 * * 1-5", timezone="Asia/Tokyo")
    # Friday 2026-05-01 17:50 JST -> Monday 09:00 JST (00:00 UTC).
    assert next_run(cron, utc(2026, 5, 1, 8, 50)) == utc(2026, 5, 4, 0, 0)


def base(**kw: Any) -> ScheduleSpec:
    return ScheduleSpec(**{"name": "kvmm-t-ops-s", "action": "start", "tag": "web", **kw})


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"kind": "daily"}, "at_time"),
        ({"kind": "daily", "at_time": "24:00"}, "at_time"),
        ({"kind": "daily", "at_time": "07:00", "cron": "* * * * *"}, "cron"),
        ({"kind": "weekly", "at_time": "07:00", "weekdays": [7]}, "weekdays"),
        ({"kind": "weekly", "at_time": "07:00", "weekdays": []}, "weekdays"),
        ({"kind": "monthly", "at_time": "07:00", "day_of_month": 0}, "day_of_month"),
        ({"kind": "cron", "cron": "61 * * * *"}, "cron"),
        ({"kind": "cron", "cron": "* * * * * *"}, "cron"),
        ({"kind": "once"}, "run_at"),
        ({"kind": "daily", "at_time": "07:00", "timezone": "Mars/Olympus"}, "timezone"),
        ({"kind": "daily", "at_time": "07:00", "name": "Bad Name"}, "name"),
        ({"kind": "daily", "at_time": "07:00", "tag": None}, "vms"),
        ({"kind": "daily", "at_time": "07:00", "tag": "bad tag"}, "tag"),
    ],
)
def test_bad_specs_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_spec(base(**kw))
    assert err.value.field == field


def test_naive_run_at_is_read_in_the_schedule_time_zone():
    spec = validate_spec(
        base(kind="once", run_at=datetime(2026, 7, 1, 9, 0), timezone="Europe/Berlin")
    )
    assert spec.run_at == utc(2026, 7, 1, 7, 0)


def test_a_cron_that_never_matches_is_refused():
    with pytest.raises(InvalidInput) as err:
        validate_spec(base(kind="cron", cron="0 0 30 2 *"))
    assert err.value.field == "cron"
    assert next_run(sched(kind="cron", cron="0 0 30 2 *"), utc(2026, 1, 1)) is None


async def test_a_wake_up_meeting_the_stop_does_not_keep_the_loop_running(manager: Any) -> None:
    """The lease's release at stop wakes the scheduler as its aclose cancels it. Python
    3.11's wait_for swallowed that cancellation, the loop ran on and Manager.stop waited
    forever (CI stop 15: a teardown past pytest's 300 s)."""
    scheduler = manager.scheduler
    for _ in range(5):
        await asyncio.sleep(0.05)  # the loop is asleep on its wake event
        scheduler._wake.set()  # a wake-up in the same loop pass as the stop
        async with asyncio.timeout(30):
            await scheduler.aclose()
        scheduler.start()
