"""
Where every question enters and its one Answer leaves: checks, refusals, the queue, timeouts.

Questions come from the topic, the service and the action as :class:`~.jobs.Job`s.
:meth:`Intake.submit` checks a job (readiness, text, camera, method, stamp), chooses its frame
(or leaves it to be decided when it arrives), registers its id and queues it, or refuses it at once
(NOT_READY, BAD_REQUEST, BUSY, NO_IMAGE, STALE_IMAGE). :meth:`Intake.finish` decides a job exactly
once and publishes its Answer. No node here: the clock, the publisher and the cameras are given,
so the whole path is testable without DDS.
"""

from collections import Counter, deque
from collections.abc import Callable
import math
import threading
import time
import unicodedata
import uuid

from vicrop_interfaces.msg import Answer

from .answers import Refusal, refusal_answer
from .cameras import Cameras
from .frames import Frame, FrameChoiceError, FrameRequest
from .jobs import STATUS_NAMES, Job, JobQueue
from .params import METHODS, SPEC_BY_NAME, Settings

# The longest timeout a request may ask for: the timeout parameter's own maximum.
# The steady-clock step of a frame wait that runs on the node clock (see Intake.await_frame).
FRAME_WAIT_SLICE_S = 0.1
MAX_TIMEOUT_S = SPEC_BY_NAME['timeout'].maximum


def stamp_ns(stamp) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds (see stamp_problem)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def stamp_problem(stamp) -> str:
    """Return why a request's builtin_interfaces/Time cannot be a frame's stamp, or ''."""
    if stamp.nanosec >= 1_000_000_000:
        return f'the stamp has nanosec {stamp.nanosec}, which must be below 1000000000'
    if stamp.sec < 0:
        return f'the stamp has a negative sec ({stamp.sec})'
    return ''


def timeout_problem(timeout: float) -> str:
    """Return why a request's timeout (seconds; 0 = the node's) cannot be used, or ''."""
    if not math.isfinite(timeout) or timeout < 0:
        return f'the timeout {timeout} must be 0 (the node default) or a positive number'
    if timeout > MAX_TIMEOUT_S:
        return f'the timeout {timeout:g} s is over the limit of {MAX_TIMEOUT_S:g} s'
    return ''


def visible(text: str) -> bool:
    """Return whether ``text`` has a character a person can see (not space, control, format)."""
    return any(unicodedata.category(c)[0] not in 'ZC' for c in text)


def check_request(job: Job, settings: Settings, now_ns: int) -> None:
    """Raise Refusal (BAD_REQUEST) for a question that cannot be served as asked."""
    if job.problem:
        raise Refusal(Answer.BAD_REQUEST, job.problem)
    if not visible(job.question):
        raise Refusal(Answer.BAD_REQUEST, 'the question is empty (nothing visible in it)')
    limit = settings.max_question_length
    if len(job.question) > limit:
        raise Refusal(
            Answer.BAD_REQUEST,
            f'the question is too long ({len(job.question)} > {limit} characters, '
            'max_question_length)',
        )
    ahead_s = (job.stamp_ns - now_ns) / 1e9
    if job.stamp_ns and ahead_s > settings.max_image_age:
        raise Refusal(
            Answer.BAD_REQUEST,
            f'the stamp is {ahead_s:.3f} s in the future (max_image_age '
            f'{settings.max_image_age:.3f} s): no frame of that time can exist yet',
        )
    cameras = settings.camera_names
    if job.image is None and job.camera not in ('', *cameras):
        raise Refusal(
            Answer.BAD_REQUEST,
            f"unknown camera {job.camera!r}; use {', '.join(cameras)} or '' for the default",
        )
    if job.method not in ('', *METHODS):
        raise Refusal(
            Answer.BAD_REQUEST,
            f"unknown method {job.method!r}; use {', '.join(METHODS)} or '' for the default",
        )


