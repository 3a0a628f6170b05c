"""Tests for jumpoint.schedule: parsing, open periods, daylight saving, next opening."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from jumpoint.schedule import (
    OpenWindow,
    Schedule,
    Window,
    parse_day_item,
    parse_time,
    schedule_checker,
)
from shared.errors import ConfigError
from shared.schema import Where

MINUTE = timedelta(minutes=1)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

EXAMPLE = """\
schedule:
  timezone: Europe/Berlin
  strict: true
  windows:
    - {days: [mon, tue, wed, thu, fri], start: 08:00, end: 18:00}
    - {days: [sat], start: 22:00, end: 02:00}
    - {days: [sun], start: 00:00, end: 24:00}
"""


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int = 0,
    microsecond: int = 0,
    fold: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone, fold=fold)


def schedule(timezone: str, *windows: tuple[list[str], Any, Any], strict: bool = False) -> Schedule:
    specs = [{"days": days, "start": start, "end": end} for days, start, end in windows]
    return Schedule.from_values(timezone, specs, strict=strict)


def check_yaml(text: str) -> Schedule:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)
    node = root.value[0][1]
    return schedule_checker(node, Where("jumpoint.yaml", "jump_policies.p.schedule"))


def yaml_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check_yaml(text)
    return str(caught.value)


def span(open_window: OpenWindow | None) -> tuple[datetime, datetime]:
    """Start and end in UTC (a datetime in a repeated hour is never == one of another zone)."""
    assert open_window is not None
    assert open_window.start is not None and open_window.end is not None
    return open_window.start.astimezone(UTC), open_window.end.astimezone(UTC)


def real_length(open_window: OpenWindow) -> timedelta:
    start, end = span(open_window)
    return end - start


# Parsing plain values


def test_from_values_accepts_each_form() -> None:
    result = Schedule.from_values(
        "Europe/Berlin",
        [
            {"days": ["mon", "TUE", "Wed"], "start": "08:00", "end": "18:00"},
            {"days": ["mon-fri", "sun"], "start": "8:30", "end": "24:00"},
            {"days": ["fri-mon"], "start": 1320, "end": 120},
            {"days": ["sat - sun"], "start": "00:00", "end": "00:30"},
        ],
    )
    assert result.timezone == "Europe/Berlin"
    assert result.strict is False
    assert result.windows == (
        Window((0, 1, 2), 480, 1080),
        Window((0, 1, 2, 3, 4, 6), 510, 1440),
        Window((0, 4, 5, 6), 1320, 120),
        Window((5, 6), 0, 30),
    )
    assert Schedule.from_values("UTC", [{"days": ["sun"], "start": 0, "end": 60}], True).strict


def test_day_items() -> None:
    assert parse_day_item("sun") == (6,)
    assert parse_day_item("Mon-Fri") == (0, 1, 2, 3, 4)
    assert parse_day_item("sat-tue") == (5, 6, 0, 1)


def test_times() -> None:
    assert parse_time("00:00") == 0
    assert parse_time("8:05") == 485
    assert parse_time("23:59") == 1439
    assert parse_time("24:00", is_end=True) == 1440
    assert parse_time(480) == 480  # yaml.safe_load("start: 8:00")


@pytest.mark.parametrize(
    ("timezone", "windows", "message"),
    [
        ("Europe/Berlinn", [(["mon"], "08:00", "09:00")], "unknown time zone 'Europe/Berlinn'"),
        ("../etc/passwd", [(["mon"], "08:00", "09:00")], "unknown time zone '../etc/passwd'"),
        ("America", [(["mon"], "08:00", "09:00")], "unknown time zone 'America'"),
        ("", [(["mon"], "08:00", "09:00")], "unknown time zone ''"),
        ("UTC", [(["fry"], "08:00", "09:00")], "window 1: unknown day 'fry'"),
        ("UTC", [(["mon-fry"], "08:00", "09:00")], "window 1: unknown day 'mon-fry'"),
        ("UTC", [(["mon-mon"], "08:00", "09:00")], "the range 'mon-mon' starts and ends"),
        ("UTC", [(["mon-fri", "wed"], "08:00", "09:00")], "wed is listed twice (again in 'wed')"),
        ("UTC", [([], "08:00", "09:00")], "days must name at least one day"),
        (
            "UTC",
            [("mon", "08:00", "09:00")],
            "days must be a list such as [mon-fri, sat], not 'mon'",
        ),
        ("UTC", [([3], "08:00", "09:00")], "3 is not a day"),
        ("UTC", [(["mon"], "25:00", "09:00")], "'25:00' is not a time HH:MM"),
        ("UTC", [(["mon"], "08:60", "09:00")], "'08:60' is not a time HH:MM"),
        ("UTC", [(["mon"], "8:5", "09:00")], "'8:5' is not a time HH:MM"),
        ("UTC", [(["mon"], "08:00:00", "09:00")], "'08:00:00' is not a time HH:MM"),
        ("UTC", [(["mon"], "08:00", "24:01")], "'24:01' is not a time HH:MM"),
        ("UTC", [(["mon"], 1441, "09:00")], "1441 is not a time HH:MM"),
        ("UTC", [(["mon"], True, "09:00")], "True is not a time HH:MM"),
        ("UTC", [(["mon"], "24:00", "09:00")], "24:00 is only allowed as an end time"),
        ("UTC", [(["mon"], "08:00", "08:00")], "empty window: start and end are both 08:00"),
        ("UTC", [(["mon"], "00:00", "00:00")], "00:00-24:00 is a whole day"),
        ("UTC", [(["mon"], "10:00", "11:00"), (["x"], "1:00", "2:00")], "window 2: unknown day"),
    ],
)
def test_from_values_rejects(
    timezone: str, windows: list[tuple[Any, Any, Any]], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        schedule(timezone, *windows)
    assert message in str(caught.value)


def test_from_values_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="1 to 64 windows, not 0"):
        Schedule.from_values("UTC", [])
    with pytest.raises(ValueError, match="1 to 64 windows, not 65"):
        Schedule.from_values("UTC", [{"days": ["mon"], "start": "01:00", "end": "02:00"}] * 65)
    with pytest.raises(ValueError, match="window 1: unknown key 'begin'"):
        Schedule.from_values("UTC", [{"days": ["mon"], "begin": "01:00", "end": "02:00"}])
    with pytest.raises(ValueError, match="window 1: missing key 'end'"):
        Schedule.from_values("UTC", [{"days": ["mon"], "start": "01:00"}])
    with pytest.raises(ValueError, match="window 1: expected a mapping"):
        Schedule.from_values("UTC", ["mon 01:00-02:00"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="strict must be true or false, not 'yes'"):
        Schedule.from_values(
            "UTC",
            [{"days": ["mon"], "start": "01:00", "end": "02:00"}],
            "yes",  # type: ignore[arg-type]
        )


def test_window_validates_direct_construction() -> None:
    with pytest.raises(ValueError, match="without repeats"):
        Window((1, 1), 0, 60)
    with pytest.raises(ValueError, match="weekday numbers 0 to 6"):
        Window((7,), 0, 60)
    with pytest.raises(ValueError, match="outside 00:00 to 23:59"):
        Window((1,), 1440, 60)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Schedule("Mars/Olympus", False, (Window((1,), 0, 60),))


# Parsing YAML


def test_yaml_example_with_unquoted_times() -> None:
    result = check_yaml(EXAMPLE)
    assert result == Schedule(
        "Europe/Berlin",
        True,
        (Window((0, 1, 2, 3, 4), 480, 1080), Window((5,), 1320, 120), Window((6,), 0, 1440)),
    )


def test_yaml_time_forms_agree() -> None:
    # YAML 1.1 makes 8:00 and 22:30 base-60 integers (480, 1350) but 08:00 a string.
    assert yaml.safe_load("t: 8:00") == {"t": 480}
    assert yaml.safe_load("t: 08:00") == {"t": "08:00"}
    texts = [
        "s:\n  timezone: UTC\n  windows:\n    - {days: [mon-fri, sun], start: 8:00, end: 22:30}\n",
        "s:\n  timezone: UTC\n  windows:\n    - {days: [mon-fri, sun], start: 08:00, end: '22:30'}\n",
        's:\n  timezone: UTC\n  windows:\n    - days: ["mon-fri", Sun]\n      start: "8:00"\n      end: "22:30"\n',
    ]
    expected = Schedule("UTC", False, (Window((0, 1, 2, 3, 4, 6), 480, 1350),))
    for text in texts:
        assert check_yaml(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "s:\n  timezone: Europe/Berlinn\n  windows: [{days: [mon], start: 1:00, end: 2:00}]\n",
            "jumpoint.yaml:2: jump_policies.p.schedule.timezone: unknown time zone 'Europe/Berlinn'",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon, fry]\n      start: 1:00\n      end: 2:00\n",
            "jumpoint.yaml:4: jump_policies.p.schedule.windows[0].days[1]: unknown day 'fry'",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon-fri, tue]\n      start: 1:00\n      end: 2:00\n",
            "jumpoint.yaml:4: jump_policies.p.schedule.windows[0].days[1]: tue is listed twice",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: mon\n      start: 1:00\n      end: 2:00\n",
            "jumpoint.yaml:4: jump_policies.p.schedule.windows[0].days: expected a list of days",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 8:5\n      end: 9:00\n",
            "jumpoint.yaml:5: jump_policies.p.schedule.windows[0].start: '8:5' is not a time HH:MM",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 480\n      end: 9:00\n",
            "jumpoint.yaml:5: jump_policies.p.schedule.windows[0].start: '480' is not a time HH:MM",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 24:00\n      end: 9:00\n",
            "jumpoint.yaml:5: jump_policies.p.schedule.windows[0].start: 24:00 is only allowed as an end",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 1:00\n      end: [2]\n",
            "jumpoint.yaml:6: jump_policies.p.schedule.windows[0].end: expected a time HH:MM",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 08:00\n      end: 8:00\n",
            "jumpoint.yaml:6: jump_policies.p.schedule.windows[0].end: empty window: start and end are both 08:00",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 1:00\n      stop: 2:00\n",
            "jumpoint.yaml:6: jump_policies.p.schedule.windows[0].stop: unknown key (known keys: days, end, start)",
        ),
        (
            "s:\n  timezone: UTC\n  windows:\n    - days: [mon]\n      start: 1:00\n",
            "jumpoint.yaml:4: jump_policies.p.schedule.windows[0]: missing required key 'end'",
        ),
        (
            "s:\n  timezone: UTC\n  windows: []\n",
            "jumpoint.yaml:3: jump_policies.p.schedule.windows: expected 1 to 64 entries",
        ),
        (
            "s:\n  windows: [{days: [mon], start: 1:00, end: 2:00}]\n",
            "jumpoint.yaml:2: jump_policies.p.schedule: missing required key 'timezone'",
        ),
        (
            "s:\n  timezone: UTC\n  strict: maybe\n  windows: [{days: [mon], start: 1:00, end: 2:00}]\n",
            "jumpoint.yaml:3: jump_policies.p.schedule.strict: expected true or false",
        ),
        (
            "s:\n  timezone: UTC\n  windows: [{days: [mon], start: 1:00, end: 2:00}]\n  zone: UTC\n",
            "jumpoint.yaml:4: jump_policies.p.schedule.zone: unknown key (known keys: strict, timezone, windows)",
        ),
    ],
)
def test_yaml_errors_name_line_and_key(text: str, message: str) -> None:
    assert message in yaml_error(text)


def test_yaml_too_many_windows() -> None:
    rows = "".join("    - {days: [mon], start: 1:00, end: 2:00}\n" for _ in range(65))
    assert "windows: expected 1 to 64 entries" in yaml_error(
        f"s:\n  timezone: UTC\n  windows:\n{rows}"
    )


# Describing


def test_describe() -> None:
    assert check_yaml(EXAMPLE).describe() == (
        "mon-fri 08:00-18:00, sat 22:00-02:00, sun 00:00-24:00 (Europe/Berlin)"
    )
    result = schedule(
        "UTC",
        (["fri-mon"], "9:00", "10:00"),
        (["mon", "wed", "fri"], "0:00", "0:30"),
        (["sat", "sun"], "12:00", "13:00"),
        (["mon-sun"], "23:00", "24:00"),
    )
    assert result.describe() == (
        "fri-mon 09:00-10:00, mon,wed,fri 00:00-00:30, sat,sun 12:00-13:00,"
        " mon-sun 23:00-24:00 (UTC)"
    )


# Open or closed


OFFICE = schedule(
    "Europe/Berlin",
    (["mon-fri"], "08:00", "18:00"),
    (["sat"], "22:00", "02:00"),
    (["sun"], "00:00", "24:00"),
)


def test_boundaries_start_inclusive_end_exclusive() -> None:
    # Wednesday 2026-07-15, CEST (UTC+2)
    assert OFFICE.window_at(local(BERLIN, 2026, 7, 15, 7, 59)) is None
    opened = OFFICE.window_at(local(BERLIN, 2026, 7, 15, 8, 0))
    assert opened == OpenWindow(
        local(BERLIN, 2026, 7, 15, 8, 0), local(BERLIN, 2026, 7, 15, 18, 0), OFFICE.windows[0]
    )
    assert OFFICE.window_at(local(BERLIN, 2026, 7, 15, 17, 59, 59, 999999)) == opened
    assert OFFICE.window_at(local(BERLIN, 2026, 7, 15, 18, 0)) is None
    # The same instants given in UTC.
    assert OFFICE.window_at(utc(2026, 7, 15, 6, 0)) == opened
    assert OFFICE.window_at(utc(2026, 7, 15, 5, 59)) is None
    assert OFFICE.window_at(utc(2026, 7, 15, 16, 0)) is None
    assert OFFICE.is_open(utc(2026, 7, 15, 12, 0))
    assert not OFFICE.is_open(utc(2026, 7, 15, 20, 0))


def test_result_is_in_the_schedule_zone() -> None:
    opened = OFFICE.window_at(utc(2026, 7, 15, 12, 0))
    assert opened is not None and opened.start is not None and opened.end is not None
    assert opened.start.tzinfo is BERLIN
    assert opened.end.utcoffset() == timedelta(hours=2)


def test_window_crossing_midnight() -> None:
    late = schedule("UTC", (["sat"], "22:00", "02:00"))
    assert late.window_at(utc(2026, 7, 18, 21, 59)) is None  # Saturday
    opened = late.window_at(utc(2026, 7, 18, 22, 0))
    assert opened is not None
    assert (opened.start, opened.end) == (utc(2026, 7, 18, 22, 0), utc(2026, 7, 19, 2, 0))
    assert late.window_at(utc(2026, 7, 19, 1, 59)) == opened  # Sunday, still open
    assert late.window_at(utc(2026, 7, 19, 2, 0)) is None
    assert late.window_at(utc(2026, 7, 19, 22, 30)) is None  # Sunday night is not Saturday


def test_window_crossing_from_sunday_into_monday() -> None:
    night = schedule("UTC", (["sun"], "22:00", "02:00"))
    assert night.window_at(utc(2026, 7, 19, 21, 59)) is None  # Sunday
    opened = night.window_at(utc(2026, 7, 20, 1, 59))  # Monday
    assert opened is not None
    assert (opened.start, opened.end) == (utc(2026, 7, 19, 22, 0), utc(2026, 7, 20, 2, 0))
    assert night.window_at(utc(2026, 7, 20, 2, 0)) is None
    assert night.window_at(utc(2026, 7, 20, 23, 0)) is None


def test_end_of_day_as_00_00_or_24_00() -> None:
    for end in ("00:00", "24:00"):
        evening = schedule("UTC", (["fri"], "20:00", end))
        opened = evening.window_at(utc(2026, 7, 17, 23, 59))
        assert opened is not None and opened.end == utc(2026, 7, 18, 0, 0)
        assert evening.window_at(utc(2026, 7, 18, 0, 0)) is None


def test_adjacent_windows_chain() -> None:
    friday = schedule("UTC", (["fri"], "08:00", "18:00"), (["fri"], "18:00", "20:00"))
    opened = friday.window_at(utc(2026, 7, 17, 9, 0))
    assert opened == OpenWindow(utc(2026, 7, 17, 8, 0), utc(2026, 7, 17, 20, 0), friday.windows[0])
    later = friday.window_at(utc(2026, 7, 17, 19, 0))
    assert later == OpenWindow(utc(2026, 7, 17, 8, 0), utc(2026, 7, 17, 20, 0), friday.windows[1])


def test_overlapping_windows_chain() -> None:
    overlapping = schedule("UTC", (["tue"], "09:00", "12:00"), (["tue"], "11:00", "13:00"))
    opened = overlapping.window_at(utc(2026, 7, 14, 11, 30))
    assert opened is not None
    assert (opened.start, opened.end) == (utc(2026, 7, 14, 9, 0), utc(2026, 7, 14, 13, 0))
    assert opened.window == overlapping.windows[0]  # the first one written


def test_saturday_night_chains_into_sunday() -> None:
    opened = OFFICE.window_at(local(BERLIN, 2026, 7, 18, 23, 0))
    assert opened == OpenWindow(
        local(BERLIN, 2026, 7, 18, 22, 0), local(BERLIN, 2026, 7, 20, 0, 0), OFFICE.windows[1]
    )
    assert OFFICE.window_at(local(BERLIN, 2026, 7, 19, 23, 59)) == OpenWindow(
        opened.start, opened.end, OFFICE.windows[2]
    )
    assert OFFICE.window_at(local(BERLIN, 2026, 7, 20, 0, 0)) is None  # Monday 00:00


def test_chain_across_the_week() -> None:
    # Mon 00:00 to Sat 24:00 in one go, closed on Sunday.
    weekdays = schedule("UTC", (["mon-sat"], "00:00", "24:00"))
    opened = weekdays.window_at(utc(2026, 7, 15, 12, 0))
    assert opened is not None
    assert (opened.start, opened.end) == (utc(2026, 7, 13, 0, 0), utc(2026, 7, 19, 0, 0))


def test_always_open() -> None:
    always = schedule("Europe/Berlin", (["mon-sun"], "00:00", "24:00"))
    assert always.always_open
    opened = always.window_at(utc(2026, 3, 29, 1, 30))
    assert opened == OpenWindow(None, None, always.windows[0])
    assert always.next_opening(utc(2026, 3, 29, 1, 30)) is None
    overnight = schedule("UTC", (["mon-sun"], "12:00", "11:59"))
    assert not overnight.always_open
    assert overnight.window_at(utc(2026, 7, 15, 11, 59)) is None


def test_other_time_zone_than_utc() -> None:
    desk = schedule("America/New_York", (["mon-fri"], "09:00", "17:00"))
    # Wednesday in summer (EDT, UTC-4) and in winter (EST, UTC-5).
    assert desk.window_at(utc(2026, 7, 15, 12, 59)) is None
    opened = desk.window_at(utc(2026, 7, 15, 13, 0))
    assert opened is not None
    assert opened.start == local(NEW_YORK, 2026, 7, 15, 9, 0)
    assert opened.end == utc(2026, 7, 15, 21, 0)
    assert desk.window_at(utc(2026, 1, 14, 13, 30)) is None
    assert desk.window_at(utc(2026, 1, 14, 14, 0)) is not None
    assert desk.window_at(utc(2026, 1, 14, 21, 59)) is not None
    assert desk.window_at(utc(2026, 1, 14, 22, 0)) is None
    # Friday 20:00 in New York is already Saturday in UTC.
    assert desk.window_at(utc(2026, 7, 18, 0, 30)) is None
    assert desk.window_at(utc(2026, 7, 17, 20, 30)) is not None


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        OFFICE.window_at(datetime(2026, 7, 15, 12, 0))
    with pytest.raises(ValueError, match="has no time zone"):
        OFFICE.next_opening(datetime(2026, 7, 15, 12, 0))


# Daylight saving in Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC),
# 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC).


def test_spring_forward_window_is_two_hours() -> None:
    night = schedule("Europe/Berlin", (["sun"], "01:00", "04:00"))
    opened = night.window_at(utc(2026, 3, 29, 0, 0))
    assert opened is not None
    assert opened.start == utc(2026, 3, 29, 0, 0)
    assert opened.end == utc(2026, 3, 29, 2, 0)
    assert real_length(opened) == timedelta(hours=2)
    assert night.window_at(utc(2026, 3, 29, 1, 59)) is not None
    assert night.window_at(utc(2026, 3, 29, 2, 0)) is None


def test_fall_back_window_is_four_hours() -> None:
    night = schedule("Europe/Berlin", (["sun"], "01:00", "04:00"))
    opened = night.window_at(utc(2026, 10, 25, 1, 30))  # 02:30 CET, the second 02:30
    assert opened is not None
    assert opened.start == utc(2026, 10, 24, 23, 0)
    assert opened.end == utc(2026, 10, 25, 3, 0)
    assert real_length(opened) == timedelta(hours=4)
    assert night.window_at(utc(2026, 10, 24, 22, 59)) is None
    assert night.window_at(utc(2026, 10, 25, 2, 59)) is not None
    assert night.window_at(utc(2026, 10, 25, 3, 0)) is None


def test_nonexistent_time_is_the_first_instant_after_the_gap() -> None:
    late_start = schedule("Europe/Berlin", (["sun"], "02:30", "04:00"))
    assert late_start.window_at(utc(2026, 3, 29, 0, 59)) is None  # 01:59 CET
    opened = late_start.window_at(utc(2026, 3, 29, 1, 0))  # 03:00 CEST
    assert opened is not None
    assert opened.start == local(BERLIN, 2026, 3, 29, 3, 0)
    assert real_length(opened) == timedelta(hours=1)
    assert late_start.next_opening(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    early_end = schedule("Europe/Berlin", (["sun"], "01:00", "02:30"))
    opened = early_end.window_at(utc(2026, 3, 29, 0, 59))
    assert opened is not None and opened.end == utc(2026, 3, 29, 1, 0)
    # A window wholly inside the skipped hour does not open that day.
    skipped = schedule("Europe/Berlin", (["sun"], "02:00", "03:00"))
    assert skipped.window_at(utc(2026, 3, 29, 1, 0)) is None
    assert skipped.next_opening(utc(2026, 3, 28, 12, 0)) == local(BERLIN, 2026, 4, 5, 2, 0)


def test_repeated_time_is_its_first_occurrence() -> None:
    # 02:00-02:30 on the fall-back day is the first 02:00-02:30 (CEST) only.
    repeated = schedule("Europe/Berlin", (["sun"], "02:00", "02:30"))
    opened = repeated.window_at(utc(2026, 10, 25, 0, 10))
    assert span(opened) == (utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30))
    assert opened is not None and opened.start is not None
    assert opened.start.fold == 0 and opened.start.utcoffset() == timedelta(hours=2)
    # Python's rule the OpenWindow docstring warns about:
    assert opened.start != utc(2026, 10, 25, 0, 0)
    assert repeated.window_at(utc(2026, 10, 25, 1, 10)) is None  # 02:10 CET
    # A window from 02:30 runs on through the repeated hour.
    from_half_past = schedule("Europe/Berlin", (["sun"], "02:30", "03:30"))
    opened = from_half_past.window_at(utc(2026, 10, 25, 1, 10))
    assert span(opened) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30))


def test_dst_in_new_york() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
    night = schedule("America/New_York", (["sun"], "00:00", "06:00"))
    spring = night.window_at(utc(2026, 3, 8, 8, 0))
    autumn = night.window_at(utc(2026, 11, 1, 8, 0))
    assert spring is not None and autumn is not None
    assert real_length(spring) == timedelta(hours=5)
    assert real_length(autumn) == timedelta(hours=7)


# Next opening


def test_next_opening_when_closed() -> None:
    # Wednesday 20:00 CEST -> Thursday 08:00 CEST
    assert OFFICE.next_opening(utc(2026, 7, 15, 18, 0)) == local(BERLIN, 2026, 7, 16, 8, 0)
    # Friday 18:00 -> Saturday 22:00
    friday_evening = OFFICE.next_opening(local(BERLIN, 2026, 7, 17, 18, 0))
    assert friday_evening == local(BERLIN, 2026, 7, 18, 22, 0)
    assert friday_evening is not None and friday_evening.tzinfo is BERLIN
    # Monday 07:59:59 -> one second later
    assert OFFICE.next_opening(local(BERLIN, 2026, 7, 20, 7, 59, 59)) == local(
        BERLIN, 2026, 7, 20, 8, 0
    )


def test_next_opening_when_open_is_after_the_period() -> None:
    # Saturday 23:00 is open until Monday 00:00; the next opening is Monday 08:00.
    assert OFFICE.next_opening(local(BERLIN, 2026, 7, 18, 23, 0)) == local(
        BERLIN, 2026, 7, 20, 8, 0
    )
    assert OFFICE.next_opening(local(BERLIN, 2026, 7, 15, 8, 0)) == local(BERLIN, 2026, 7, 16, 8, 0)


def test_next_opening_a_week_ahead_across_dst() -> None:
    weekly = schedule("Europe/Berlin", (["sun"], "10:00", "11:00"))
    # From Sunday 2026-03-22 11:00 CET to Sunday 2026-03-29 10:00 CEST: 7 days minus one hour.
    after = local(BERLIN, 2026, 3, 22, 11, 0)
    opening = weekly.next_opening(after)
    assert opening == utc(2026, 3, 29, 8, 0)
    assert opening is not None
    assert opening.astimezone(UTC) - after.astimezone(UTC) == timedelta(days=7, hours=-2)


def test_denial_message_reads_well() -> None:
    now = utc(2026, 7, 15, 18, 0)
    assert OFFICE.window_at(now) is None
    opening = OFFICE.next_opening(now)
    assert opening is not None
    message = f"outside the schedule of jump policy p: {OFFICE.describe()}; next opening {opening}"
    assert message == (
        "outside the schedule of jump policy p: mon-fri 08:00-18:00, sat 22:00-02:00,"
        " sun 00:00-24:00 (Europe/Berlin); next opening 2026-07-16 08:00:00+02:00"
    )


# Property tests against a brute-force oracle
#
# The oracle works minute by minute in UTC.  It knows the rule only in its second form
# (see the module docstring): an instant is inside when the highest reading the local
# clock has shown so far lies in some window's wall-time interval.

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute daylight saving shift
    "Pacific/Chatham",  # UTC+12:45 / +13:45
    "America/St_Johns",  # UTC-3:30 / -2:30
    "Asia/Kolkata",
]


def _transitions() -> list[datetime]:
    found: list[datetime] = []
    for name in ZONES:
        zone = ZoneInfo(name)
        instant = utc(2025, 12, 1, 0, 0)
        offset = instant.astimezone(zone).utcoffset()
        while instant < utc(2028, 1, 1, 0, 0):
            instant += timedelta(hours=1)
            current = instant.astimezone(zone).utcoffset()
            if current != offset:
                found.append(instant)
                offset = current
    return found


TRANSITIONS = _transitions()

minutes_of_day = st.one_of(
    st.sampled_from([0, 60, 90, 120, 150, 165, 180, 210, 240, 1380, 1439]),
    st.integers(0, 1439),
)


@st.composite
def windows_strategy(draw: st.DrawFn) -> Window:
    days = draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))
    start = draw(minutes_of_day)
    end = draw(st.one_of(minutes_of_day, st.just(1440)).filter(lambda minute: minute != start))
    return Window(tuple(sorted(days)), start, end)


schedules = st.builds(
    lambda zone, windows: Schedule(zone, False, tuple(windows)),
    st.sampled_from(ZONES),
    st.lists(windows_strategy(), min_size=1, max_size=4),
)

instants = st.one_of(
    st.builds(
        lambda minutes: utc(2025, 1, 1, 0, 0) + minutes * MINUTE,
        st.integers(0, 3 * 366 * 1440),
    ),
    st.builds(
        lambda base, minutes: base + minutes * MINUTE,
        st.sampled_from(TRANSITIONS),
        st.integers(-36 * 60, 36 * 60),
    ),
)


def wall(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def inside(windows: Sequence[Window], clock: datetime) -> bool:
    for window in windows:
        length = window.end_minute - window.start_minute
        if length <= 0:
            length += 1440
        for day in (clock.date() - timedelta(days=1), clock.date()):
            if day.weekday() in window.days:
                start = datetime.combine(day, time()) + timedelta(minutes=window.start_minute)
                if start <= clock < start + timedelta(minutes=length):
                    return True
    return False


def oracle_states(sched: Schedule, first: datetime) -> Iterator[tuple[datetime, bool]]:
    """(minute, open) from C{first} onwards, for whole-minute UTC instants."""
    zone = ZoneInfo(sched.timezone)
    highest = max(wall(zone, first - k * MINUTE) for k in range(181))
    instant = first
    while True:
        highest = max(highest, wall(zone, instant))
        yield instant, inside(sched.windows, highest)
        instant += MINUTE


def oracle_open(sched: Schedule, instant: datetime) -> bool:
    return next(oracle_states(sched, instant))[1]


def oracle_next_change(sched: Schedule, first: datetime, limit_days: int = 16) -> datetime | None:
    """The first minute after C{first} whose state differs from C{first}'s."""
    states = oracle_states(sched, first)
    _, state = next(states)
    for instant, now_open in states:
        if now_open != state:
            return instant
        if instant - first > timedelta(days=limit_days):
            return None
    raise AssertionError("unreachable")


