"""The C{schedule} of a jump policy: weekly access windows in a time zone.

A schedule names an IANA time zone and up to 64 windows.  A window is a set
of weekdays plus a local start and end time (C{HH:MM}, end exclusive); when
the end is not after the start the window runs past midnight into the next
day, so C{sat 22:00-02:00} lasts from Saturday 22:00 to Sunday 02:00, and
C{00:00-24:00} is a whole day.  This module parses schedules (from Python
values and from YAML nodes, see L{schedule_checker}), tells whether an
instant is inside a window (L{Schedule.window_at}), when the schedule opens
next (L{Schedule.next_opening}) and describes it for messages.  It does no
I/O and keeps no state.

Wall-clock rule.  Windows are local wall time.  Every boundary (a start or an
end on a given date) becomes the I{earliest instant at which the local clock
shows that time or later}:

  - a time that exists once is simply that instant;
  - a time that exists twice (the hour repeated when clocks fall back) is
    its first occurrence (C{fold=0});
  - a time that does not exist (skipped when clocks spring forward) is the
    first instant after the gap, i.e. the moment of the change.

So in Europe/Berlin a window 01:00-04:00 lasts two real hours on the night
clocks go forward (2026-03-29) and four real hours on the night they go back
(2026-10-25), and a window 02:30-04:00 on 2026-03-29 opens at 03:00 CEST.
Equivalently, an instant is inside a window when the highest reading the
local clock has shown so far lies in the window: during the repeated hour
the schedule treats the clock as standing still at the moment of the change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from shared import schema
from shared.schema import Field, Where

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in the order of L{datetime.date.weekday} (0 is Monday)."""

MAX_WINDOWS = 64
MINUTES_PER_DAY = 24 * 60

_DAY_ITEM = re.compile(r"^([a-z]+)(?:\s*-\s*([a-z]+))?$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_ZONE_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*$")
_DAYS_HINT = "days are mon, tue, wed, thu, fri, sat, sun or a range such as mon-fri"
_ONE_DAY = timedelta(days=1)
_MAX_SPAN_DAYS = 64


def load_zone(name: str) -> ZoneInfo:
    """The time zone called C{name}; raises L{ValueError} for unknown names."""
    unknown = f"unknown time zone {name!r} (expected an IANA name such as Europe/Berlin)"
    if not isinstance(name, str) or len(name) > 128 or not _ZONE_NAME.match(name):
        raise ValueError(unknown)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(unknown) from None


def parse_day_item(item: object) -> tuple[int, ...]:
    """Parse one entry of C{days}: C{"mon"} or a range C{"mon-fri"} (case-insensitive).

    A range runs forward through the week and may wrap: C{"fri-mon"} is
    Friday, Saturday, Sunday and Monday.  Returns weekday numbers (0 is Monday).
    """
    if not isinstance(item, str):
        raise ValueError(f"{item!r} is not a day ({_DAYS_HINT})")
    match = _DAY_ITEM.match(item.strip().lower())
    names = match.groups() if match else ()
    if not names or any(n is not None and n not in DAY_NAMES for n in names):
        raise ValueError(f"unknown day {item!r} ({_DAYS_HINT})")
    first = DAY_NAMES.index(names[0])
    if names[1] is None:
        return (first,)
    last = DAY_NAMES.index(names[1])
    if first == last:
        raise ValueError(f"the range {item!r} starts and ends on the same day")
    return tuple((first + offset) % 7 for offset in range((last - first) % 7 + 1))


def _add_days(seen: list[int], days: tuple[int, ...], item: str) -> None:
    for day in days:
        if day in seen:
            raise ValueError(f"{DAY_NAMES[day]} is listed twice (again in {item!r})")
        seen.append(day)


