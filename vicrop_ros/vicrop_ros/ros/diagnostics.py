"""
The node's health as ``diagnostic_msgs/DiagnosticStatus`` values: pure functions, no node.

One status each for the model, the questions and every camera, named ``<node>: <part>``; the
node publishes them together on ``/diagnostics`` once a second.
"""

from collections.abc import Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from .qos import policy_name

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def status(node: str, part: str, level: bytes, message: str, hardware_id: str, **values):
    """Return one DiagnosticStatus of ``node`` (values become strings)."""
    return DiagnosticStatus(
        level=level,
        name=f'{node}: {part}',
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
    )


def model_status(node: str, state: str, reason: str, model: str, device: str):
    """
    Report the model: OK while ``state`` is 'active', ERROR when it failed to load, else WARN.

    ``reason`` is why questions are not served ('' when active; the load error after a failure).
    """
    if state == 'active':
        level, message = OK, 'serving questions'
    elif state == 'failed':
        level, message = ERROR, reason
    else:
        level, message = WARN, reason or f'{state}: not serving questions'
    return status(node, 'model', level, message, device, state=state, model=model, device=device)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` quantile of ``values`` (nearest rank), NaN when empty."""
    if not values:
        return float('nan')
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def questions_status(
    node: str,
    device: str,
    depth: int,
    capacity: int,
    in_flight: int,
    latencies_ms: Sequence[float],
    counts: Mapping[str, int],
    status_names: Sequence[str],
):
    """Report queue depth (WARN when full), latencies and answers per status."""
    last = latencies_ms[-1] if latencies_ms else float('nan')
    p95 = percentile(latencies_ms, 0.95)
    return status(
        node, 'questions', WARN if depth >= capacity else OK, f'{depth} of {capacity} waiting',
        device, queue_depth=depth, max_pending=capacity, in_flight=in_flight,
        last_latency_ms=f'{last:.1f}', p95_latency_ms=f'{p95:.1f}',
        **{f'answers_{name}': counts.get(name, 0) for name in status_names},
    )  # fmt: skip


def camera_status(node: str, device: str, camera, now_ns: int, max_image_age: float):
    """
    Report one camera (a :class:`~.cameras.Camera`): frames received and lost, QoS, age.

    WARN when no frame came yet, when frames were lost or a publisher's QoS is incompatible
    (the message says how to fix it), or when the newest frame is older than ``max_image_age``.
    """
    buffer, config = camera.buffer, camera.config
    newest = buffer.newest_stamp_ns()
    age_s = float('nan') if newest is None else (now_ns - newest) / 1e9
    values = dict(
        topic=camera.topic, transport=config.transport,
        reliability=config.reliability,
        subscribed_reliability=policy_name(camera.reliability) if camera.reliability else 'none',
        publishers=camera.publisher_count, frames_received=buffer.received,
        frames_lost=camera.frames_lost, incompatible_qos_events=camera.incompatible_events,
        age_s=f'{age_s:.3f}',
    )  # fmt: skip
    level, message = OK, f'newest frame {age_s:.3f} s old'
    if newest is None:
        level, message = WARN, 'no frame received'
    elif age_s > max_image_age:
        level = WARN
    if camera.frames_lost:
        level, message = WARN, f'{camera.frames_lost} frames lost: ' + _fix(camera, 'lost')
    elif camera.incompatible_events:
        level, message = WARN, f'{message}; incompatible QoS: ' + _fix(camera, 'incompatible')
    return status(node, f'{config.name} camera', level, message, device, **values)


def _fix(camera, kind: str) -> str:
    """Return the logged warning of ``kind`` (its advice), without its tag."""
    for warning in camera.warnings:
        if warning.startswith(f'[{kind}] '):
            return warning.split('] ', 1)[1]
    return ''