@settings(max_examples=300)
@given(schedules, instants)
def test_window_at_matches_oracle(sched: Schedule, instant: datetime) -> None:
    assert (sched.window_at(instant) is not None) == oracle_open(sched, instant)


@settings(max_examples=120)
@given(schedules, instants)
def test_open_period_boundaries(sched: Schedule, instant: datetime) -> None:
    opened = sched.window_at(instant)
    if opened is None:
        return
    if opened.end is None:
        assert sched.always_open
        assert opened.start is None
        assert oracle_next_change(sched, instant, limit_days=8) is None
        return
    assert opened.start is not None
    start, end = opened.start.astimezone(UTC), opened.end.astimezone(UTC)
    assert start <= instant < end
    assert sched.window_at(end - MINUTE) is not None
    assert sched.window_at(end) is None
    assert sched.window_at(start) is not None
    assert sched.window_at(start - MINUTE) is None
    # The period is open without a break from start to end, and closed right after.
    assert oracle_next_change(sched, start) == end
    assert not oracle_open(sched, start - MINUTE)


@settings(max_examples=120)
@given(schedules, instants)
def test_next_opening_matches_oracle(sched: Schedule, instant: datetime) -> None:
    opening = sched.next_opening(instant)
    if sched.always_open:
        assert opening is None
        return
    assert opening is not None
    opening = opening.astimezone(UTC)
    assert opening > instant
    assert sched.window_at(opening) is not None
    assert sched.window_at(opening - MINUTE) is None
    closed_from = instant
    opened = sched.window_at(instant)
    if opened is not None:
        assert opened.end is not None
        closed_from = opened.end.astimezone(UTC)
    assert not oracle_open(sched, closed_from)
    assert oracle_next_change(sched, closed_from) == opening


def test_oracle_agrees_on_the_examples() -> None:
    # The oracle itself, on the daylight saving cases above.
    night = schedule("Europe/Berlin", (["sun"], "01:00", "04:00"))
    assert oracle_next_change(night, utc(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 2, 0)
    assert oracle_next_change(night, utc(2026, 10, 24, 23, 0)) == utc(2026, 10, 25, 3, 0)
    assert date(2026, 3, 29).weekday() == 6 and date(2026, 10, 25).weekday() == 6
