"""Frame buffers, the camera reliability rule, QoS profiles and diagnostics values: no DDS."""

import types

from diagnostic_msgs.msg import DiagnosticStatus
import pytest
from rclpy.qos import ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from vicrop_ros.ros import diagnostics, qos
from vicrop_ros.ros.cameras import CameraConfig, Cameras
from vicrop_ros.ros.frames import FrameBuffer, FrameChoiceError, header_stamp_ns

S = 1_000_000_000  # nanoseconds per second
RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def frame_bytes(stamp_ns: int, frame_id: str = 'cam') -> bytes:
    """Return a serialized 2x2 rgb8 Image stamped ``stamp_ns``."""
    msg = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, S)
    msg.header.frame_id = frame_id
    return serialize_message(msg)


def filled_buffer(*stamps_s: float, length: int = 30) -> FrameBuffer:
    buffer = FrameBuffer('head', length, Image)
    for stamp in stamps_s:
        buffer.add(frame_bytes(int(stamp * S)), received_ns=int(stamp * S) + 1)
    return buffer


def test_the_header_stamp_is_read_from_the_serialized_bytes():
    assert header_stamp_ns(frame_bytes(1_700_000_000 * S + 123)) == 1_700_000_000 * S + 123


def test_a_zero_header_stamp_takes_the_receive_time():
    buffer = FrameBuffer('head', 3, Image)
    buffer.add(frame_bytes(0), received_ns=42 * S)
    assert buffer.newest_stamp_ns() == 42 * S and buffer.received == 1


def test_the_buffer_keeps_the_last_frames_only():
    buffer = filled_buffer(1, 2, 3, 4, length=2)
    assert buffer.received == 4
    assert buffer.choose(1 * S, 4 * S, 10 * S).stamp_ns == 3 * S  # 1 and 2 are gone


def test_newest_frame_and_its_age():
    buffer = filled_buffer(10.0, 10.1, 10.2)
    assert buffer.choose(0, int(10.5 * S), 1 * S).stamp_ns == int(10.2 * S)
    with pytest.raises(FrameChoiceError) as stale:
        buffer.choose(0, int(12.0 * S), 1 * S)
    assert stale.value.status == 'STALE_IMAGE' and 'newest head frame is 1.800 s old' in str(
        stale.value
    )


def test_the_newest_frame_is_the_latest_stamp_when_stamps_go_backwards():
    buffer = filled_buffer(10.0, 10.2, 10.1)  # the 10.1 frame arrives last
    assert buffer.newest_stamp_ns() == int(10.2 * S)
    assert buffer.choose(0, int(10.5 * S), 1 * S).stamp_ns == int(10.2 * S)
    # A request for a frame after the newest waits for a later stamp, not a later arrival.
    request = buffer.request(int(10.28 * S), int(10.3 * S), 1 * S)
    buffer.add(frame_bytes(int(10.15 * S)), received_ns=int(10.4 * S))
    assert not request.decided
    buffer.add(frame_bytes(int(10.3 * S)), received_ns=int(10.5 * S))
    assert request.decided and request.result().stamp_ns == int(10.3 * S)


def test_the_frame_nearest_to_a_stamp_and_how_far_it_may_be():
    buffer = filled_buffer(10.0, 10.1, 10.2)
    assert buffer.choose(int(10.12 * S), 99 * S, 1 * S).stamp_ns == int(10.1 * S)
    with pytest.raises(FrameChoiceError) as far:
        buffer.choose(5 * S, 99 * S, 1 * S)
    assert far.value.status == 'STALE_IMAGE' and 'requested stamp' in str(far.value)


def test_no_frame_yet():
    with pytest.raises(FrameChoiceError) as none:
        FrameBuffer('wrist', 3, Image).choose(0, S, S)
    assert none.value.status == 'NO_IMAGE'
    assert str(none.value) == 'no frame received on the wrist camera yet'