def parse_days(items: object) -> tuple[int, ...]:
    """Parse a C{days} list such as C{["mon-fri", "sun"]} into sorted weekday numbers."""
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise ValueError(f"days must be a list such as [mon-fri, sat], not {items!r}")
    if not items:
        raise ValueError("days must name at least one day")
    seen: list[int] = []
    for item in items:
        _add_days(seen, parse_day_item(item), str(item))
    return tuple(sorted(seen))


def parse_time(value: object, *, is_end: bool = False) -> int:
    """Parse a time of day into minutes after midnight.

    Accepts C{"HH:MM"} (or C{"H:MM"}) from 00:00 to 23:59, and 24:00 when
    C{is_end}.  An C{int} is taken as minutes after midnight: that is what a
    YAML 1.1 loader such as C{yaml.safe_load} makes of an unquoted C{8:00}
    (480, a base-60 number).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time HH:MM")
    if isinstance(value, int):
        minutes = value
        if not 0 <= minutes <= MINUTES_PER_DAY:
            raise ValueError(f"{value!r} is not a time HH:MM (00:00 to 24:00)")
    elif isinstance(value, str):
        match = _TIME.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a time HH:MM (00:00 to 24:00)")
        hours, mins = int(match.group(1)), int(match.group(2))
        minutes = hours * 60 + mins
        if mins > 59 or minutes > MINUTES_PER_DAY:
            raise ValueError(f"{value!r} is not a time HH:MM (00:00 to 24:00)")
    else:
        raise ValueError(f"{value!r} is not a time HH:MM")
    if minutes == MINUTES_PER_DAY and not is_end:
        raise ValueError("24:00 is only allowed as an end time")
    return minutes


def format_time(minutes: int) -> str:
    """C{HH:MM} for minutes after midnight (1440 is C{24:00})."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_days(days: Sequence[int]) -> str:
    """Weekday numbers as text: runs of three or more days become ranges (C{mon-fri})."""
    chosen = set(days)
    if len(chosen) == 7:
        return "mon-sun"
    # Start after the last day not chosen, so that a run wrapping past Sunday stays whole.
    begin = max(day for day in range(7) if day not in chosen) + 1
    runs: list[list[int]] = []
    for offset in range(7):
        day = (begin + offset) % 7
        if day not in chosen:
            continue
        if runs and (runs[-1][-1] + 1) % 7 == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES[day] for day in run)
    return ",".join(parts)


@dataclass(frozen=True)
class Window:
    """One weekly window: on each of C{days}, from C{start_minute} to C{end_minute}.

    Minutes count from local midnight.  C{end_minute <= start_minute} means the
    window runs past midnight and ends on the following day.
    """

    days: tuple[int, ...]
    """Weekday numbers, sorted, without repeats (0 is Monday, 6 is Sunday)."""
    start_minute: int
    """0 to 1439."""
    end_minute: int
    """0 to 1440, never equal to C{start_minute}."""

    def __post_init__(self) -> None:
        if not self.days or list(self.days) != sorted(set(self.days)):
            raise ValueError(f"days must be sorted weekday numbers without repeats: {self.days!r}")
        if any(not isinstance(day, int) or not 0 <= day <= 6 for day in self.days):
            raise ValueError(f"days must be weekday numbers 0 to 6: {self.days!r}")
        if not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise ValueError(f"start {self.start_minute!r} is outside 00:00 to 23:59")
        if not 0 <= self.end_minute <= MINUTES_PER_DAY:
            raise ValueError(f"end {self.end_minute!r} is outside 00:00 to 24:00")
        if self.start_minute == self.end_minute:
            shown = format_time(self.start_minute)
            raise ValueError(
                f"empty window: start and end are both {shown} (00:00-24:00 is a whole day)"
            )

    @classmethod
    def from_values(cls, days: object, start: object, end: object) -> Window:
        """Build a window from C{days} (a list of names) and C{start}/C{end} (see L{parse_time})."""
        return cls(parse_days(days), parse_time(start), parse_time(end, is_end=True))

    @property
    def overnight(self) -> bool:
        """Whether the window runs past midnight into the next day."""
        return self.end_minute <= self.start_minute

    def describe(self) -> str:
        """For example C{mon-fri 08:00-18:00}."""
        times = f"{format_time(self.start_minute)}-{format_time(self.end_minute)}"
        return f"{format_days(self.days)} {times}"

    def wall_interval(self, day: date) -> tuple[datetime, datetime] | None:
        """The naive local start and end of this window's occurrence opening on C{day}."""
        if day.weekday() not in self.days:
            return None
        midnight = datetime.combine(day, time())
        end = self.end_minute + (MINUTES_PER_DAY if self.overnight else 0)
        return (
            midnight + timedelta(minutes=self.start_minute),
            midnight + timedelta(minutes=end),
        )


