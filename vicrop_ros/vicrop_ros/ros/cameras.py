"""
The camera subscriptions: one per camera, on the node itself, through public rclpy APIs only.

So remaps (``-r /head_camera/image_raw:=/robot/cam``, a launch file's ``remappings``) and the
node's namespace reach them, and ``ros2 node info`` lists them. Each subscription is raw: the
callback stores the serialized bytes in the camera's :class:`~.frames.FrameBuffer` and nothing is
deserialized or decoded until a question needs the frame.

Reliability ``auto`` follows the publishers on the topic (RELIABLE when every one is reliable,
else BEST_EFFORT) and is re-checked by :meth:`Cameras.follow_publishers` (the node calls it once
a second), as ``ros2 bag record`` matches what it records. Lost frames and incompatible QoS are
counted from the subscription's QoS events, logged once, and reported in ``/diagnostics``.
"""

from collections.abc import Callable
from dataclasses import dataclass

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from .frames import Frame, FrameBuffer, FrameChoiceError
from .qos import camera_qos, camera_reliability, policy_name

TRANSPORTS: dict[str, type] = {'raw': Image, 'compressed': CompressedImage}


@dataclass(frozen=True)
class CameraConfig:
    """How to subscribe one camera (from the ``<name>.*`` parameters)."""

    name: str  # 'head', 'wrist'
    topic: str  # as configured; relative names resolve in the node's namespace
    transport: str  # a key of TRANSPORTS
    reliability: str  # 'auto', 'reliable' or 'best_effort'
    depth: int  # frames kept (buffer_length)


class Camera:
    """One camera's subscription, frame buffer and QoS event counts."""

    def __init__(self, node: Node, config: CameraConfig, callback_group=None):
        """Subscribe to ``config.topic`` on ``node`` (reliability chosen now, see follow)."""
        self.config = config
        self._node = node
        self._group = callback_group
        self.buffer = FrameBuffer(config.name, config.depth, TRANSPORTS[config.transport])
        self.topic = node.resolve_topic_name(config.topic)  # remapped, fully qualified
        self.reliability: ReliabilityPolicy | None = None  # what the subscription uses now
        self.frames_lost = 0  # reported by the middleware (sequence gaps), all subscriptions
        self.incompatible_events = 0  # publishers seen with a QoS this subscription can't match
        self.warnings: list[str] = []  # logged once each; diagnostics show the latest
        self._subscription = None
        self.follow_publishers()

    @property
    def publisher_count(self) -> int:
        """Return how many publishers are on the topic."""
        return self._node.count_publishers(self.topic)

    def follow_publishers(self) -> bool:
        """(Re)subscribe when the reliability to use has changed; return whether it did."""
        publishers = self._node.get_publishers_info_by_topic(self.topic)
        wanted = camera_reliability(
            self.config.reliability, [info.qos_profile.reliability for info in publishers]
        )
        if wanted == self.reliability:
            return False
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
        events = SubscriptionEventCallbacks(
            message_lost=self._on_lost, incompatible_qos=self._on_incompatible
        )
        self._subscription = self._node.create_subscription(
            self.buffer.message_type, self.topic, self._on_frame,
            camera_qos(wanted, self.config.depth), raw=True,
            callback_group=self._group, event_callbacks=events,
        )  # fmt: skip
        self.reliability = wanted
        self._node.get_logger().info(
            f'{self.config.name} camera: {self.topic} ({self.config.transport}, '
            f'{policy_name(wanted)}'
            + (
                f', following {len(publishers)} publisher(s)'
                if self.config.reliability == 'auto'
                else ''
            )  # fmt: skip
            + ')'
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
        self.buffer.add(data, self._node.get_clock().now().nanoseconds)

    def _on_lost(self, info) -> None:
        """Count frames the middleware lost (a QoS event; e.g. best effort over UDP)."""
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
            self._node.get_logger().warning(text)


class Cameras:
    """Every camera of the node, by name, and the one place a question's frame is chosen."""

    def __init__(self, cameras: dict[str, Camera], now_ns: Callable[[], int]):
        """Use ``cameras`` (name -> Camera-like with ``buffer``); ``now_ns`` is the node clock."""
        self._cameras = cameras
        self._now_ns = now_ns

    def __iter__(self):
        """Iterate over the cameras."""
        return iter(self._cameras.values())

    def get(self, name: str) -> Camera | None:
        """Return the camera called ``name``, or None."""
        return self._cameras.get(name)

    def follow_publishers(self) -> None:
        """Re-check every camera's reliability against its publishers."""
        for camera in self._cameras.values():
            camera.follow_publishers()

    def close(self) -> None:
        """Unsubscribe every camera."""
        for camera in self._cameras.values():
            camera.close()
        self._cameras = {}

    def choose(self, name: str, stamp_ns: int, max_age_ns: int, wait_s: float) -> Frame | None:
        """
        Return the frame of camera ``name`` a question stamped ``stamp_ns`` (0: newest) is about.

        A question stamped after every kept frame may be about a frame still on its way: with
        ``wait_s`` 0 the choice is left for later (None), else it waits up to ``wait_s`` for a
        frame at or after the stamp, then chooses from what it has. Raises FrameChoiceError
        (NO_IMAGE, STALE_IMAGE, or NOT_READY for a camera that is not subscribed).
        """
        camera = self._cameras.get(name)
        if camera is None:
            raise FrameChoiceError('NOT_READY', f'the {name} camera is not subscribed')
        buffer = camera.buffer
        if stamp_ns and (buffer.newest_stamp_ns() or 0) < stamp_ns:
            if wait_s <= 0.0:
                return None
            buffer.wait_for_stamp(stamp_ns, wait_s)
        return buffer.choose(stamp_ns, self._now_ns(), max_age_ns)
