"""
The camera subscriptions, through public rclpy APIs only, on a companion node of their own.

:class:`CameraNode` is ``<node>_cameras`` in the node's namespace; it takes the process's global
arguments (so remaps such as ``-r /head_camera/image_raw:=/robot/cam``, a launch file's
``remappings``, ``__ns`` and ``use_sim_time`` reach it; ``ros2 node info /vicrop_cameras`` lists
its subscriptions). Its executor runs on a thread of its own, which takes the frames waiting in
DDS in batches (every 0.2 s, at once on a question, frame by frame only while a question waits
for a frame): taking every frame of two 30 Hz streams as it came cost 27% of a core in the
node's executor, 13% in an executor of its own. Each subscription is raw: the callback stores
the serialized bytes in the camera's :class:`~.frames.FrameBuffer` and nothing is deserialized
or decoded until a question needs the frame.

Frames are kept per timeline: when the node clock jumps back (a bag replayed again under
``use_sim_time``) the kept frames are dropped, as their stamps belong to the old timeline. Under
sim time the companion reads ``/clock`` itself, on a subscription made before the cameras': its
thread then takes a tick before any frame that was waiting with it, so a player that publishes
the new timeline's first tick and then its frames never has those frames dropped, however late
the node's own executor takes the tick.

Reliability ``auto`` follows the publishers on the topic (RELIABLE when every one is reliable,
else BEST_EFFORT) and is re-checked once a second by the companion's thread, as ``ros2 bag
record`` matches what it records. Lost frames and incompatible QoS are counted from the
subscription's QoS events, logged once, and reported in ``/diagnostics``.
"""

from collections.abc import Callable
from dataclasses import dataclass
import threading
import time
import traceback

import rclpy
from rclpy.clock import ClockChange, JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from .frames import Frame, FrameBuffer, FrameChoiceError, FrameRequest
from .qos import camera_qos, camera_reliability, policy_name

TRANSPORTS: dict[str, type] = {'raw': Image, 'compressed': CompressedImage}
# Waiting frames are taken at least this often. A reliable reader whose DDS history is full of
# frames nobody took lags behind: with 30 frames kept at 30 Hz and drains only on demand, the
# newest frame of a loaded node was a constant ~1.0 s old (STALE_IMAGE in the load test).
DRAIN_PERIOD_S = 0.2
WAIT_SLICE_S = 0.05  # while somebody waits for a frame, the longest wait between passes
FOLLOW_PERIOD_S = 1.0  # how often reliability 'auto' looks at the publishers again
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # as rclpy reads it


@dataclass(frozen=True)
class CameraConfig:
    """How to subscribe one camera (from the ``<name>.*`` parameters)."""

    name: str  # as in the cameras parameter: 'head', 'wrist', ...
    topic: str  # as configured; relative names resolve in the node's namespace
    transport: str  # a key of TRANSPORTS
    reliability: str  # 'auto', 'reliable' or 'best_effort'
    depth: int  # frames kept (buffer_length)