class Intake:
    """The questions in flight, the queue in front of the worker, and the answers given."""

    def __init__(
        self,
        name: str,
        settings: Callable[[], Settings],
        readiness: Callable[[], str],
        cameras: Callable[[], Cameras | None],
        publish: Callable[[Answer], None],
        now_ns: Callable[[], int],
        logger=None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """
        Serve questions for node ``name``.

        ``settings()`` returns the current parameters; ``readiness()`` '' when questions are
        served, else the NOT_READY reason; ``cameras()`` the subscribed cameras (None when not
        configured); ``publish`` sends an Answer; ``now_ns`` is the node clock (stamps),
        ``monotonic`` the clock of arrivals and deadlines (seconds).
        """
        self._name, self._settings, self._readiness = name, settings, readiness
        self._cameras, self._publish, self._now_ns = cameras, publish, now_ns
        self._logger, self._monotonic = logger, monotonic
        self.queue = JobQueue(settings().max_pending, monotonic, settings().max_pending_per_camera)
        self._in_flight: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.status_counts: Counter[str] = Counter()  # answers per status name
        self.latencies_ms: deque[float] = deque(maxlen=200)  # total_ms of recent OK answers

    @property
    def in_flight(self) -> int:
        """Return the number of questions not yet answered."""
        with self._lock:
            return len(self._in_flight)

    # ----- jobs from the three interfaces -------------------------------------------------------

    def new_job(self, job_id, question, camera, method, stamp, timeout, **extra) -> Job:
        """
        Make a Job with the node's defaults filled in (id, timeout), arriving now.

        An empty id becomes ``<node>-<uuid4>``, which no caller's id collides with by chance.
        A stamp or timeout that cannot be used is recorded as the job's problem (refused by
        :meth:`submit`) and replaced by a harmless value, so no clock ever sees it.
        """
        problem = stamp_problem(stamp) or timeout_problem(timeout)
        return Job(
            id=job_id or f'{self._name}-{uuid.uuid4()}',
            question=question,
            camera=camera,
            method=method,
            stamp_ns=0 if problem else stamp_ns(stamp),
            timeout_s=self._settings().timeout if problem or timeout == 0 else timeout,
            arrival=self._monotonic(),
            arrival_ns=self._now_ns(),
            problem=problem,
            **extra,
        )

    def job_from_question(self, msg) -> Job:
        """Make a Job from a vicrop_interfaces/Question."""
        return self.new_job(msg.id, msg.question, msg.camera, msg.method, msg.header.stamp, 0.0)

    def job_from_request(self, request, on_stage=None) -> Job:
        """Make a Job from an Ask request or an AskQuestion goal (same fields)."""
        image = request.image
        given = image.width > 0 or image.height > 0 or len(image.data) > 0
        return self.new_job(
            request.id, request.question, request.camera, request.method, request.stamp,
            request.timeout, image=image if given else None, on_stage=on_stage,
        )  # fmt: skip

    # ----- in and out ----------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Check and queue ``job``, or decide it at once; return it."""
        settings = self._settings()
        try:
            not_ready = self._readiness()
            if not_ready:
                raise Refusal(Answer.NOT_READY, not_ready)
            check_request(job, settings, self._now_ns())
            if job.image is None:
                job.camera = job.camera or settings.default_camera
                job.frame_request = self.request_frame(job, settings)
            with self._lock:
                if job.id in self._in_flight:
                    raise Refusal(
                        Answer.BAD_REQUEST, f'a question with id {job.id!r} is in flight'
                    )
                self._in_flight[job.id] = job
            full = self.queue.offer(job)
            if full:
                raise Refusal(Answer.BUSY, full)
        except Refusal as refusal:
            self.refuse(job, refusal)
            return job
        job.report('queued')
        return job

    def request_frame(self, job: Job, settings: Settings) -> FrameRequest:
        """Return the request for the job's camera frame, or refuse when it is decided no frame."""
        cameras = self._cameras()
        if cameras is None:
            raise Refusal(Answer.NOT_READY, 'the cameras are not subscribed')
        max_age_ns = int(settings.max_image_age * 1e9)
        try:
            request = cameras.request(job.camera, job.stamp_ns, max_age_ns)
            if request.decided:
                request.result()  # a refusal now, without queueing
            return request
        except FrameChoiceError as error:
            raise Refusal(getattr(Answer, error.status), str(error)) from None

    def await_frame(self, job: Job, settings: Settings) -> Frame:
        """
        Return the job's camera frame, or refuse.

        A frame that has not come waits until ``frame_wait`` after the question arrived, so a
        burst of questions about a silent camera costs the worker one wait, not one each. The
        wait runs on the node's clock: under ``use_sim_time`` it is bag time, so a bag replayed
        at any rate gives each question the same frames. A node clock that stands still
        for ``frame_wait`` steady seconds ends the wait too: no bag plays, no frame will come.
        """
        cameras = self._cameras()
        if cameras is None:
            raise Refusal(Answer.NOT_READY, 'the cameras were unsubscribed before it ran')
        request = job.frame_request
        deadline_ns = (job.arrival_ns or self._now_ns()) + int(settings.frame_wait * 1e9)
        clock_ns, moved = self._now_ns(), self._monotonic()
        while not request.decided and not job.should_stop():
            now_ns = self._now_ns()
            if now_ns >= deadline_ns:
                break
            if now_ns != clock_ns:
                clock_ns, moved = now_ns, self._monotonic()
            elif self._monotonic() - moved >= settings.frame_wait:
                break  # the node clock stands still (a paused or ended bag): nothing will come
            # In steady slices (ending early when the frame comes): the node clock may run
            # slower or faster than the steady one, so its remaining time is no steady wait.
            cameras.drain(FRAME_WAIT_SLICE_S, lambda: request.decided)
        try:
            return cameras.await_frame(job.camera, request, 0.0)
        except FrameChoiceError as error:
            raise Refusal(getattr(Answer, error.status), str(error)) from None

    def refuse(self, job: Job, refusal: Refusal) -> None:
        """Decide ``job`` with an error answer."""
        self.finish(job, refusal_answer(job, self._settings().model, refusal))

    def finish(self, job: Job, answer: Answer) -> bool:
        """Decide ``job`` with ``answer`` and publish it, exactly once; return whether it did."""
        if answer.status != Answer.OK and not answer.error:
            raise AssertionError('an error answer needs a reason')
        answer.total_ms = (self._monotonic() - job.arrival) * 1000.0
        with self._lock:
            if self._in_flight.get(job.id) is job:
                del self._in_flight[job.id]
        if job.frame_request is not None:
            job.frame_request.withdraw()  # a camera need not wait for it any more
        if not job.finish(answer):
            return False
        self._publish(answer)
        name = STATUS_NAMES.get(answer.status, str(answer.status))
        self.status_counts[name] += 1
        if answer.status == Answer.OK:
            self.latencies_ms.append(answer.total_ms)
        expected = (Answer.OK, Answer.BUSY, Answer.NOT_READY)  # not worth a warning each
        if self._logger is not None and answer.status not in expected:
            self._logger.warning(f'question {job.id}: {name}: {answer.error}')
        return True

    # ----- ends other than an answer ------------------------------------------------------------

    def cancel(self, job: Job) -> None:
        """Cancel ``job``: CANCELED at once while queued, else at the worker's next check."""
        job.request_cancel()
        if self.queue.remove(job):
            self.refuse(job, Refusal(Answer.CANCELED, 'canceled by the caller while queued'))

    def expire_overdue(self) -> None:
        """Answer TIMEOUT for every question past its deadline (called by a timer)."""
        now = self._monotonic()
        with self._lock:
            overdue = [job for job in self._in_flight.values() if now > job.deadline]
        for job in overdue:
            self.queue.remove(job)
            where = (
                'while waiting in the queue' if job.started is None else 'while the model worked'
            )
            reason = f'not answered within {job.timeout_s:.3g} s ({where})'
            self.refuse(job, Refusal(Answer.TIMEOUT, reason))

    def refuse_all(self, status: int, reason: str, queued_only: bool = False) -> None:
        """Decide every queued (and, unless ``queued_only``, running) question with ``status``."""
        for job in self.queue.drain():
            self.refuse(job, Refusal(status, reason))
        if not queued_only:
            with self._lock:
                running = list(self._in_flight.values())
            for job in running:
                self.refuse(job, Refusal(status, reason))
