"""A test client for the vicrop node over real DDS, and a way to start the node as a process."""

from collections import defaultdict
from collections.abc import Callable
import os
import signal
import subprocess
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, CropBox, Question
from vicrop_interfaces.srv import Ask

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
FEEDBACK_QOS = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def wait_until(condition, timeout_s: float = 60.0, what: str = 'the condition') -> None:
    """Wait until ``condition()`` is true (a hang guard of ``timeout_s``, not a speed limit)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f'gave up waiting for {what}'
        time.sleep(0.01)


def result_of(future, timeout_s: float = 60.0):
    """Wait for an rclpy future (spun elsewhere) and return its result."""
    wait_until(future.done, timeout_s, 'a response')
    return future.result()


def start_node(
    model_dir, *params: str, name: str = 'vicrop', params_file: str | None = None
) -> subprocess.Popen:
    """Start ``vicrop_node`` with the tiny model and ``-p`` parameters (``'key:=value'``)."""
    command = ['vicrop_node', '--ros-args', '-r', f'__node:={name}']
    if params_file:
        command += ['--params-file', params_file]
    command += ['-p', f'model:={model_dir}']
    for param in params:
        command += ['-p', param]
    return subprocess.Popen(command, env=dict(os.environ), start_new_session=True)


def stop_node(process: subprocess.Popen) -> None:
    """Stop a node started by :func:`start_node` (SIGINT, then SIGKILL)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def raw_image(rgb: np.ndarray, stamp, frame_id: str) -> Image:
    """Return an rgb8 Image message."""
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = rgb.tobytes()
    return msg


def jpeg_image(rgb: np.ndarray, stamp, frame_id: str) -> CompressedImage:
    """Return a JPEG CompressedImage message."""
    msg = CompressedImage(format='jpeg')
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    return msg


