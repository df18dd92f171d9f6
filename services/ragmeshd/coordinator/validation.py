"""Checks on coordinator requests; each failure names the field, the value and the limit."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Sequence

from ragmeshd.settings import CoordinatorSettings

# The search service's collection names (see ragmesh.search.v1.Collection.name).
_COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RATINGS = (-1, 0, 1)


class InvalidRequestError(ValueError):
    """The request breaks a documented limit; the message says which and how."""


def check_query(query: str, settings: CoordinatorSettings) -> str:
    if not query.strip():
        raise InvalidRequestError("query is empty or only whitespace")
    if len(query) > settings.max_query_chars:
        raise InvalidRequestError(
            f"query has {len(query)} characters; the limit is {settings.max_query_chars}"
        )
    return query


def check_collections(names: Sequence[str], settings: CoordinatorSettings) -> list[str]:
    if len(names) > settings.max_collections:
        raise InvalidRequestError(
            f"collections names {len(names)} collections; the limit is {settings.max_collections}"
        )
    for index, name in enumerate(names):
        if not _COLLECTION_NAME.match(name):
            raise InvalidRequestError(
                f"collections[{index}] {name!r} is not a collection name (1 to 63 characters of"
                " a-z, 0-9, '_' and '-', starting with a letter or digit)"
            )
    if len(set(names)) != len(names):
        raise InvalidRequestError("collections names the same collection twice")
    return list(names)


def check_range(value: int, field: str, *, default: int, low: int, high: int) -> int:
    """`value`, or `default` for 0; refuses anything outside low..high."""
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidRequestError(f"{field} is {value}; it must be {low} to {high} (0: {default})")
    return value


def check_enum(value: int, field: str, allowed: Sequence[int]) -> int:
    if value not in allowed:
        raise InvalidRequestError(f"{field} is {value}, not a known value")
    return value


def parse_interaction_id(value: str) -> uuid.UUID:
    if not value:
        raise InvalidRequestError("interaction_id is empty")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError(
            f"interaction_id {value[:64]!r} is not an interaction id (a UUID as"
            " AskSummary.interaction_id gives it)"
        ) from None


def check_rating(rating: int, field: str = "rating") -> int:
    if rating not in RATINGS:
        raise InvalidRequestError(f"{field} is {rating}; it must be -1, 0 or +1")
    return rating


def check_outcome(outcome: str, settings: CoordinatorSettings) -> str:
    if len(outcome) > settings.max_outcome_chars:
        raise InvalidRequestError(
            f"outcome has {len(outcome)} characters; the limit is {settings.max_outcome_chars}"
        )
    return outcome


def check_export_ratings(ratings: Sequence[int]) -> tuple[int, ...]:
    for index, rating in enumerate(ratings):
        check_rating(rating, f"ratings[{index}]")
    if len(set(ratings)) != len(ratings):
        raise InvalidRequestError("ratings names the same rating twice")
    return tuple(ratings)


def check_time_range(
    start: datetime.datetime | None, end: datetime.datetime | None
) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    if start is not None and end is not None and end <= start:
        raise InvalidRequestError(
            f"end_time {end.isoformat()} is not after start_time {start.isoformat()}"
        )
    return start, end
