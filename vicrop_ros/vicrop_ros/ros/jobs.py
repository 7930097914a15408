"""A question on its way to exactly one Answer, and the bounded queue in front of the model."""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
import threading
import time

from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer

from .frames import FrameRequest

# Answer status value -> name ('OK', 'BUSY', ...), from the message's constants.
STATUS_NAMES: dict[int, str] = {
    value: name
    for name, value in vars(Answer).items()
    if name.isupper() and isinstance(value, int)
}


@dataclass(eq=False)
class Job:
    """
    One question, from the topic, the service or the action.

    ``finish`` records the answer once: the first caller (worker, timeout, cancel or an immediate
    refusal) wins, later calls are ignored, so every question gets exactly one Answer. Work on a
    job stops (:meth:`should_stop`) once it is decided or its cancel was requested.
    """

    id: str
    question: str
    camera: str  # as asked: a camera's name or '' (node default); 'image' when image is given
    method: str  # as asked: '' = node default
    stamp_ns: int  # the frame at this time; 0 = newest
    timeout_s: float  # seconds from arrival to TIMEOUT
    image: Image | None = None  # an image sent with the request instead of a camera frame
    frame_request: FrameRequest | None = None  # its camera frame, chosen or to be (undecoded)
    on_stage: Callable[[str], None] | None = None  # progress: 'queued', 'saliency', ...
    problem: str = ''  # why the request is malformed (a bad stamp or timeout), else ''
    arrival: float = field(default_factory=time.monotonic)  # time.monotonic() seconds
    # The node clock at arrival, nanoseconds (bag time under use_sim_time); 0 = not known.
    arrival_ns: int = 0
    started: float | None = None  # when the worker took it (monotonic seconds)
    cancel_requested: bool = False  # the caller asked to cancel (action goal)
    _answer: Answer | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _on_done: list[Callable[[Answer], None]] = field(default_factory=list)

    @property
    def source(self) -> str:
        """Return where the image comes from: 'image' (sent with the request) or the camera."""
        return 'image' if self.image is not None else self.camera

    @property
    def deadline(self) -> float:
        """Monotonic time at which the question times out."""
        return self.arrival + self.timeout_s

    @property
    def done(self) -> bool:
        """Whether the answer is decided."""
        return self._done.is_set()

    @property
    def answer(self) -> Answer | None:
        """Return the answer, once decided (else None)."""
        return self._answer

    def finish(self, answer: Answer) -> bool:
        """Record ``answer`` if none is yet; return whether this call decided it."""
        with self._lock:
            if self._answer is not None:
                return False
            self._answer = answer
            listeners, self._on_done = self._on_done, []
        self._done.set()
        for listener in listeners:
            listener(answer)
        return True

    def add_done_callback(self, listener: Callable[[Answer], None]) -> None:
        """Call ``listener(answer)`` once decided (at once if it already is)."""
        with self._lock:
            if self._answer is None:
                self._on_done.append(listener)
                return
        listener(self._answer)

    def request_cancel(self) -> None:
        """Ask the work on this job to stop (it ends CANCELED at the next stage or token)."""
        self.cancel_requested = True

    def should_stop(self) -> bool:
        """Return whether work on the job is pointless: decided, or its cancel requested."""
        return self.cancel_requested or self._done.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the answer; return whether it is decided."""
        return self._done.wait(timeout_s)

    def report(self, stage: str) -> None:
        """Tell the requester the job reached ``stage`` (no-op without a listener)."""
        if self.on_stage is not None:
            self.on_stage(stage)


class JobQueue:
    """
    Questions waiting for the one inference worker, served fairly across cameras.

    Each source (a camera, or ``image`` for images sent with requests) has a lane; ``take``
    serves the lane whose source was served least recently (first-come among those never
    served), oldest first within a lane. Busy lanes thus take turns, and a camera that has had
    nothing to ask for a while goes first when it asks: a quiet robot's question waits for the
    question in progress, not behind a chatty robot's queue. At most ``capacity`` jobs wait in all
    and ``lane_capacity`` in one lane. Jobs leave either by ``take`` (the worker) or by
    ``remove`` (cancel, timeout while queued).
    """

    def __init__(
        self,
        capacity: int,
        monotonic: Callable[[], float] = time.monotonic,
        lane_limit: int = 0,
    ):
        """
        Allow ``capacity`` waiting jobs, ``lane_limit`` (0: ``capacity``) per source.

        ``monotonic`` stamps ``Job.started``. Both limits may be changed at any time.
        """
        self.capacity = capacity
        self.lane_limit = lane_limit
        self._monotonic = monotonic
        self._lanes: dict[str, deque[Job]] = {}  # source -> its waiting jobs, oldest first
        self._served: dict[str, int] = {}  # source -> the turn it was last served at
        self._turn = 0
        self._count = 0
        self._cv = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        """Return the number of waiting jobs."""
        with self._cv:
            return self._count

    @property
    def lane_capacity(self) -> int:
        """Return how many jobs one source may have waiting."""
        return self.lane_limit or self.capacity

    def offer(self, job: Job) -> str:
        """Queue ``job``; return '' when queued, else why not (a full queue or lane; closed)."""
        with self._cv:
            if self._closed:
                return 'the node is shutting down'
            if self._count >= self.capacity:
                return f'{_questions_are(self.capacity)} already waiting (max_pending); retry'
            lane = self._lanes.get(job.source)
            if lane is not None and len(lane) >= self.lane_capacity:
                about = ('images sent with requests' if job.image is not None
                         else f'the {job.source} camera')  # fmt: skip
                return (f'{_questions_are(self.lane_capacity, about)} already waiting '
                        '(max_pending_per_camera); retry')  # fmt: skip
            if lane is None:
                lane = self._lanes[job.source] = deque()
            lane.append(job)
            self._count += 1
            self._cv.notify()
            return ''

    def take(self, timeout_s: float) -> Job | None:
        """
        Return the next job, waiting up to ``timeout_s``; None on timeout or when closed.

        The next job is the oldest of the lane served least recently (see the class docstring).
        """
        with self._cv:
            if not self._cv.wait_for(lambda: self._count or self._closed, timeout_s):
                return None
            if self._closed:
                return None
            source = min(self._lanes, key=lambda name: (self._served.get(name, -1),
                                                        self._lanes[name][0].arrival))  # fmt: skip
            lane = self._lanes[source]
            job = lane.popleft()
            self._count -= 1
            if not lane:
                del self._lanes[source]
            self._served[source] = self._turn
            self._turn += 1
            job.started = self._monotonic()
            return job

    def take_where(self, wanted: Callable[[Job], bool], limit: int) -> list[Job]:
        """
        Remove and return up to ``limit`` waiting jobs for which ``wanted(job)``, oldest first.

        For jobs served together with the one just taken (the same frame): they leave the queue
        as if taken, ``Job.started`` set, with the lane of the job taken before them.
        """
        with self._cv:
            chosen = sorted((job for lane in self._lanes.values() for job in lane if wanted(job)),
                            key=lambda job: job.arrival)[: max(0, limit)]  # fmt: skip
            started = self._monotonic()
            for job in chosen:
                lane = self._lanes[job.source]
                lane.remove(job)
                self._count -= 1
                if not lane:
                    del self._lanes[job.source]
                job.started = started
            return chosen

    def remove(self, job: Job) -> bool:
        """Take ``job`` out if it is still waiting; return whether it was."""
        with self._cv:
            lane = self._lanes.get(job.source)
            try:
                lane.remove(job)
            except (AttributeError, ValueError):  # no such lane, or not in it
                return False
            self._count -= 1
            if not lane:
                del self._lanes[job.source]
            return True

    def drain(self) -> list[Job]:
        """Remove and return every waiting job, oldest first."""
        with self._cv:
            jobs = sorted((job for lane in self._lanes.values() for job in lane),
                          key=lambda job: job.arrival)  # fmt: skip
            self._lanes.clear()
            self._count = 0
            return jobs

    def close(self) -> None:
        """Wake the worker and refuse new jobs."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()


def _questions_are(count: int, about: str = '') -> str:
    """Return '1 question is' or 'N questions are', with ``about`` after the noun when given."""
    noun, verb = ('question', 'is') if count == 1 else ('questions', 'are')
    return f'{count} {noun} {f"about {about} " if about else ""}{verb}'
