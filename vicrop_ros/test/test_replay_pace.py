"""The replay's pace: bag time to wall time at a rate, with lockstep pauses left out (no DDS)."""

from vicrop_ros.ros.replayer import Pace


class FakeMonotonic:
    """A monotonic clock the test moves by hand (a fake: pacing logic without waiting)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bag_time_is_due_at_its_rate_and_pauses_shift_what_follows():
    clock = FakeMonotonic()
    pace = Pace(start_ns=5_000_000_000, rate=10.0, monotonic=clock)
    assert pace.wall_due(5_000_000_000) == 100.0
    assert pace.wall_due(7_000_000_000) == 100.2  # 2 bag seconds at rate 10
    clock.now = 100.1
    with pace.paused():
        clock.now = 103.1  # waiting 3 s for an answer
    assert abs(pace.wall_due(7_000_000_000) - 103.2) < 1e-9
    assert abs(pace.elapsed_s() - 0.1) < 1e-9  # the pause is not playing time
