"""
``vicrop-replay``: play a rosbag2 into live topics, ask scripted questions, check the answers.

    vicrop-replay BAG --script questions.yaml [--rate 1.0] [--clock] [--remap OLD:=NEW ...]
                  [--out-bag OUT] [--report report.jsonl] [--saliency-dir DIR] [--golden G.jsonl]
                  [--overlap]

Any bag with Image/CompressedImage topics works (mcap or sqlite3; stored bytes are published as
they are). The script (YAML ``questions:`` list, or JSONL) gives per question ``at`` (seconds after
the bag's first message), ``question``, and optionally ``id``, ``camera``, ``method``,
``stamp`` ('bag' = the bag time at ``at``, default; 'newest' = the newest frame) and ``expect``
(``answer``: case-insensitive substring; ``region``: [x0, y0, x1, y1] source pixels the crop must
contain; ``status``: the status the answer must have, default OK). The script is validated
(``replay_script.py``) before anything is replayed.

A question is sent ``--question-lag`` bag seconds after its bag time, once every message up to
then is published and acknowledged by the node's reliable readers, and bag time stands still
until its answer (lockstep; ``--overlap`` does not wait): the report does not depend on the
node's speed, the machine's load or the rate.

Exit status: 0 every question passed; 1 a regression (a question without exactly one answer, a
status other than expected, an expectation or a golden difference); 2 a usage or input error (bad
arguments, script, golden report or bag; the node not found).
"""

import argparse
from contextlib import contextmanager
import json
from pathlib import Path
import sys
import threading
import time

import cv2
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import NodeNameNonExistentError
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer, Question

from .bags import message_class, typestore
from .images import decode_rgb
from .jobs import STATUS_NAMES
from .replay_script import GOLDEN_KEYS, ScriptedQuestion, ScriptError, load_script, verdict

