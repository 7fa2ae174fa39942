"""Time buckets of the telemetry series (`GET /v1/telemetry/series`): their sizes, the window a
query covers when it names none, how many buckets a window holds, and each record's bucket start
as SQL, so the database groups the rows and only the totals travel.

Buckets are whole UTC minutes, hours or days (no daylight saving in UTC, so a day is always 24
hours and every bucket of a size is as long as the next).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal_column, type_coerce
from sqlalchemy.orm import InstrumentedAttribute

from functions.db.columns import UTCDateTime

Bucket = Literal["minute", "hour", "day"]

BUCKET_SIZES: dict[str, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
# A window without `since` ends at `until` (else now) and starts this long before.
DEFAULT_SPANS: dict[str, timedelta] = {
    "minute": timedelta(hours=24),
    "hour": timedelta(hours=24),
    "day": timedelta(days=90),
}
# The most buckets one answer may span: 2000 hours is 83 days; a longer window takes days.
MAX_BUCKETS = 2000

# The units as SQL literals, from this fixed table only (they are spelled into the statement).
_POSTGRESQL_UNITS = {"minute": "'minute'", "hour": "'hour'", "day": "'day'"}
# SQLite keeps timestamps as naive UTC text (functions.db.columns): cut the text to the bucket.
_SQLITE_FORMATS = {
    "minute": "'%Y-%m-%d %H:%M:00'",
    "hour": "'%Y-%m-%d %H:00:00'",
    "day": "'%Y-%m-%d 00:00:00'",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window(
    bucket: Bucket, since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The [since, until) a query covers: `until` defaults to `now`, `since` to the start of the
    bucket the default span before `until` falls in (so the first bucket is a whole one)."""
    end = until if until is not None else now
    start = since if since is not None else floor(end - DEFAULT_SPANS[bucket], bucket)
    return start, end


def floor(moment: datetime, bucket: Bucket) -> datetime:
    """The start of the bucket `moment` falls in."""
    size = BUCKET_SIZES[bucket]
    return _EPOCH + ((moment - _EPOCH) // size) * size


def bucket_count(bucket: Bucket, since: datetime, until: datetime) -> int:
    """How many buckets [since, until) touches: 0 for an empty window."""
    if until <= since:
        return 0
    last = floor(until - timedelta(microseconds=1), bucket)
    return (last - floor(since, bucket)) // BUCKET_SIZES[bucket] + 1


def bucket_start(
    bucket: Bucket, column: InstrumentedAttribute[datetime], dialect: str
) -> ColumnElement[datetime]:
    """`column`'s bucket start, computed by the database (read back as an aware UTC datetime).

    The unit is spelled into the SQL, not bound: PostgreSQL must see the same expression in the
    SELECT and the GROUP BY, and two bound parameters are two expressions to it."""
    start: ColumnElement[Any]
    if dialect == "postgresql":
        unit: ColumnElement[str] = literal_column(_POSTGRESQL_UNITS[bucket])
        start = func.date_trunc(unit, column, literal_column("'UTC'"))
    elif dialect == "sqlite":
        start = func.strftime(literal_column(_SQLITE_FORMATS[bucket]), column)
    else:
        raise NotImplementedError(f"no time buckets on {dialect}: PostgreSQL or SQLite")
    return type_coerce(start, UTCDateTime())