@dataclass(frozen=True)
class OpenWindow:
    """The open period containing an instant (see L{Schedule.window_at}).

    C{start} and C{end} are aware datetimes in the schedule's zone.  Both are
    C{None} when the schedule never closes (its windows cover the whole week).
    Beware of Python's rules for such datetimes: two that share a C{tzinfo}
    are compared and subtracted by wall time, ignoring daylight saving, and
    one in a repeated (fall-back) hour is never C{==} to a datetime of another
    zone.  Convert to UTC (C{.astimezone(UTC)}) before arithmetic or C{==}.
    """

    start: datetime | None
    """When the continuous open period began (chained windows are one period)."""
    end: datetime | None
    """When the continuous open period ends (exclusive)."""
    window: Window
    """The first configured window (in the order written) containing the instant."""


def _as_utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"{now!r} has no time zone (pass an aware datetime)")
    return now.astimezone(UTC)


def _covers_week(windows: Sequence[Window]) -> bool:
    """Whether the windows together cover every minute of the week (wall time)."""
    week = 7 * MINUTES_PER_DAY
    pieces: list[tuple[int, int]] = []
    for window in windows:
        length = (window.end_minute - window.start_minute) % MINUTES_PER_DAY or MINUTES_PER_DAY
        for day in window.days:
            start = day * MINUTES_PER_DAY + window.start_minute
            end = start + length
            if end <= week:
                pieces.append((start, end))
            else:
                pieces.extend([(start, week), (0, end - week)])
    reached = 0
    for start, end in sorted(pieces):
        if start > reached:
            return False
        reached = max(reached, end)
    return reached >= week