def test_requesting_drains_and_awaiting_waits_for_a_frame_stamped_after_the_newest():
    buffer = filled_buffer(10.0, 10.2)
    drained = []

    def drain(wait_s, until):  # a fake of CameraNode.drain: a frame comes during the wait
        drained.append((wait_s, until is not None))
        if until is not None:
            buffer.add(frame_bytes(int(10.45 * S)), received_ns=int(10.5 * S))
            assert until()

    cameras = Cameras({'head': types.SimpleNamespace(buffer=buffer)}, lambda: int(10.5 * S), drain)
    request = cameras.request('head', int(10.4 * S), S)
    assert not request.decided  # decided later
    assert drained == [(0.0, False)]  # what had arrived was taken first
    assert cameras.await_frame('head', request, wait_s=5.0).stamp_ns == int(10.45 * S)
    assert drained[-1] == (5.0, True)


def cameras_of(**buffers) -> Cameras:
    """Cameras over plain frame buffers (nothing to drain)."""
    return Cameras(
        {name: types.SimpleNamespace(buffer=buffer) for name, buffer in buffers.items()},
        now_ns=lambda: int(10.5 * S),
    )


def test_a_frame_that_does_not_come_is_chosen_from_the_kept_frames():
    cameras = cameras_of(head=filled_buffer(10.0, 10.2))
    request = cameras.request('head', int(10.4 * S), S)
    assert not request.decided
    assert cameras.await_frame('head', request, wait_s=0.01).stamp_ns == int(10.2 * S)
    newest = cameras.request('head', 0, S)
    assert newest.decided and newest.result().stamp_ns == int(10.2 * S)
    with pytest.raises(FrameChoiceError) as missing:
        cameras.request('wrist', 0, S)
    assert missing.value.status == 'NOT_READY'


def test_a_request_is_decided_by_the_frame_it_waits_for_and_not_later():
    buffer = filled_buffer(10.0, 10.1, length=3)
    at_stamp = buffer.request(int(10.24 * S), int(10.2 * S), S)
    newest = buffer.request(0, int(12.0 * S), S)  # the newest (10.1) is 1.9 s old: waits
    assert not at_stamp.decided and not newest.decided and buffer.waiting == 2
    buffer.add(frame_bytes(int(10.2 * S)), received_ns=int(10.25 * S))  # before the stamp
    assert not at_stamp.decided and newest.result().stamp_ns == int(10.2 * S)  # fresh now
    for seconds in (10.3, 10.4, 10.5, 10.6):  # the ring (3) rolls past 10.2 meanwhile
        buffer.add(frame_bytes(int(seconds * S)), received_ns=int(seconds * S))
    assert at_stamp.result().stamp_ns == int(10.2 * S)  # nearest when 10.3 came
    assert buffer.waiting == 0
    late = buffer.request(int(10.7 * S), int(10.6 * S), S)
    late.withdraw()
    assert buffer.waiting == 0


@pytest.mark.parametrize(
    ('choice', 'publishers', 'expected'),
    [
        ('auto', [], BEST_EFFORT),  # nobody yet: match whoever comes
        ('auto', [RELIABLE], RELIABLE),
        ('auto', [RELIABLE, RELIABLE], RELIABLE),
        ('auto', [RELIABLE, BEST_EFFORT], BEST_EFFORT),
        ('auto', [BEST_EFFORT], BEST_EFFORT),
        ('reliable', [BEST_EFFORT], RELIABLE),
        ('best_effort', [RELIABLE], BEST_EFFORT),
    ],
)
def test_camera_reliability_follows_the_publishers_when_auto(choice, publishers, expected):
    assert qos.camera_reliability(choice, publishers) == expected


def test_camera_reliability_refuses_an_unknown_choice():
    with pytest.raises(ValueError, match='auto, reliable, best_effort'):
        qos.camera_reliability('sometimes', [])


