"""
Fakes for the node's logic without DDS.

A settable clock, cameras over plain frame buffers, an intake that records what it publishes,
and a gated engine.

Named as fakes: they stand in for the node's clock and publishers, and (``GatedEngine``) for the
model where the model is not the point (queues, cancel, concurrency).
"""

from dataclasses import dataclass, field
import threading
import types

import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from vicrop_interfaces.msg import Answer
from vicrop_ros.core import Canceled, Method, VicropResult
from vicrop_ros.ros.cameras import Cameras
from vicrop_ros.ros.frames import FrameBuffer
from vicrop_ros.ros.params import Settings
from vicrop_ros.ros.requests import Intake

S = 1_000_000_000  # nanoseconds per second


@dataclass
class FakeClock:
    """Both clocks of the intake, moved by hand: ``now_s`` (node clock) and ``monotonic_s``."""

    now_s: float = 1000.0
    monotonic_s: float = 50.0

    def now_ns(self) -> int:
        return int(self.now_s * S)

    def monotonic(self) -> float:
        return self.monotonic_s


@dataclass
class Bench:
    """An Intake wired to fakes; ``published`` holds every Answer it sent, in order."""

    settings: Settings = field(default_factory=lambda: Settings.defaults(max_image_age=1.0))
    readiness: str = ''
    clock: FakeClock = field(default_factory=FakeClock)
    published: list[Answer] = field(default_factory=list)
    buffers: dict[str, FrameBuffer] = field(default_factory=dict)
    node_rate: float = 1.0  # node clock seconds per steady second while a drain waits
    # (node time, camera, message, stamp_s): frames delivered once the node clock reaches them
    scheduled: list = field(default_factory=list)

    def __post_init__(self):
        """Make the cameras and the intake."""
        self.buffers = {
            'head': FrameBuffer('head', 30, Image),
            'wrist': FrameBuffer('wrist', 30, CompressedImage),
        }
        self._arrived = threading.Condition()
        cameras = Cameras(
            {name: types.SimpleNamespace(buffer=buffer) for name, buffer in self.buffers.items()},
            self.clock.now_ns, self._drain,
        )  # fmt: skip
        self.intake = Intake(
            'vicrop', lambda: self.settings, lambda: self.readiness, lambda: cameras,
            self.published.append, self.clock.now_ns, monotonic=self.clock.monotonic,
        )  # fmt: skip

    def add_frame(self, camera: str, message, stamp_s: float | None = None) -> None:
        """Deliver ``message`` (Image or CompressedImage) to a camera, stamped ``stamp_s``."""
        if stamp_s is not None:
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(int(stamp_s * S), S)
        with self._arrived:
            self.buffers[camera].add(serialize_message(message), self.clock.now_ns())
            self._arrived.notify_all()

    def _drain(self, wait_s: float, until) -> None:
        """
        Fake of CameraNode.drain: frames are in the buffers already; wait for ``until``.

        A wait that is not cut short moves both clocks by ``wait_s`` times their rates
        (``node_rate``: the node clock's speed, as under use_sim_time), then delivers the
        frames ``scheduled`` for a node time now passed.
        """
        if until is None:
            return
        with self._arrived:
            if self._arrived.wait_for(until, min(wait_s, 0.001)):
                return
        self.clock.monotonic_s += wait_s
        self.clock.now_s += wait_s * self.node_rate
        for item in [item for item in self.scheduled if item[0] <= self.clock.now_s]:
            self.scheduled.remove(item)
            self.add_frame(*item[1:])

    def answers_of(self, job_id: str) -> list[Answer]:
        return [answer for answer in self.published if answer.id == job_id]


def rgb_image(rgb: np.ndarray, frame_id: str = 'head_optical') -> Image:
    """Return an rgb8 Image of HWC ``rgb``."""
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3)
    msg.header.frame_id = frame_id
    msg.data = rgb.tobytes()
    return msg


class GatedEngine:
    """
    A fake engine: reports the saliency stage, then waits until ``release`` or its stop checks.

    A stopped question ends with Canceled, as with the real engine at a stage or token; once
    released, the others answer 'gated' with no box. ``started`` is set while a batch is being
    served; ``batches`` holds each batch's questions.
    """

    def __init__(self):
        self.model = types.SimpleNamespace(device='cpu', name='gated')
        self.release = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[str]] = []

    @property
    def calls(self) -> int:
        """Return how many batches reached the engine."""
        return len(self.batches)

    def answer_batch(self, image, questions, stops=None, on_stage=None, **overrides):
        self.batches.append(list(questions))
        stops = [stop or (lambda: False) for stop in (stops or [None] * len(questions))]
        if on_stage is not None:
            on_stage('saliency')
        self.started.set()
        try:
            while not self.release.wait(0.01) and not all(stop() for stop in stops):
                pass
        finally:
            self.started.clear()
        timings = {'prepare': 0.0, 'saliency': 0.0, 'crop': 0.0, 'answer': 0.0, 'total': 0.0}
        method = Method(overrides.get('method', 'rel_att'))
        return [Canceled('canceled during the saliency stage') if stop()
                else VicropResult('gated', method, None, 0.0, None, (), timings)
                for stop in stops]  # fmt: skip

    def forget_frames(self) -> None:
        pass