EXIT_CODES = """exit status:
  0  every question passed
  1  a regression: a question without exactly one answer, a status other than its expect.status
     (default OK), a failed expectation, or a difference from --golden (status, answer, box,
     image stamp, frame_id)
  2  a usage or input error: arguments, script (file:line and the key), golden report, bag, node"""
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

        They are the node's camera topics after its own remaps and namespace. Waits until the
        companion has subscriptions (the node is up); raises TimeoutError after ``timeout_s``.
        """
        namespace, _, name = self.args.node.rstrip('/').rpartition('/')
        companion, namespace = f'{name}_cameras', namespace or '/'
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                found = self.node.get_subscriber_names_and_types_by_node(companion, namespace)
            except NodeNameNonExistentError:
                found = []
            topics = {topic for topic, types in found if set(types) & set(CAMERA_TYPES)}
            if topics:
                return topics
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f'no camera subscription of {namespace.rstrip("/")}/{companion} after '
                    f'{timeout_s} s: is the node {self.args.node} running (--node)?'
                )
            time.sleep(0.05)

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

    def tick_clock(self, bag_ns: int) -> None:
        """Advance the bag time (and /clock when enabled)."""
        self.bag_now_ns = bag_ns
        if self.clock is not None:
            message = Clock()
            message.clock.sec, message.clock.nanosec = divmod(bag_ns, 1_000_000_000)
            self.clock.publish(message)

    def ask(self, scripted: ScriptedQuestion, start_ns: int) -> None:
        """Publish one scripted question."""
        message = Question(
            id=scripted.id, question=scripted.question, camera=scripted.camera,
            method=scripted.method,
        )  # fmt: skip
        if scripted.stamp != 'newest':
            stamp_ns = start_ns + int(scripted.at * 1e9)
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


def play(args: argparse.Namespace, questions: list[ScriptedQuestion], context) -> dict:
    """Play the bag with the questions on time; return playback figures."""
    replayer = Replayer(args, context)
    store = typestore()
    try:
        with AnyReader([Path(args.bag)], default_typestore=store) as reader:
            subscribed = None if args.topics else replayer.camera_subscriptions(args.wait)
            connections, skipped = choose_topics(
                reader.connections, replayer.remaps, args.topics, subscribed
            )
            for line in skipped:
                print(line, file=sys.stderr)
            for connection in connections:
                replayer.publisher(connection.topic, connection.msgtype)
            replayer.wait_for_subscribers(sorted({c.topic for c in connections}), args.wait)

            def cdr(connection, raw: bytes) -> bytes:
                if reader.is2:
                    return raw  # stored as CDR: published as it is
                # A ROS 1 bag stores ROS 1 serialization: read it, write CDR.
                message = reader.deserialize(raw, connection.msgtype)
                return bytes(store.serialize_cdr(message, connection.msgtype))

            start_ns, end_ns = reader.start_time, reader.end_time
            replayer.tick_clock(start_ns)
            time.sleep(0.2)  # let the clock reach the node before the first frame
            pace = Pace(start_ns, args.rate)
            pending = list(questions)  # sorted by at

            def due_ns(scripted: ScriptedQuestion) -> int:
                # Asked --question-lag bag seconds after its bag time (its stamp stays the bag
                # time), once every message up to then has been published and acknowledged.
                return start_ns + int((scripted.at + args.question_lag) * 1e9)

            def ask_due(before_ns: int) -> None:
                """Ask every pending question due before ``before_ns`` (bag time)."""
                while pending and due_ns(pending[0]) < before_ns:
                    scripted = pending.pop(0)
                    question_ns = max(due_ns(scripted), replayer.bag_now_ns)
                    pace.wait_until(question_ns)
                    replayer.tick_clock(question_ns)
                    replayer.wait_for_acknowledgements(args.wait)
                    replayer.ask(scripted, start_ns)
                    if not args.overlap:
                        # Lockstep: bag time stands still until the answer, so the frames the
                        # node holds and its queue do not depend on its speed or the rate.
                        after_end = question_ns >= end_ns
                        with pace.paused():
                            replayer.await_answers([scripted], args.timeout, args.rate, after_end)

            published = 0
            for connection, timestamp, raw in reader.messages(connections=connections):
                ask_due(timestamp)
                pace.wait_until(timestamp)
                replayer.tick_clock(timestamp)
                replayer.publisher(connection.topic, connection.msgtype).publish(
                    cdr(connection, raw)
                )
                published += 1
            playback_s = pace.elapsed_s()
            ask_due(sys.maxsize)  # after the last message the clock goes on
        replayer.await_answers(questions, args.timeout, args.rate, True)
        time.sleep(args.settle)  # a second answer to one question would arrive now
        bag_s = (end_ns - start_ns) / 1e9
        return {
            'messages': published,
            'bag_duration_s': bag_s,
            'playback_wall_s': playback_s,
            'rate_requested': args.rate,
            'rate_achieved': bag_s / playback_s if playback_s > 0 else None,
            'recorded': list(replayer.recorded),
            'saliency': list(replayer.saliency),
        }
    finally:
        replayer.close()


def check(scripted: ScriptedQuestion, golden: dict | None) -> tuple[dict, list[str]]:
    """Return the report entry of one question and why it failed (see replay_script.verdict)."""
    entry = {'kind': 'question', 'id': scripted.id, 'at': scripted.at, 'camera': scripted.camera,
             'question': scripted.question, 'answers_received': len(scripted.answers),
             'expect': scripted.expect}  # fmt: skip
    if not scripted.answers:
        entry['status'] = None
        return entry, verdict(entry, scripted, golden)
    answer, received = scripted.answers[0]
    box = None
    if answer.crop.width:
        crop = answer.crop
        box = [
            crop.x_offset,
            crop.y_offset,
            crop.x_offset + crop.width,
            crop.y_offset + crop.height,
        ]
    entry |= {
        'status': STATUS_NAMES.get(answer.status, str(answer.status)), 'error': answer.error,
        'answer': answer.answer, 'method': answer.method, 'box': box,
        'image_stamp': f'{answer.header.stamp.sec}.{answer.header.stamp.nanosec:09d}',
        'frame_id': answer.header.frame_id,
        'latency_ms': round((received - scripted.sent_wall) * 1000, 1),
    }  # fmt: skip
    return entry, verdict(entry, scripted, golden)


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


def load_golden(path: Path) -> dict:
    """Return the question entries of an earlier report by id; ValueError names a bad line."""
    golden = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f'{path}:{number}: not a report line: {error}') from None
        if entry.get('kind') == 'question':
            golden[entry['id']] = entry
    return golden


def write_bag(path: Path, recorded: list) -> None:
    """Write the recorded outputs into a rosbag2 (mcap)."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msgtype, bag_ns, raw in recorded:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], bag_ns, raw)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(
        prog='vicrop-replay', description=__doc__.strip().splitlines()[0], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument('bag', help='rosbag2 directory (mcap or sqlite3) or ROS 1 .bag file')
    parser.add_argument('--script', required=True, help='questions: YAML or JSONL')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    parser.add_argument('--clock', action='store_true', help='publish /clock (for use_sim_time)')
    parser.add_argument(
        '--remap', action='append', default=[], metavar='FROM:=TO',
        help='publish bag topic FROM as TO (repeatable)',
    )  # fmt: skip
    parser.add_argument(
        '--topics', nargs='+', metavar='TOPIC',
        help='bag topics to play (default: the camera topics the node subscribes to, remapped)',
    )  # fmt: skip
    parser.add_argument('--node', default='/vicrop', help='the vicrop node (topic prefix)')
    parser.add_argument('--out-bag', help='write the node outputs into this new bag (mcap)')
    parser.add_argument('--report', help='write one JSON line per question (and a summary)')
    parser.add_argument('--saliency-dir', help='write the saliency image of each answer here')
    parser.add_argument(
        '--golden', help=f'compare {", ".join(GOLDEN_KEYS)} with this earlier report'
    )
    parser.add_argument('--timeout', type=float, default=60.0, help='seconds to wait for answers')
    parser.add_argument('--wait', type=float, default=60.0, help='seconds to wait for the node')
    parser.add_argument(
        '--overlap', action='store_true',
        help='send questions on time without waiting for answers (they queue as live ones do; '
        'the report then depends on the node\'s speed and the rate)',
    )  # fmt: skip
    parser.add_argument('--settle', type=float, default=0.5, help='seconds to catch extra answers')
    parser.add_argument(
        '--question-lag', type=float, default=0.1,
        help='bag seconds between a question\'s bag time and sending it (its stamp stays the bag '
        'time), so the frames of that time have reached the node',
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Replay, report, and return 0 only when every question passed."""
    args = build_parser().parse_args(argv)
    if args.rate <= 0:
        print('vicrop-replay: error: --rate must be > 0', file=sys.stderr)
        return 2
    try:
        questions = load_script(Path(args.script))
        golden = load_golden(Path(args.golden)) if args.golden else None
        parse_remaps(args.remap)
    except (OSError, ScriptError, ValueError) as error:
        print(f'vicrop-replay: error: {error}', file=sys.stderr)
        return 2
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        figures = play(args, questions, context)
    except (OSError, ValueError, TimeoutError) as error:
        print(f'vicrop-replay: error: {error}', file=sys.stderr)
        return 2
    finally:
        rclpy.try_shutdown(context=context)
    entries, failed = [], 0
    for scripted in questions:
        entry, failures = check(scripted, golden)
        entry['failures'] = failures
        failed += bool(failures)
        entries.append(entry)
        status = entry['status'] or 'NO ANSWER'
        said = entry.get('answer') or entry.get('error', '')
        print(f"[{scripted.at:6.2f} s] {scripted.id} ({scripted.camera or 'default'}): "
              f'{scripted.question}\n    -> {status}: {said!r}'
              f'  box={entry.get("box")}  latency={entry.get("latency_ms")} ms'
              + (f'\n    FAILED: {"; ".join(failures)}' if failures else ''))  # fmt: skip
    summary = {k: figures[k] for k in ('messages', 'bag_duration_s', 'playback_wall_s',
                                       'rate_requested', 'rate_achieved')}  # fmt: skip
    summary |= {'kind': 'summary', 'questions': len(questions), 'failed': failed}
    print(f"replayed {summary['messages']} messages, {summary['bag_duration_s']:.2f} s of bag in "
          f"{summary['playback_wall_s']:.2f} s (rate {summary['rate_achieved']:.3f}); "
          f'{len(questions) - failed}/{len(questions)} questions passed')  # fmt: skip
    if args.report:
        lines = [json.dumps(e) for e in entries + [summary]]
        Path(args.report).write_text('\n'.join(lines) + '\n')
    if args.out_bag:
        write_bag(Path(args.out_bag), figures['recorded'])
    if args.saliency_dir:
        write_saliency(Path(args.saliency_dir), questions, figures['saliency'])
    return 1 if failed else 0


def match_saliency(questions: list[ScriptedQuestion], images: list[Image]) -> dict[str, Image]:
    """
    Return each question's saliency image by question id.

    A saliency image carries its frame's header, not the question: two questions about one
    frame send two images with one header. The node serves one question at a time and
    publishes its saliency image before its answer, so the k-th image of a header belongs to the
    k-th answer (in the order received) of that header that has a crop box.
    """

    def key(header) -> tuple:
        return header.stamp.sec, header.stamp.nanosec, header.frame_id

    images_by_frame: dict[tuple, list[Image]] = {}
    for image in images:
        images_by_frame.setdefault(key(image.header), []).append(image)
    answered = sorted(
        (q for q in questions if q.answers and q.answers[0][0].crop.width),
        key=lambda q: q.answers[0][1],
    )
    matched = {}
    for scripted in answered:
        waiting = images_by_frame.get(key(scripted.answers[0][0].header))
        if waiting:
            matched[scripted.id] = waiting.pop(0)
    return matched


def write_saliency(folder: Path, questions: list[ScriptedQuestion], images: list[Image]) -> None:
    """Write each answer's saliency image as ``<id>.png`` (see match_saliency)."""
    folder.mkdir(parents=True, exist_ok=True)
    for question_id, image in match_saliency(questions, images).items():
        bgr = cv2.cvtColor(decode_rgb(image), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f'{question_id}.png'), bgr)


if __name__ == '__main__':
    sys.exit(main())