@dataclass(frozen=True)
class Schedule:
    """Weekly access windows of a jump policy in the IANA time zone C{timezone}.

    C{strict} asks the caller to close a running session when its open period
    ends; this class only reports the periods.
    """

    timezone: str
    strict: bool
    windows: tuple[Window, ...]
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _always_open: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", load_zone(self.timezone))
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be true or false, not {self.strict!r}")
        if not 1 <= len(self.windows) <= MAX_WINDOWS:
            raise ValueError(f"a schedule needs 1 to {MAX_WINDOWS} windows")
        object.__setattr__(self, "_always_open", _covers_week(self.windows))

    @classmethod
    def from_values(
        cls, timezone: str, windows: Sequence[Mapping[str, Any]], strict: bool = False
    ) -> Schedule:
        """Build a schedule from plain values; raises L{ValueError} naming the bad value.

        Each window is a mapping with exactly the keys C{days}, C{start} and C{end}.
        """
        load_zone(timezone)
        given: object = windows
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise ValueError(f"windows must be a list, not {windows!r}")
        if not 1 <= len(windows) <= MAX_WINDOWS:
            raise ValueError(f"a schedule needs 1 to {MAX_WINDOWS} windows, not {len(windows)}")
        parsed: list[Window] = []
        for number, spec in enumerate(windows, 1):
            if not isinstance(spec, Mapping):
                raise ValueError(f"window {number}: expected a mapping with days, start and end")
            unknown = sorted(str(key) for key in spec if key not in ("days", "start", "end"))
            if unknown:
                raise ValueError(f"window {number}: unknown key {unknown[0]!r}")
            missing = [key for key in ("days", "start", "end") if key not in spec]
            if missing:
                raise ValueError(f"window {number}: missing key {missing[0]!r}")
            try:
                parsed.append(Window.from_values(spec["days"], spec["start"], spec["end"]))
            except ValueError as error:
                raise ValueError(f"window {number}: {error}") from None
        return cls(timezone, strict, tuple(parsed))

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    @property
    def always_open(self) -> bool:
        """Whether the windows cover the whole week, so the schedule never closes."""
        return self._always_open

    def describe(self) -> str:
        """For example C{mon-fri 08:00-18:00, sat 22:00-02:00 (Europe/Berlin)}."""
        return f"{', '.join(window.describe() for window in self.windows)} ({self.timezone})"

    def is_open(self, now: datetime) -> bool:
        """Whether C{now} (aware) is inside a window."""
        return self.window_at(now) is not None

    def window_at(self, now: datetime) -> OpenWindow | None:
        """The open period containing C{now} (aware, any zone), or C{None} when closed.

        Windows are start inclusive, end exclusive.  Overlapping or adjacent
        windows (also across midnight) form one period, so C{end} is when the
        schedule really closes.
        """
        instant = _as_utc(now)
        local_day = instant.astimezone(self._zone).date()
        window = next(
            (
                window
                for start, end, window in self._occurrences(
                    local_day - 2 * _ONE_DAY, local_day + _ONE_DAY
                )
                if start <= instant < end
            ),
            None,
        )
        if window is None:
            return None
        if self._always_open:
            return OpenWindow(None, None, window)
        span = 4
        while span <= _MAX_SPAN_DAYS:
            first, last = local_day - span * _ONE_DAY, local_day + span * _ONE_DAY
            for start, end in self._periods(first, last):
                if start <= instant < end:
                    # Occurrences opening outside [first, last] cannot touch the period.
                    if start > self._instant_of(first + _ONE_DAY) and end < self._instant_of(
                        last + _ONE_DAY
                    ):
                        return OpenWindow(
                            start.astimezone(self._zone), end.astimezone(self._zone), window
                        )
                    break
            span *= 2
        raise RuntimeError(f"the open period around {now} does not end")  # pragma: no cover

    def next_opening(self, now: datetime) -> datetime | None:
        """When the schedule next opens after C{now} (aware), in the schedule's zone.

        When C{now} is inside an open period this is the start of the following
        period.  C{None} when the schedule never closes (L{always_open}).
        """
        instant = _as_utc(now)
        if self._always_open:
            return None
        current = self.window_at(instant)
        if current is not None and current.end is not None:
            instant = current.end.astimezone(UTC)
        local_day = instant.astimezone(self._zone).date()
        span = 8
        while span <= _MAX_SPAN_DAYS:
            for start, _ in self._periods(local_day - 2 * _ONE_DAY, local_day + span * _ONE_DAY):
                if start > instant:
                    return start.astimezone(self._zone)
            span *= 2
        return None  # pragma: no cover (every window opens at least every other week)

    def _instant_of(self, day: date) -> datetime:
        return self._instant(datetime.combine(day, time()))

    def _instant(self, wall: datetime) -> datetime:
        """The earliest instant (in UTC) at which the local clock shows C{wall} or later."""
        zone = self._zone
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if first.astimezone(zone).replace(tzinfo=None) == wall:
            return first  # exists (the first of two when the clocks fall back)
        # Skipped when the clocks spring forward: find the moment of the change.  The two
        # folds use the offsets before and after it, so they bracket the change.
        other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        low = math.floor(min(first, other).timestamp())
        high = math.ceil(max(first, other).timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
                high = middle
            else:
                low = middle
        return datetime.fromtimestamp(high, UTC)

    def _occurrences(self, first: date, last: date) -> list[tuple[datetime, datetime, Window]]:
        """Real (UTC) intervals of the windows opening on local dates C{first} to C{last}."""
        out: list[tuple[datetime, datetime, Window]] = []
        day = first
        while day <= last:
            for window in self.windows:
                wall = window.wall_interval(day)
                if wall is not None:
                    start, end = self._instant(wall[0]), self._instant(wall[1])
                    if start < end:  # empty when it lies wholly in a skipped hour
                        out.append((start, end, window))
            day += _ONE_DAY
        out.sort(key=lambda item: item[0])
        return out

    def _periods(self, first: date, last: date) -> list[tuple[datetime, datetime]]:
        """The occurrences opening on C{first} to C{last}, chained into disjoint periods."""
        periods: list[tuple[datetime, datetime]] = []
        for start, end, _ in self._occurrences(first, last):
            if periods and start <= periods[-1][1]:
                periods[-1] = (periods[-1][0], max(periods[-1][1], end))
            else:
                periods.append((start, end))
        return periods


# YAML checkers (see shared.schema).


def _check_timezone(node: yaml.Node, where: Where) -> str:
    name = schema.string(1, 128)(node, where)
    try:
        load_zone(name)
    except ValueError as error:
        raise where.error(node, str(error)) from None
    return name


def _check_days(node: yaml.Node, where: Where) -> tuple[int, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise where.error(node, "expected a list of days such as [mon-fri, sat]")
    if not 1 <= len(node.value) <= 7:
        raise where.error(node, "expected 1 to 7 entries")
    seen: list[int] = []
    for index, item in enumerate(node.value):
        item_where = where.child(index)
        text = schema.string(1, 32)(item, item_where)
        try:
            _add_days(seen, parse_day_item(text), text)
        except ValueError as error:
            raise item_where.error(item, str(error)) from None
    return tuple(sorted(seen))


def _time_checker(is_end: bool) -> schema.Checker[int]:
    def checker(node: yaml.Node, where: Where) -> int:
        if not isinstance(node, yaml.ScalarNode):
            raise where.error(node, "expected a time HH:MM")
        # Read the scalar's own text: YAML 1.1 resolves an unquoted 8:00 or 22:30 to a
        # base-60 integer (480, 1350), while 08:00 stays a string.  The text keeps both
        # forms exact (and rejects 8:5, which the integer would silently make 08:05).
        try:
            return parse_time(str(node.value), is_end=is_end)
        except ValueError as error:
            raise where.error(node, str(error)) from None

    return checker


_WINDOW_FIELDS = {
    "days": Field(_check_days, required=True),
    "start": Field(_time_checker(is_end=False), required=True),
    "end": Field(_time_checker(is_end=True), required=True),
}


def _value_node(node: yaml.MappingNode, key: str) -> yaml.Node:
    pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
    for key_node, value_node in pairs:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node
    return node  # pragma: no cover (the key was required)


def _check_window(node: yaml.Node, where: Where) -> Window:
    values = schema.mapping(node, where, _WINDOW_FIELDS)
    try:
        return Window(values["days"], values["start"], values["end"])
    except ValueError as error:
        assert isinstance(node, yaml.MappingNode)
        raise where.child("end").error(_value_node(node, "end"), str(error)) from None


_SCHEDULE_FIELDS = {
    "timezone": Field(_check_timezone, required=True),
    "strict": Field(schema.boolean, default=False),
    "windows": Field(schema.list_of(_check_window, 1, MAX_WINDOWS), required=True),
}


def schedule_checker(node: yaml.Node, where: Where) -> Schedule:
    """Check a C{schedule} mapping (C{timezone}, C{strict}, C{windows}) into a L{Schedule}."""
    values = schema.mapping(node, where, _SCHEDULE_FIELDS)
    try:
        return Schedule(values["timezone"], values["strict"], tuple(values["windows"]))
    except ValueError as error:  # pragma: no cover (every part was checked above)
        raise where.error(node, str(error)) from None