class Camera:
    """One camera's subscription, frame buffer and QoS event counts."""

    def __init__(self, node: Node, config: CameraConfig, now_ns: Callable[[], int], logger):
        """
        Subscribe to ``config.topic`` on ``node`` (reliability chosen now, see follow).

        ``now_ns`` stamps frames whose header stamp is zero (the node clock); ``logger`` logs.
        """
        self.config = config
        self._node, self._now_ns, self._logger = node, now_ns, logger
        self.buffer = FrameBuffer(config.name, config.depth, TRANSPORTS[config.transport])
        self.topic = node.resolve_topic_name(config.topic)  # remapped, fully qualified
        self.reliability: ReliabilityPolicy | None = None  # what the subscription uses now
        self.frames_lost = 0  # reported by the middleware (sequence gaps), all subscriptions
        self.incompatible_events = 0  # publishers seen with a QoS this subscription can't match
        self.warnings: list[str] = []  # logged once each; diagnostics show the latest
        self.callbacks = 0  # frame and event callbacks run (CameraNode.drain counts them)
        self._subscription = None
        self.follow_publishers()

    @property
    def publisher_count(self) -> int:
        """Return how many publishers are on the topic."""
        return self._node.count_publishers(self.topic)

    def wanted_reliability(self) -> ReliabilityPolicy:
        """Return the reliability to subscribe with, given the publishers on the topic now."""
        publishers = self._node.get_publishers_info_by_topic(self.topic)
        return camera_reliability(
            self.config.reliability, [info.qos_profile.reliability for info in publishers]
        )

    def follow_publishers(self) -> bool:
        """(Re)subscribe when the reliability to use has changed; return whether it did."""
        wanted = self.wanted_reliability()
        if wanted == self.reliability:
            return False
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
        events = SubscriptionEventCallbacks(
            message_lost=self._on_lost, incompatible_qos=self._on_incompatible
        )
        self._subscription = self._node.create_subscription(
            self.buffer.message_type, self.topic, self._on_frame,
            camera_qos(wanted, self.config.depth), raw=True, event_callbacks=events,
        )  # fmt: skip
        self.reliability = wanted
        following = ', following the publishers' if self.config.reliability == 'auto' else ''
        self._logger.info(
            f'{self.config.name} camera: {self.topic} ({self.config.transport}, '
            f'{policy_name(wanted)}{following})'
        )
        return True

    def close(self) -> None:
        """Destroy the subscription (the buffer stays readable)."""
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None
        self.reliability = None

    def _on_frame(self, data: bytes) -> None:
        """Subscription callback: keep the serialized frame (no decoding)."""
        self.callbacks += 1
        self.buffer.add(data, self._now_ns())

    def _on_lost(self, info) -> None:
        """Count frames the middleware lost (a QoS event; e.g. best effort over UDP)."""
        self.callbacks += 1
        self.frames_lost += info.total_count_change
        self._warn_once(
            'lost',
            f'{self.config.name} camera: frames lost on {self.topic} '
            f'({policy_name(self.reliability)}): large frames over UDP lose fragments; use '
            "reliability 'auto' or 'reliable' with a reliable camera publisher, or the shared "
            'memory profile (use_shm_profile:=true)',
        )

    def _on_incompatible(self, info) -> None:
        """Count publishers whose QoS cannot be matched (a QoS event; best effort vs reliable)."""
        self.callbacks += 1
        self.incompatible_events += info.total_count_change
        self._warn_once(
            'incompatible',
            f'{self.config.name} camera: a publisher on {self.topic} has a QoS this '
            f'{policy_name(self.reliability)} subscription cannot match (last policy id '
            f"{info.last_policy_kind}); set {self.config.name}.reliability to 'auto' or "
            "'best_effort'",
        )

    def _warn_once(self, kind: str, text: str) -> None:
        """Log ``text`` the first time ``kind`` happens; keep it for diagnostics."""
        if not any(warning.startswith(f'[{kind}]') for warning in self.warnings):
            self.warnings.append(f'[{kind}] {text}')
            self._logger.warning(text)


Drain = Callable[[float, Callable[[], bool] | None], None]  # (wait_s, until) -> None


def _nothing_to_drain(wait_s: float, until: Callable[[], bool] | None) -> None:
    """Drain of cameras whose buffers are filled directly (no subscription to take from)."""


class Cameras:
    """Every camera of the node, by name, and the one place a question's frame is chosen."""

    def __init__(
        self,
        cameras: dict[str, Camera],
        now_ns: Callable[[], int],
        drain: Drain = _nothing_to_drain,
    ):
        """
        Use ``cameras`` (name -> Camera-like with ``buffer``); ``now_ns`` is the node clock.

        ``drain(wait_s, until)`` moves received frames into the buffers; with ``until`` it also
        waits up to ``wait_s`` seconds for frames until ``until()`` holds.
        """
        self._cameras = cameras
        self._now_ns = now_ns
        self.drain = drain

    def __iter__(self):
        """Iterate over the cameras."""
        return iter(self._cameras.values())

    def get(self, name: str) -> Camera | None:
        """Return the camera called ``name``, or None."""
        return self._cameras.get(name)

    def _buffer(self, name: str) -> FrameBuffer:
        """Return camera ``name``'s buffer; raise FrameChoiceError (NOT_READY) if there is none."""
        camera = self._cameras.get(name)
        if camera is None:
            raise FrameChoiceError('NOT_READY', f'the {name} camera is not subscribed')
        return camera.buffer

    def request(self, name: str, stamp_ns: int, max_age_ns: int) -> FrameRequest:
        """
        Return the request for camera ``name``'s frame at ``stamp_ns`` (0: newest), asked now.

        What has arrived is taken first. The request is decided now when its frame is here;
        else (a question stamped after every kept frame, or asking for the newest when none is
        kept or the newest is older than ``max_age_ns``) the moment that frame is taken, or by
        :meth:`await_frame`. Raises FrameChoiceError (NOT_READY) for a camera not subscribed.
        """
        buffer = self._buffer(name)
        self.drain(0.0, None)
        return buffer.request(stamp_ns, self._now_ns(), max_age_ns)

    def await_frame(self, name: str, request: FrameRequest, wait_s: float) -> Frame:
        """
        Return the frame of ``request`` (camera ``name``), waiting up to ``wait_s`` for it.

        A frame that has not come by then is chosen from the frames kept. Raises
        FrameChoiceError (NO_IMAGE, STALE_IMAGE).
        """
        if not request.decided:
            self.drain(wait_s, lambda: request.decided)
            self._buffer(name).settle(request, self._now_ns())
        return request.result()


