"""
The ROS side of ``vicrop-replay``: publishing a bag's messages and questions, collecting answers.

:class:`Replayer` is the replay's own node: a reliable publisher per played bag topic (remapped),
``/clock`` when asked for, the questions, and subscriptions to the node's answers, crop boxes and
saliency images. :class:`Pace` turns bag time into wall time at a rate, pauses left out;
:func:`choose_topics` decides which bag topics are played.
"""

import argparse
from contextlib import contextmanager
import threading
import time

import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import NodeNameNonExistentError
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer, Question

from .bags import message_class
from .params import CAMERAS_SPEC, DEFAULT_CAMERAS
from .replay_report import answered_with_crop, match_saliency
from .replay_script import ScriptedQuestion

CAMERA_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = (('answers', 'vicrop_interfaces/msg/Answer'),
           ('crop_boxes', 'vicrop_interfaces/msg/CropBox'),
           ('saliency', 'sensor_msgs/msg/Image'))  # fmt: skip


class Replayer:
    """Publishes a bag's messages and the questions on time, and collects the node's outputs."""

    def __init__(self, args: argparse.Namespace, context):
        """Create publishers for the bag's topics and subscriptions to the node's outputs."""
        self.args = args
        self.node = rclpy.create_node('vicrop_replay', context=context)
        self.remaps = parse_remaps(args.remap)
        self.publishers = {}
        self.clock = self.node.create_publisher(Clock, '/clock', 10) if args.clock else None
        prefix = args.node.rstrip('/')
        self.questions = self.node.create_publisher(Question, f'{prefix}/questions', RELIABLE)
        self.recorded: list[tuple[str, str, int, bytes]] = []  # topic, type, bag ns, raw
        self.bag_now_ns = 0
        # What /clock and question stamps add to bag time: header stamps minus bag time of the
        # first played message with --time header, 0 with --time bag.
        self.offset_ns = 0
        self.by_id: dict[str, ScriptedQuestion] = {}
        self.saliency: list[Image] = []
        self._lock = threading.Lock()
        for name, msgtype in OUTPUTS:
            topic = f'{prefix}/{name}'
            self.node.create_subscription(
                message_class(msgtype), topic,
                lambda raw, t=topic, m=msgtype: self._record(t, m, raw), RELIABLE, raw=True,
            )  # fmt: skip
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _record(self, topic: str, msgtype: str, raw: bytes) -> None:
        """Keep an output message for the output bag; route answers to their question."""
        received = time.monotonic()
        with self._lock:
            self.recorded.append((topic, msgtype, self.bag_now_ns, raw))
        if msgtype.endswith('/Answer'):
            answer = deserialize_message(raw, Answer)
            scripted = self.by_id.get(answer.id)
            if scripted is not None:
                scripted.answers.append((answer, received))
        elif msgtype == 'sensor_msgs/msg/Image':
            self.saliency.append(deserialize_message(raw, Image))

    def publisher(self, topic: str, msgtype: str):
        """Return (creating once) the publisher of a bag topic, remapped."""
        if topic not in self.publishers:
            self.publishers[topic] = self.node.create_publisher(
                message_class(msgtype), self.remaps.get(topic, topic), RELIABLE
            )
        return self.publishers[topic]

    def camera_subscriptions(self, timeout_s: float) -> set[str]:
        """
        Return the topics the node's camera companion (``<node>_cameras``) subscribes to.

        They are the node's camera topics after its own remaps and namespace. Waits until one
        subscription per camera is seen: discovery shows a node's subscriptions one by one, and
        the first seen alone left the wrist camera's frames unplayed. After ``timeout_s``,
        returns those seen (cameras remapped onto one topic show fewer), or raises TimeoutError
        when there are none (the node is not up).
        """
        namespace, _, name = self.args.node.rstrip('/').rpartition('/')
        companion, namespace = f'{name}_cameras', namespace or '/'
        deadline = time.monotonic() + timeout_s
        cameras = self.camera_count(timeout_s)
        while True:
            try:
                found = self.node.get_subscriber_names_and_types_by_node(companion, namespace)
            except NodeNameNonExistentError:
                found = []
            topics = {topic for topic, types in found if set(types) & set(CAMERA_TYPES)}
            if len(topics) >= cameras:  # the companion subscribes every camera
                return topics
            if time.monotonic() > deadline:
                if topics:
                    return topics
                raise TimeoutError(
                    f'no camera subscription of {namespace.rstrip("/")}/{companion} after '
                    f'{timeout_s} s: is the node {self.args.node} running (--node)?'
                )
            time.sleep(0.05)

    def camera_count(self, timeout_s: float) -> int:
        """
        Return how many cameras the node has: its ``cameras`` parameter.

        Asked within ``timeout_s``; the default count if its parameter service does not answer.
        """
        client = AsyncParameterClient(self.node, self.args.node.rstrip('/'))
        if client.wait_for_services(timeout_sec=timeout_s):
            future = client.get_parameters([CAMERAS_SPEC.name])
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)  # the replay's executor thread completes it
            values = future.result().values if future.done() and future.result() else []
            if values and values[0].string_array_value:
                return len(values[0].string_array_value)
        return len(DEFAULT_CAMERAS)

    def wait_for_subscribers(self, topics: list[str], timeout_s: float) -> None:
        """Wait until the node listens to the questions and every camera topic of the bag."""
        deadline = time.monotonic() + timeout_s
        waiting = [self.questions] + [self.publishers[t] for t in topics]
        while any(p.get_subscription_count() == 0 for p in waiting):
            if time.monotonic() > deadline:
                missing = [p.topic_name for p in waiting if p.get_subscription_count() == 0]
                raise TimeoutError(f'nobody subscribes to {missing} after {timeout_s} s')
            time.sleep(0.05)

    def wait_for_acknowledgements(self, timeout_s: float) -> None:
        """
        Wait until the node's reliable camera readers hold every frame published so far.

        A question is sent only then: its frames are in the node whatever the load or the rate
        (best-effort readers acknowledge nothing; determinism needs reliable ones).
        """
        for publisher in self.publishers.values():
            if not publisher.wait_for_all_acked(Duration(seconds=timeout_s)):
                raise TimeoutError(
                    f'the node did not acknowledge the frames on {publisher.topic_name} '
                    f'within {timeout_s} s'
                )

    def await_answers(
        self, questions: list[ScriptedQuestion], timeout_s: float, rate: float, clock_runs: bool
    ) -> None:
        """
        Wait up to ``timeout_s`` until every one of ``questions`` has an answer.

        With ``clock_runs`` bag time goes on meanwhile (at ``rate``), as a player's clock does
        after the last message: the node's frame waits run on it. Otherwise it stands still.
        """
        deadline = time.monotonic() + timeout_s
        waited_wall, waited_ns = time.monotonic(), self.bag_now_ns
        while any(not q.answers for q in questions) and time.monotonic() < deadline:
            if clock_runs:
                elapsed_ns = int((time.monotonic() - waited_wall) * rate * 1e9)
                self.tick_clock(waited_ns + elapsed_ns)
            time.sleep(0.02)

    def await_saliency(self, questions: list[ScriptedQuestion], timeout_s: float) -> bool:
        """
        Wait up to ``timeout_s`` until every answer with a crop box has its saliency image.

        An image is matched to an answer by the frame header they share (match_saliency); a
        large image can come after its answer. Returns whether every one came.
        """
        deadline = time.monotonic() + timeout_s
        wanted = len(answered_with_crop(questions))
        while True:
            if len(match_saliency(questions, list(self.saliency))) == wanted:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def tick_clock(self, bag_ns: int) -> None:
        """Advance the bag time (and /clock, at bag time plus offset_ns, when enabled)."""
        self.bag_now_ns = bag_ns
        if self.clock is not None:
            message = Clock()
            message.clock.sec, message.clock.nanosec = divmod(bag_ns + self.offset_ns, 10**9)
            self.clock.publish(message)

    def ask(self, scripted: ScriptedQuestion, start_ns: int) -> None:
        """Publish one question, stamped bag time ``start_ns`` + its ``at`` + offset_ns."""
        message = Question(
            id=scripted.id, question=scripted.question, camera=scripted.camera,
            method=scripted.method,
        )  # fmt: skip
        if scripted.stamp != 'newest':
            stamp_ns = start_ns + int(scripted.at * 1e9) + self.offset_ns
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.by_id[scripted.id] = scripted
        scripted.sent_wall = time.monotonic()
        self.questions.publish(message)

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self.executor.shutdown()
        self._spinner.join(timeout=5)
        self.node.destroy_node()


