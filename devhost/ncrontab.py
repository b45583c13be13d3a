"""Timer trigger schedules as the Functions host reads them: NCRONTAB expressions (the NCrontab
library, through the timer extension's ``CronSchedule``) and, failing that, a .NET TimeSpan
(the extension's ``ConstantSchedule``).

NCRONTAB: six fields ``{second} {minute} {hour} {day} {month} {day-of-week}``, or five without
the seconds (the host counts the fields: five means no seconds, anything else must be six).
Fields are separated by spaces. Each field is ``*``, a value, a range ``a-b`` (swapped when
``a > b``), any of these with a step (``*/5``, ``1-30/2``, ``5/10`` = from 5 to the maximum
every 10), or a comma-separated list of them. Months (1-12) and days of the week (0-6, 0 is
Sunday; 7 is not accepted) may be English names or any prefix of one, in any case (``Jan``,
``mon``, ``T`` = Tuesday, the first name it begins). A step below 1 counts as 1. A day must
match both the day-of-month and the day-of-week fields (NCrontab's rule, unlike Vixie cron,
which accepts either when both are restricted); days a month does not have are skipped.

Times are UTC: the host uses the machine's local time zone (``WEBSITE_TIME_ZONE``), which
devhost does not model.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from calendar import monthrange
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .local_settings import ConfigError, parse_duration

# What NCrontab answers for a schedule with no further occurrence (DateTime.MaxValue).
NEVER = datetime.max.replace(tzinfo=UTC)
_NUMBER = re.compile(r"[0-9]+")
_STEP = re.compile(r"[+-]?[0-9]+")  # .NET int.Parse
_BARE_NUMBER = re.compile(r"^\s*[+-]?[0-9]+(\.[0-9]*)?\s*$")


class ScheduleError(ValueError):
    """A schedule expression the host would refuse (or devhost does, when the text says so)."""


class _FieldError(ValueError):
    """One field of an NCRONTAB expression cannot be read."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day", 1, 31)
_MONTH = _Field("month", 1, 12, ("January", "February", "March", "April", "May", "June", "July",
                                  "August", "September", "October", "November", "December"))
_DAY_OF_WEEK = _Field("day-of-week", 0, 6, ("Sunday", "Monday", "Tuesday", "Wednesday",
                                             "Thursday", "Friday", "Saturday"))