class VicropClient:
    """Publishes frames and questions to a vicrop node and collects what it publishes."""

    def __init__(self, context, node_name: str = 'vicrop', wrist_compressed: bool = True):
        """Create the client's endpoints and spin them in a background thread."""
        self.node = rclpy.create_node('vicrop_test_client', context=context)
        prefix = f'/{node_name}'
        self.prefix = prefix
        self.answers: dict[str, list[Answer]] = defaultdict(list)
        self.crop_boxes: dict[str, list[CropBox]] = defaultdict(list)
        self.saliency: list[Image] = []
        self._lock = threading.Lock()
        self.node.create_subscription(Answer, f'{prefix}/answers', self._on_answer, RELIABLE)
        self.node.create_subscription(CropBox, f'{prefix}/crop_boxes', self._on_crop, RELIABLE)
        self.node.create_subscription(Image, f'{prefix}/saliency', self.saliency.append, RELIABLE)
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(
            DiagnosticArray, '/diagnostics', self.diagnostics.append, RELIABLE
        )
        self.questions = self.node.create_publisher(Question, f'{prefix}/questions', RELIABLE)
        self.head = self.node.create_publisher(Image, '/head_camera/image_raw', RELIABLE)
        wrist_type = CompressedImage if wrist_compressed else Image
        self.wrist = self.node.create_publisher(wrist_type, '/wrist_camera/image_raw', RELIABLE)
        many = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)  # every response
        self.ask_client = self.node.create_client(Ask, f'{prefix}/ask', qos_profile=many)
        self.action_client = ActionClient(
            self.node, AskQuestion, f'{prefix}/ask_question', feedback_sub_qos_profile=FEEDBACK_QOS
        )
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_answer(self, msg: Answer) -> None:
        with self._lock:
            self.answers[msg.id].append(msg)

    def _on_crop(self, msg: CropBox) -> None:
        with self._lock:
            self.crop_boxes[msg.id].append(msg)

    def on_spinner(self, send: Callable[[], Future]) -> Future:
        """
        Return a future of the result of ``send()``, which runs on the client's spinning thread.

        rclpy's ActionClient (Jazzy) registers a goal, cancel or result request only after
        sending it, without a lock: sent from another thread, a fast response can be taken
        first and dropped ("Ignoring unexpected goal response"). From the spinning thread the
        response is handled after the registration.
        """
        outer = Future()

        def run() -> None:
            send().add_done_callback(lambda inner: outer.set_result(inner.result()))

        self.executor.create_task(run)
        return outer

    def close(self) -> None:
        """Stop spinning and destroy the client node."""
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()

    def now(self):
        """Return the client's clock as a builtin_interfaces/Time."""
        return self.node.get_clock().now().to_msg()

    def wait_until_ready(self, timeout_s: float = 90.0) -> None:
        """
        Wait until the node answers the service (model loaded, node active).

        As a robust caller does: a request that gets no response in a few seconds (sent to a
        server that just died, or before the new one matched) is dropped and sent again.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.ask_client.wait_for_service(timeout_sec=1.0):
                continue
            future = self.ask_client.call_async(Ask.Request(question=''))
            attempt_end = min(deadline, time.monotonic() + 5.0)
            while not future.done() and time.monotonic() < attempt_end:
                time.sleep(0.02)
            if future.done() and future.result().answer.status == Answer.BAD_REQUEST:
                return
            self.ask_client.remove_pending_request(future)
            time.sleep(0.2)
        raise AssertionError('the vicrop node never became active')

    def wait_for_matches(self, timeout_s: float = 60.0) -> None:
        """
        Wait until the node subscribes to the questions and both cameras, and publishes.

        The camera subscriptions must be reliable, as reliability 'auto' makes them within a
        second of this client's (reliable) publishers appearing: a large frame sent to the
        best-effort subscription before that may be lost.
        """
        publishers = (self.questions, self.head, self.wrist)

        def reliable(topic: str) -> bool:
            infos = self.node.get_subscriptions_info_by_topic(topic)
            return bool(infos) and all(i.qos_profile.reliability == RELIABLE.reliability
                                       for i in infos)  # fmt: skip

        def subscribed() -> bool:
            return all(p.get_subscription_count() for p in publishers) and all(
                reliable(p.topic_name) for p in (self.head, self.wrist)
            )

        wait_until(subscribed, timeout_s, 'the node to subscribe')
        wait_until(lambda: self.node.count_publishers(f'{self.prefix}/saliency') > 0, timeout_s,
                   'the saliency publisher')  # fmt: skip

    def diagnostic_values(self, part: str, after_ns: int = 0, timeout_s: float = 60.0) -> dict:
        """Return the values of the newest ``<node>: <part>`` status stamped after ``after_ns``."""

        def newest():
            for array in reversed(self.diagnostics):
                stamp_ns = array.header.stamp.sec * 1_000_000_000 + array.header.stamp.nanosec
                for status in array.status:
                    if status.name == f'{self.prefix}: {part}' and stamp_ns > after_ns:
                        return {kv.key: kv.value for kv in status.values} | {
                            'level': status.level,
                            'message': status.message,
                        }
            return None

        wait_until(lambda: newest() is not None, timeout_s, f'diagnostics of {part}')
        return newest()

    def publish_frame(self, camera: str, rgb: np.ndarray, stamp, frame_id: str) -> None:
        """Publish one frame on ``camera`` ('head' raw, 'wrist' as configured)."""
        publisher = self.head if camera == 'head' else self.wrist
        make = jpeg_image if publisher.msg_type is CompressedImage else raw_image
        publisher.publish(make(rgb, stamp, frame_id))

    def ask_topic(self, question: Question) -> None:
        """Publish a Question."""
        self.questions.publish(question)

    def call_ask(
        self, request: Ask.Request, timeout_s: float = 60.0, resend_s: float | None = None
    ) -> Answer:
        """
        Call the Ask service and return the answer.

        ``resend_s``: send the request again when no response came within that many seconds
        (a server found by discovery may not yet hear requests); only for requests whose
        repetition is harmless.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            future = self.ask_client.call_async(request)
            attempt_end = deadline if resend_s is None else time.monotonic() + resend_s
            while not future.done() and time.monotonic() < min(attempt_end, deadline):
                time.sleep(0.01)
            if future.done():
                return future.result().answer
            assert time.monotonic() < deadline, 'Ask did not return'
            self.ask_client.remove_pending_request(future)

    def wait_answers(self, ids, timeout_s: float = 60.0) -> dict:
        """Wait until every id has an answer; return the answers of each id so far."""
        wait_until(lambda: all(self.answers.get(i) for i in ids), timeout_s,
                   f'answers to {list(ids)}')  # fmt: skip
        with self._lock:
            return {i: list(self.answers[i]) for i in ids}