class Pace:
    """
    Wall time for bag time at a playback rate, with pauses left out.

    Bag time ``start_ns`` is now; bag time t is due ``(t - start_ns) / rate`` wall seconds
    later, plus every pause (:meth:`paused`) taken meanwhile.
    """

    def __init__(self, start_ns: int, rate: float, monotonic=time.monotonic):
        """Start pacing now (``monotonic``: seconds)."""
        self.start_ns, self.rate, self._monotonic = start_ns, rate, monotonic
        self._wall_start = monotonic()
        self._paused_s = 0.0

    def wall_due(self, bag_ns: int) -> float:
        """Return the monotonic time at which bag time ``bag_ns`` is due."""
        return self._wall_start + self._paused_s + (bag_ns - self.start_ns) / 1e9 / self.rate

    def wait_until(self, bag_ns: int) -> None:
        """Sleep until bag time ``bag_ns`` is due."""
        while (delay := self.wall_due(bag_ns) - self._monotonic()) > 0:
            time.sleep(min(delay, 0.01))

    def elapsed_s(self) -> float:
        """Return the wall seconds of playing so far (pauses left out)."""
        return self._monotonic() - self._wall_start - self._paused_s

    @contextmanager
    def paused(self):
        """Leave the time spent in the ``with`` block out of the pace."""
        began = self._monotonic()
        try:
            yield
        finally:
            self._paused_s += self._monotonic() - began