_FIELDS = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _DAY_OF_WEEK)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression; each field is the sorted tuple of the values it allows."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]  # 0 is Sunday

    # What the host reports as the schedule's AdjustForDST in the TimerInfo it passes on.
    adjust_for_dst = True

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``, in UTC, at whole seconds (the
        fraction of ``moment``'s second is ignored, as NCrontab does); :data:`NEVER` when there
        is none. A naive ``moment`` is taken as UTC."""
        base = _utc(moment).replace(microsecond=0)
        try:
            start = base + timedelta(seconds=1)
        except OverflowError:
            return NEVER
        for day in self._days_from(start.date()):
            lower = (start.hour, start.minute, start.second) if day == start.date() else (0, 0, 0)
            found = self._time_on_or_after(*lower)
            if found is not None:
                return datetime(day.year, day.month, day.day, *found, tzinfo=UTC)
        return NEVER

    def runs_more_than_once_a_minute(self, now: datetime) -> bool:
        """The host's test for turning schedule monitoring off: every field but the seconds
        allows every value, and more than one occurrence falls in the minute after ``now``."""
        if (self.minutes, self.hours, self.days, self.months, self.days_of_week) != _EVERY:
            return False
        end = _utc(now) + timedelta(minutes=1)
        first = self.next_after(now)
        return first < end and self.next_after(first) < end

    def _days_from(self, first: date) -> Iterator[date]:
        """The days, from ``first`` on, that the day, month and day-of-week fields allow."""
        for year in range(first.year, NEVER.year + 1):
            for month in self.months:
                if (year, month) < (first.year, first.month):
                    continue
                last_day = monthrange(year, month)[1]
                for day in self.days:
                    if day > last_day:
                        break
                    if (year, month) == (first.year, first.month) and day < first.day:
                        continue
                    found = date(year, month, day)
                    if (found.weekday() + 1) % 7 in self.days_of_week:
                        yield found

    def _time_on_or_after(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
        """The first (hour, minute, second) the fields allow at or after the one given."""
        for h in self.hours[bisect_left(self.hours, hour):]:
            m_from = minute if h == hour else 0
            for m in self.minutes[bisect_left(self.minutes, m_from):]:
                s_from = second if (h, m) == (hour, minute) else 0
                i = bisect_left(self.seconds, s_from)
                if i < len(self.seconds):
                    return h, m, self.seconds[i]
        return None

    def __str__(self) -> str:
        return f"Cron: '{self.expression}'"


_EVERY = (tuple(range(0, 60)), tuple(range(0, 24)), tuple(range(1, 32)), tuple(range(1, 13)),
          tuple(range(0, 7)))


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: the next occurrence is always ``interval`` after the last one (the
    last run's time, so a run that took longer than the interval is followed at once)."""

    expression: str
    interval: timedelta

    adjust_for_dst = False

    def next_after(self, moment: datetime) -> datetime:
        return _utc(moment) + self.interval

    def runs_more_than_once_a_minute(self, now: datetime) -> bool:
        return self.interval < timedelta(minutes=1)

    def __str__(self) -> str:
        return f"Constant: {self.expression}"


Schedule = CronSchedule | IntervalSchedule


def parse_cron(expression: str) -> CronSchedule:
    """An NCRONTAB expression of five or six fields; :class:`ScheduleError` says what is wrong."""
    tokens = [t for t in expression.split(" ") if t]
    if len(tokens) == 5:
        tokens.insert(0, "0")
    elif len(tokens) != 6:
        raise ScheduleError(f"{expression!r} is not a valid NCRONTAB expression: it has "
                            f"{len(tokens)} fields, not six ({{second}} {{minute}} {{hour}} "
                            "{day} {month} {day-of-week}) or five (without the seconds)")
    try:
        values = [_parse_field(token, field) for token, field in zip(tokens, _FIELDS, strict=True)]
    except _FieldError as exc:
        raise ScheduleError(f"{expression!r} is not a valid NCRONTAB expression: {exc}") from None
    return CronSchedule(expression, *values)


def parse_schedule(expression: str) -> Schedule:
    """A timer trigger's schedule as the host reads it: NCRONTAB first, then a TimeSpan
    (``hh:mm:ss``). Of the TimeSpan forms devhost accepts ``[d.]hh:mm[:ss[.fffffff]]`` with
    hours below 24, and refuses a bare number (.NET reads ``"5"`` as five days) and
    ``"24:00:00"``-style hours (which .NET reads as days), naming the form to write instead."""
    if ":" not in expression:
        try:
            return parse_cron(expression)
        except ScheduleError:
            if _BARE_NUMBER.match(expression):
                raise ScheduleError(f"{expression!r} is not an NCRONTAB expression; the host "
                                    "would read it as a TimeSpan of that many days, which devhost "
                                    "refuses: write d.hh:mm:ss") from None
            raise
    try:
        seconds = parse_duration(expression)
    except ConfigError as exc:
        raise ScheduleError(f"{expression!r} is neither an NCRONTAB expression nor a TimeSpan "
                            f"devhost reads ([d.]hh:mm[:ss], e.g. 1.00:00:00 for a day): "
                            f"{exc}") from None
    if seconds <= 0:
        raise ScheduleError(f"{expression!r}: a TimeSpan schedule must be longer than zero")
    return IntervalSchedule(expression, timedelta(seconds=seconds))


def _parse_field(text: str, field: _Field) -> tuple[int, ...]:
    allowed: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _FieldError(f"{field.name} field {text!r}: an empty list item")
        allowed.update(_parse_part(part, field, text))
    return tuple(sorted(allowed))


def _parse_part(part: str, field: _Field, text: str) -> range:
    step = 1
    slash = part.find("/")
    if slash > 0:
        if not _STEP.fullmatch(part[slash + 1:]):
            raise _FieldError(f"{field.name} field {text!r}: the step {part[slash + 1:]!r} is "
                                "not a whole number")
        step = max(1, int(part[slash + 1:]))
        part = part[:slash]
        stepped = True
    else:
        stepped = False
    if part == "*":
        first, last = field.low, field.high
    elif part.find("-") > 0:
        start, _, end = part.partition("-")
        first, last = sorted((_value(start, field, text), _value(end, field, text)))
    else:
        first = _value(part, field, text)
        last = field.high if stepped else first
        first, last = min(first, last), max(first, last)
    for value in (first, last):
        if not field.low <= value <= field.high:
            raise _FieldError(f"{field.name} field {text!r}: {value} is outside "
                                f"{field.low}-{field.high}")
    return range(first, last + 1, step)


def _value(text: str, field: _Field, whole: str) -> int:
    if _NUMBER.fullmatch(text):
        return int(text)
    folded = text.casefold()
    if text and not text[0].isdigit():
        for i, name in enumerate(field.names):
            if name.casefold().startswith(folded):
                return field.low + i
    known = f" (or a name: {', '.join(field.names)})" if field.names else ""
    raise _FieldError(f"{field.name} field {whole!r}: {text!r} is not a number between "
                        f"{field.low} and {field.high}{known}")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