def test_large_images_keep_at_most_two_per_subscriber():
    assert qos.LARGE_IMAGES.depth <= 2 and qos.LARGE_IMAGES.reliability == RELIABLE
    assert qos.camera_qos(RELIABLE, 30).depth == 30
    assert qos.camera_qos(BEST_EFFORT, 5).reliability == BEST_EFFORT


def camera_like(buffer: FrameBuffer, lost=0, incompatible=0, warnings=()):
    """Return a camera as diagnostics reads it (no subscription)."""
    return types.SimpleNamespace(
        buffer=buffer, config=CameraConfig('head', 'head_camera/image_raw', 'raw', 'auto', 30),
        topic='/head_camera/image_raw', reliability=RELIABLE, publisher_count=1,
        frames_lost=lost, incompatible_events=incompatible, warnings=list(warnings),
    )  # fmt: skip


def values_of(status: DiagnosticStatus) -> dict:
    return {kv.key: kv.value for kv in status.values}


def test_camera_diagnostics_ok_stale_and_empty():
    fresh = diagnostics.camera_status(
        '/vicrop', 'cpu', camera_like(filled_buffer(10.0)), 10 * S, 1
    )
    assert fresh.level == DiagnosticStatus.OK and fresh.name == '/vicrop: head camera'
    values = values_of(fresh)
    assert values['frames_received'] == '1' and values['subscribed_reliability'] == 'reliable'
    stale = diagnostics.camera_status('/v', 'cpu', camera_like(filled_buffer(10.0)), 12 * S, 1)
    assert stale.level == DiagnosticStatus.WARN and values_of(stale)['age_s'] == '2.000'
    empty = diagnostics.camera_status('/v', 'cpu', camera_like(FrameBuffer('h', 3, Image)), S, 1)
    assert empty.level == DiagnosticStatus.WARN and empty.message == 'no frame received'


def test_camera_diagnostics_warn_with_the_fix_when_frames_are_lost():
    camera = camera_like(filled_buffer(10.0), lost=7, warnings=['[lost] use reliability auto'])
    report = diagnostics.camera_status('/v', 'cpu', camera, 10 * S, 1)
    assert report.level == DiagnosticStatus.WARN
    assert report.message == '7 frames lost: use reliability auto'
    assert values_of(report)['frames_lost'] == '7'
    camera = camera_like(filled_buffer(10.0), incompatible=1, warnings=['[incompatible] fix it'])
    report = diagnostics.camera_status('/v', 'cpu', camera, 10 * S, 1)
    assert report.level == DiagnosticStatus.WARN and 'incompatible QoS: fix it' in report.message


def test_model_and_question_diagnostics():
    failed = diagnostics.model_status('/v', 'failed', "cannot load model 'x': gone", 'x', '')
    assert (
        failed.level == DiagnosticStatus.ERROR and failed.message == "cannot load model 'x': gone"
    )
    active = diagnostics.model_status('/v', 'active', '', 'x', 'cuda:0')
    assert active.level == DiagnosticStatus.OK and values_of(active)['device'] == 'cuda:0'
    loading = diagnostics.model_status('/v', 'loading', 'the model is loading', 'x', '')
    assert loading.level == DiagnosticStatus.WARN and loading.message == 'the model is loading'
    full = diagnostics.questions_status(
        '/v', '', 4, 4, 5, [10.0, 30.0, 20.0], {'OK': 3}, ['OK', 'BUSY']
    )
    values = values_of(full)
    assert full.level == DiagnosticStatus.WARN and full.message == '4 of 4 waiting'
    assert values['answers_OK'] == '3' and values['answers_BUSY'] == '0'
    assert values['last_latency_ms'] == '20.0' and values['p95_latency_ms'] == '30.0'
    idle = diagnostics.questions_status('/v', '', 0, 4, 0, [], {}, ['OK'])
    assert idle.level == DiagnosticStatus.OK and values_of(idle)['p95_latency_ms'] == 'nan'