def choose_topics(
    connections, remaps: dict[str, str], chosen: list[str] | None, subscribed: set[str] | None
) -> tuple[list, list[str]]:
    """
    Return (the connections to play, one line per bag topic left out).

    ``chosen`` (``--topics``): exactly those bag topics. Otherwise the camera topics whose
    (remapped) name the node subscribes to (``subscribed``). Topics of message types not
    installed here are never played.
    """
    by_topic: dict[str, list] = {}
    for connection in connections:
        by_topic.setdefault(connection.topic, []).append(connection)
    if chosen:
        unknown = [t for t in chosen if t not in by_topic]
        if unknown:
            raise ValueError(f'--topics {unknown[0]} is not in the bag; it has {sorted(by_topic)}')
    play, skipped = [], []
    for topic, group in sorted(by_topic.items()):
        msgtype = group[0].msgtype
        if not installed(msgtype):
            reason = f'type {msgtype} is not installed here'
            if chosen and topic in chosen:
                raise ValueError(f'--topics {topic}: {reason}')
        elif chosen:
            reason = '' if topic in chosen else 'not in --topics'
        elif msgtype not in CAMERA_TYPES:
            reason = f'not a camera topic ({msgtype})'
        elif remaps.get(topic, topic) not in subscribed:
            reason = f'the node does not subscribe to {remaps.get(topic, topic)}'
        else:
            reason = ''
        if reason:
            skipped.append(f'skipping {topic}: {reason}')
        else:
            play += group
    if not play:
        raise ValueError(
            f'nothing to play: the node subscribes to {sorted(subscribed or ())}, the bag has '
            f'{sorted(by_topic)}; map a camera with --remap FROM:=TO or name topics with --topics'
        )
    return play, skipped


def installed(msgtype: str) -> bool:
    """Whether the rclpy message class of ``msgtype`` can be imported here."""
    try:
        message_class(msgtype)
    except (ImportError, AttributeError, ValueError):
        return False
    return True


def parse_remaps(items: list[str]) -> dict[str, str]:
    """Return {bag topic: published topic} of `--remap FROM:=TO` items; ValueError if not."""
    remaps = {}
    for item in items:
        source, separator, target = item.partition(':=')
        if not separator or not source or not target:
            raise ValueError(
                f'--remap {item!r}: expected FROM:=TO (e.g. /cam:=/head_camera/image_raw)'
            )
        remaps[source] = target
    return remaps