class CameraNode:
    """
    The companion node ``<node>_cameras`` with every camera, spun by one thread of its own.

    Frames wait in each subscription's DDS history (KEEP_LAST ``buffer_length``) between
    *passes*: a pass takes everything received so far. The companion's thread makes a pass every
    DRAIN_PERIOD_S, at once when somebody calls :meth:`drain`, and frame by frame while somebody
    waits for a frame; it also re-checks the cameras' reliability every FOLLOW_PERIOD_S. Only
    that thread touches the companion's executor and subscriptions, so no caller ever holds
    another (a worker waiting for a frame does not delay a question's intake or the node's
    timers).
    """

    def __init__(self, parent: Node, configs: list[CameraConfig]):
        """Subscribe the cameras of ``configs`` beside ``parent`` (same namespace and context)."""
        name = f'{parent.get_name()}_cameras'
        self.node = rclpy.create_node(
            name, namespace=parent.get_namespace(), context=parent.context,
            cli_args=['--ros-args', '-r', f'__node:={name}'], start_parameter_services=False,
        )  # fmt: skip
        now_ns = lambda: parent.get_clock().now().nanoseconds  # noqa: E731
        self._logger = parent.get_logger()
        self._parent_clock = parent.get_clock()
        self._last_tick_ns: int | None = None  # the newest /clock value the companion took
        self._ticks = 0  # /clock callbacks run so far
        cameras = {}
        try:
            # First of the companion's subscriptions: its executor takes a waiting tick before
            # waiting frames (it serves subscriptions in the order they were made).
            self.node.create_subscription(Clock, '/clock', self._on_tick, CLOCK_QOS)
            for config in configs:
                cameras[config.name] = Camera(self.node, config, now_ns, self._logger)
        except Exception:
            self.node.destroy_node()
            raise
        self._executor = SingleThreadedExecutor(context=parent.context)
        self._executor.add_node(self.node)
        self.cameras = Cameras(cameras, now_ns, self.drain)
        # A clock that jumps back (a replayed bag started again, sim time switched on) starts a
        # new timeline: frames of the old one would be chosen for stamps of the new one. Sim
        # time's jumps back are seen by _on_tick; this callback takes the others.
        self._time_jumps = parent.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1)),
            post_callback=self._on_time_jump,
        )
        self._passes = threading.Condition()
        self._started = self._finished = 0  # passes begun, passes ended (under _passes)
        self._waiting = 0  # callers waiting for a frame with until (under _passes)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._spinner = threading.Thread(target=self._spin, name=name, daemon=True)
        self._spinner.start()

    def drain(self, wait_s: float = 0.0, until: Callable[[], bool] | None = None) -> None:
        """
        Return once every frame received before this call is in the buffers.

        With ``until``, go on waiting (up to ``wait_s`` seconds) for frames until ``until()``.
        """
        deadline = time.monotonic() + wait_s
        waits = until is not None
        with self._passes:
            wanted = self._started + 1  # a pass that begins after this call
            self._waiting += waits
            self._wake.set()
            try:
                while not self._closing.is_set():
                    remaining = 1.0  # a pass is short; closing is re-checked meanwhile
                    if self._finished >= wanted:
                        remaining = deadline - time.monotonic()
                        if not waits or until() or remaining <= 0.0:
                            return
                    self._passes.wait(timeout=remaining)
            finally:
                self._waiting -= waits

    def _spin(self) -> None:
        """Run the companion's thread until closed (or its context shuts down)."""
        try:
            self._serve()
        except Exception:  # noqa: BLE001 (a context shut down under it, e.g. by a signal)
            if not self._closing.is_set() and self.node.context.ok():
                self._logger.error(f'the camera thread failed:\n{traceback.format_exc()}')
        finally:
            self._closing.set()  # callers of drain stop waiting
            with self._passes:
                self._passes.notify_all()

    def _serve(self) -> None:
        """Make passes, take frames one by one while somebody waits, re-check reliability."""
        next_follow = time.monotonic() + FOLLOW_PERIOD_S
        while not self._closing.is_set():
            if not self._waiting:
                self._wake.wait(timeout=DRAIN_PERIOD_S)
            self._wake.clear()
            if self._closing.is_set():
                return
            self._pass()
            if self._waiting:  # somebody waits for a frame: take frames as they come
                self._executor.spin_once(timeout_sec=WAIT_SLICE_S)
            if time.monotonic() >= next_follow:
                next_follow = time.monotonic() + FOLLOW_PERIOD_S
                self._follow_publishers()

    def _pass(self) -> None:
        """Take every received frame and event, then tell the waiting callers."""
        with self._passes:
            self._started += 1
            number = self._started
        # rclpy's spin_once(timeout_sec=0) runs one callback, and the call after it returns
        # without work (its wait generator ends in a timeout): so only two idle calls in a row
        # mean that nothing is left. Stopping at the first idle call took one frame per pass.
        idle = 0
        while idle < 2:
            before = self._callbacks()
            self._executor.spin_once(timeout_sec=0.0)
            idle = idle + 1 if self._callbacks() == before else 0
        with self._passes:
            self._finished = number
            self._passes.notify_all()

    def _callbacks(self) -> int:
        """Return how many frame, event and /clock callbacks have run so far."""
        return self._ticks + sum(camera.callbacks for camera in self.cameras)

    def _follow_publishers(self) -> None:
        """Re-check every camera's reliability; take a camera's frames before resubscribing."""
        for camera in self.cameras:
            if camera.wanted_reliability() != camera.reliability:
                self._pass()  # what the old subscription holds
                camera.follow_publishers()

    def _on_time_jump(self, jump) -> None:
        """Drop the kept frames when the node clock changed source, or system time went back."""
        if jump.clock_change == ClockChange.ROS_TIME_NO_CHANGE and self._sim_time_active():
            return  # a tick of /clock: _on_tick has seen it, in order with the frames
        self._drop_frames(jump.delta.nanoseconds)

    def _on_tick(self, tick: Clock) -> None:
        """Under sim time, drop the kept frames when a /clock tick goes back."""
        self._ticks += 1
        tick_ns = tick.clock.sec * 1_000_000_000 + tick.clock.nanosec
        last, self._last_tick_ns = self._last_tick_ns, tick_ns
        if last is not None and tick_ns < last and self._sim_time_active():
            self._drop_frames(tick_ns - last)

    def _sim_time_active(self) -> bool:
        """Return whether the node clock follows /clock (use_sim_time)."""
        return self._parent_clock.ros_time_is_active

    def _drop_frames(self, delta_ns: int) -> None:
        """Drop every kept frame: they belong to the timeline before a jump of ``delta_ns``."""
        dropped = sum(camera.buffer.clear() for camera in self.cameras)
        if dropped:
            self._logger.info(
                f'the clock jumped by {delta_ns / 1e9:.3f} s: {dropped} kept frames of the old '
                'timeline dropped'
            )

    def close(self) -> None:
        """Stop the companion's thread, unsubscribe and destroy the companion node."""
        self._closing.set()
        self._wake.set()
        with self._passes:
            self._passes.notify_all()
        self._spinner.join(timeout=10)
        self._time_jumps.unregister()
        self._executor.shutdown()
        for camera in self.cameras:
            camera.close()
        self.node.destroy_node()
