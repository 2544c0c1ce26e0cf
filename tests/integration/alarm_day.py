"""The simulated shop day both alarm integration tests replay: four hours with an outage and a surge."""

from shoplake.alarm import day_slice, simulate_day

INCIDENTS = [
    {
        "incident_id": "a",
        "kind": "outage",
        "start": "2011-11-09T10:33:00Z",
        "end": "2011-11-09T11:03:00Z",
        "multiplier": 0.05,
    },
    {
        "incident_id": "b",
        "kind": "surge",
        "start": "2011-11-09T12:44:00Z",
        "end": "2011-11-09T13:14:00Z",
        "multiplier": 4.0,
    },
]


def four_hours_with_incidents():
    """10:00–14:00 of a simulated day (8,000 orders a day) with the two incidents above."""
    return day_slice(simulate_day(seed=7, orders_per_day=8_000, incidents=INCIDENTS), 10, 14)
