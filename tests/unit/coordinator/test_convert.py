"""Request times out of the range a Timestamp allows are the caller's error, not ours."""

from __future__ import annotations

import datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmeshd.coordinator.convert import optional_time
from ragmeshd.coordinator.validation import InvalidRequestError


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253402300800, 0), (-62135596801, 0), (0, -1), (0, 10**9)],
)
def test_out_of_range_timestamps_are_invalid_requests(seconds: int, nanos: int) -> None:
    request = pb.ExportInteractionsRequest(start_time=Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(InvalidRequestError, match="start_time is not a valid time"):
        optional_time(request, "start_time")


def test_the_extremes_of_the_range_and_unset() -> None:
    request = pb.ExportInteractionsRequest(
        start_time=Timestamp(seconds=-62135596800), end_time=Timestamp(seconds=253402300799)
    )
    assert optional_time(request, "start_time") == datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
    assert optional_time(request, "end_time") == datetime.datetime(
        9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC
    )
    assert optional_time(pb.ExportInteractionsRequest(), "start_time") is None
