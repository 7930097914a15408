"""
``vicrop_node``: ViCrop as a managed ROS 2 node.

Cameras (head, wrist) fill ring buffers of undecoded messages; questions arrive on
``~/questions``, the ``~/ask`` service and the ``~/ask_question`` action; one worker thread serves
a bounded queue with the model; every question gets exactly one ``~/answers`` message, stamped with
the header of the frame it used, plus a ``~/crop_boxes`` message and a ``~/saliency`` image when it
was answered with a crop. The model is loaded on configure and freed on cleanup.
"""

from collections import Counter, deque
import itertools
import threading
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, CropBox, Question
from vicrop_interfaces.srv import Ask

from .frames import FrameBuffer, FrameChoiceError
from .images import BadImageError, bgr_image_message, decode_rgb
from .jobs import STATUS_NAMES, Job, JobQueue
from .params import CAMERAS, METHODS, Settings, declare_parameters

RESULTS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
# Late-joining action clients still get the stages already reported.
FEEDBACK_QOS = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
DIAGNOSTICS_REFILL_TICKS = 10  # diagnostics take waiting camera frames every 10 s
FRAME_WAIT_S = 1.0  # longest wait for the frame of a question stamped after the newest frame
STAGES = {
    'queued': AskQuestion.Feedback.QUEUED,
    'saliency': AskQuestion.Feedback.SALIENCY,
    'cropping': AskQuestion.Feedback.CROPPING,
    'answering': AskQuestion.Feedback.ANSWERING,
}


class AnswerError(Exception):
    """An error answer to give: ``status`` is an Answer status value, the message its reason."""

    def __init__(self, status: int, reason: str):
        """Record the status and the reason."""
        super().__init__(reason)
        self.status = status


class VicropNode(LifecycleNode):
    """The ViCrop perception node (lifecycle: the model lives between configure and cleanup)."""

    def __init__(self, make_engine=None, **kwargs):
        """
        Declare parameters and create the question and answer interfaces.

        ``make_engine(settings) -> Vicrop`` builds the engine on configure (default:
        :func:`load_engine`); ``kwargs`` go to ``rclpy`` (``context``, ``parameter_overrides``).
        """
        super().__init__('vicrop', **kwargs)
        self._make_engine = make_engine or load_engine
        declare_parameters(self)
        self.settings = Settings.from_node(self)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._engine = None  # vicrop_ros.core.Vicrop while configured
        self._buffers: dict[str, FrameBuffer] = {}
        self._camera_node = None  # owns the camera readers; never spun (see frames.py)
        self._diagnostics_ticks = 0
        self._queue = JobQueue(self.settings.max_pending)
        self._in_flight: dict[str, Job] = {}
        self._in_flight_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._active = False
        self._load_error = ''  # why the last configure failed
        self._device = ''  # where the model runs, once loaded
        self._status_counts: Counter[str] = Counter()  # answers per status name
        self._latencies_ms: deque[float] = deque(maxlen=200)  # total_ms of recent OK answers

        self._requests_group = ReentrantCallbackGroup()
        self.answers = self.create_publisher(Answer, '~/answers', RESULTS_QOS)
        self.crop_boxes = self.create_publisher(CropBox, '~/crop_boxes', RESULTS_QOS)
        self.saliency = self.create_publisher(Image, '~/saliency', RESULTS_QOS)
        self.create_subscription(
            Question, '~/questions', self._on_question, RESULTS_QOS,
            callback_group=self._requests_group,
        )  # fmt: skip
        self.create_service(Ask, '~/ask', self._on_ask, callback_group=self._requests_group)
        self._action = ActionServer(
            self, AskQuestion, '~/ask_question', self._execute_goal,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda goal_handle: CancelResponse.ACCEPT,
            callback_group=self._requests_group, feedback_pub_qos_profile=FEEDBACK_QOS,
        )  # fmt: skip
        # Topic questions past their deadline (service and action waiters check their own).
        self.create_timer(0.2, self._expire_overdue, callback_group=self._requests_group)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._requests_group)
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name='vicrop_worker', daemon=True)
        self._worker.start()

    # ----- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load the model and subscribe to the cameras."""
        settings = self.settings
        self.get_logger().info(
            f'loading model {settings.model!r} (device {settings.device}, dtype {settings.dtype})'
        )
        try:
            engine = self._make_engine(settings)
        except Exception as error:  # noqa: BLE001 (any load failure leaves the node unconfigured)
            self._load_error = f'cannot load model {settings.model!r}: {error}'
            self.get_logger().error(self._load_error)
            return TransitionCallbackReturn.FAILURE
        self._load_error = ''
        self._device = str(engine.model.device)
        self._engine = engine
        for camera in CAMERAS:
            self._subscribe_camera(camera)
        self.get_logger().info(f'model {settings.model!r} loaded on {self._device}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start answering questions."""
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop answering: new questions get NOT_READY, queued ones too."""
        self._active = False
        for job in self._queue.drain():
            self._finish(
                job, self._refusal_answer(job, AnswerError(Answer.NOT_READY, 'node deactivated'))
            )
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Free the model (and GPU memory) and unsubscribe the cameras."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Free everything."""
        self._active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Drop the model and the camera subscriptions."""
        self._engine = None
        self._buffers.clear()
        if self._camera_node is not None:
            self._camera_node.destroy_node()
            self._camera_node = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def stop(self) -> None:
        """Stop the worker thread (before destroying the node)."""
        self._stopping = True
        self._queue.close()
        self._worker.join(timeout=10)

    # ----- cameras -----------------------------------------------------------------------------

    def _subscribe_camera(self, camera: str) -> None:
        """
        Subscribe to one camera with a reader whose DDS history is the frame buffer.

        The reader belongs to a companion node that no executor spins: frames wait in DDS
        (KEEP_LAST ``buffer_length``, sensor-data QoS otherwise) until a question takes them.
        """
        topic, transport, reliability = self.settings.camera(camera)
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.settings.buffer_length,
            durability=qos_profile_sensor_data.durability,
            reliability=ReliabilityPolicy.RELIABLE
            if reliability == 'reliable'
            else ReliabilityPolicy.BEST_EFFORT,
        )
        if self._camera_node is None:
            self._camera_node = rclpy.create_node(
                f'{self.get_name()}_cameras', namespace=self.get_namespace(),
                context=self.context, start_parameter_services=False,
                use_global_arguments=False,
            )  # fmt: skip
        message_type = CompressedImage if transport == 'compressed' else Image
        reader = self._camera_node.create_subscription(
            message_type, topic, lambda data: None, qos, raw=True
        )

        def take() -> bytes | None:
            with reader.handle:
                taken = reader.handle.take_message(reader.msg_type, True)
            return None if taken is None else taken[0]

        self._buffers[camera] = FrameBuffer(
            camera, self.settings.buffer_length, take, message_type,
            lambda: self.get_clock().now().nanoseconds,
        )  # fmt: skip
        self.get_logger().info(f'{camera} camera: {topic} ({transport}, {reliability})')

    # ----- requests ----------------------------------------------------------------------------

    def _on_question(self, msg: Question) -> None:
        """Queue a question from the topic; its answer is published when decided."""
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._submit(self._new_job(msg.id, msg.question, msg.camera, msg.method, stamp_ns, 0.0))

    def _on_ask(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        """Serve the Ask service: queue the question and wait for its answer."""
        job = self._job_from_request(request)
        self._submit(job)
        response.answer = self._wait(job)
        return response

    def _execute_goal(self, goal_handle) -> AskQuestion.Result:
        """Serve an AskQuestion goal: as Ask, with stage feedback and cancel while queued."""
        started = time.monotonic()

        def feedback(stage: str) -> None:
            elapsed_ms = (time.monotonic() - started) * 1000.0
            goal_handle.publish_feedback(
                AskQuestion.Feedback(stage=STAGES[stage], elapsed_ms=elapsed_ms)
            )

        job = self._job_from_request(goal_handle.request, on_stage=feedback)
        self._submit(job)
        while not job.wait(0.02):
            if goal_handle.is_cancel_requested and self._queue.remove(job):
                self._finish(job, self._refusal_answer(job, AnswerError(
                    Answer.CANCELED, 'canceled by the caller while queued')))  # fmt: skip
            elif time.monotonic() > job.deadline:
                self._time_out(job)
        answer = job.answer
        if answer.status == Answer.CANCELED:
            goal_handle.canceled()
        elif answer.status == Answer.OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return AskQuestion.Result(answer=answer)

    def _job_from_request(self, request, on_stage=None) -> Job:
        """Make a Job from an Ask request or an AskQuestion goal (same fields)."""
        stamp_ns = request.stamp.sec * 1_000_000_000 + request.stamp.nanosec
        has_image = request.image.width > 0 or request.image.height > 0 or len(request.image.data)
        job = self._new_job(
            request.id, request.question, request.camera, request.method, stamp_ns,
            request.timeout, image=request.image if has_image else None, on_stage=on_stage,
        )  # fmt: skip
        return job

    def _new_job(self, job_id, question, camera, method, stamp_ns, timeout, **extra) -> Job:
        """Make a Job with the node's defaults filled in (id, timeout)."""
        return Job(
            id=job_id or f'{self.get_name()}-{next(self._ids)}',
            question=question,
            camera=camera,
            method=method,
            stamp_ns=stamp_ns,
            timeout_s=timeout if timeout > 0 else self.settings.timeout,
            **extra,
        )

    def _wait(self, job: Job) -> Answer:
        """Block until ``job`` is decided (times it out at its deadline); return the answer."""
        while not job.wait(max(0.0, job.deadline - time.monotonic()) + 0.05):
            self._time_out(job)
        return job.answer

    def _submit(self, job: Job) -> None:
        """Check and queue a job, or decide it at once (NOT_READY, BAD_REQUEST, BUSY)."""
        try:
            self._check_request(job)
            self._choose_frame(job)
            with self._in_flight_lock:
                if job.id in self._in_flight:
                    raise AnswerError(
                        Answer.BAD_REQUEST, f'a question with id {job.id!r} is in flight'
                    )
                self._in_flight[job.id] = job
            if not self._queue.offer(job):
                raise AnswerError(
                    Answer.BUSY,
                    f'{self._queue.capacity} questions are already waiting (max_pending); retry',
                )
        except AnswerError as refusal:
            self._finish(job, self._refusal_answer(job, refusal))
            return
        job.report('queued')

    def _check_request(self, job: Job) -> None:
        """Raise AnswerError for a question that cannot be served as asked."""
        if not self._active:
            state = 'unconfigured' if self._engine is None else 'inactive'
            raise AnswerError(
                Answer.NOT_READY, f'the node is {state}: no model is serving questions'
            )
        if not job.question.strip():
            raise AnswerError(Answer.BAD_REQUEST, 'the question is empty')
        limit = self.settings.max_question_length
        if len(job.question) > limit:
            raise AnswerError(
                Answer.BAD_REQUEST,
                f'the question is too long ({len(job.question)} > {limit} characters, '
                'max_question_length)',
            )
        ahead_s = (job.stamp_ns - self.get_clock().now().nanoseconds) / 1e9
        if job.stamp_ns and ahead_s > self.settings.max_image_age:
            raise AnswerError(
                Answer.BAD_REQUEST,
                f'the stamp is {ahead_s:.3f} s in the future (max_image_age '
                f'{self.settings.max_image_age:.3f} s): no frame of that time can exist yet',
            )
        if job.image is None and job.camera not in ('', *CAMERAS):
            raise AnswerError(
                Answer.BAD_REQUEST,
                f"unknown camera {job.camera!r}; use {', '.join(CAMERAS)} or '' for the default",
            )
        if job.method not in ('', *METHODS):
            raise AnswerError(
                Answer.BAD_REQUEST,
                f"unknown method {job.method!r}; use {', '.join(METHODS)} or '' for the default",
            )

    def _expire_overdue(self) -> None:
        """Timer: answer TIMEOUT for every question past its deadline."""
        now = time.monotonic()
        with self._in_flight_lock:
            overdue = [job for job in self._in_flight.values() if now > job.deadline]
        for job in overdue:
            self._time_out(job)

    def _time_out(self, job: Job) -> None:
        """Decide ``job`` as TIMEOUT (a no-op when already decided)."""
        self._queue.remove(job)
        where = 'while waiting in the queue' if job.started is None else 'while the model worked'
        self._finish(job, self._refusal_answer(job, AnswerError(
            Answer.TIMEOUT, f'not answered within {job.timeout_s:.3g} s ({where})')))  # fmt: skip

    # ----- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        """Serve queued jobs one at a time until stopped (the inference worker thread)."""
        while not self._stopping:
            job = self._queue.take(timeout_s=0.2)
            if job is None or job.done:
                continue
            try:
                self._serve(job)
            except Exception:  # noqa: BLE001 (the worker must survive anything)
                self.get_logger().error(f'unexpected error on {job.id}:\n{traceback.format_exc()}')
                self._finish(job, self._refusal_answer(job, AnswerError(
                    Answer.MODEL_ERROR, 'internal error; see the node log')))  # fmt: skip

    def _serve(self, job: Job) -> None:
        """Answer one job with the model and publish the results."""
        answer = self._blank_answer(job)
        answer.queue_wait_ms = (job.started - job.arrival) * 1000.0
        try:
            engine = self._engine
            if engine is None or not self._active:
                raise AnswerError(
                    Answer.NOT_READY, 'the model was unloaded before this question ran'
                )
            if job.image is None and job.frame is None:
                self._choose_frame(job, wait_s=min(self.settings.max_image_age, FRAME_WAIT_S))
            header, rgb = self._decode(job)
            answer.header, answer.camera = header, job.source
            answer.image_width, answer.image_height = int(rgb.shape[1]), int(rgb.shape[0])
            method = job.method or self.settings.method
            answer.method = method
            result = engine(
                rgb, job.question, on_stage=job.report, method=method,
                max_new_tokens=self.settings.max_new_tokens,
                tile_threshold=self.settings.tile_threshold,
                attention_layer=None if self.settings.attention_layer < 0
                else self.settings.attention_layer,
            )  # fmt: skip
        except AnswerError as refusal:
            answer.status, answer.error = refusal.status, str(refusal)
            self._finish(job, answer)
            return
        except Exception as error:  # noqa: BLE001 (a model failure must not stop the node)
            answer.status = Answer.MODEL_ERROR
            answer.error = self._model_error_text(error)
            self._finish(job, answer)
            return
        answer.answer = result.answer
        answer.status = Answer.OK
        timings = result.timings_ms
        answer.saliency_ms, answer.crop_ms = timings['saliency'], timings['crop']
        answer.answer_ms = timings['prepare'] + timings['answer']  # the prefix is answer work
        if result.box is not None:
            answer.crop = RegionOfInterest(
                x_offset=result.box.x0, y_offset=result.box.y0,
                width=result.box.width, height=result.box.height,
            )  # fmt: skip
            answer.crop_score = float(result.score)
        if job.done:  # timed out meanwhile: its TIMEOUT answer stands
            return
        if result.box is not None:
            self.crop_boxes.publish(CropBox(
                header=answer.header, id=job.id, camera=answer.camera, roi=answer.crop,
                score=answer.crop_score))  # fmt: skip
            if self.settings.publish_saliency and result.saliency is not None:
                from ..visualize import saliency_overlay

                overlay = saliency_overlay(rgb, result.saliency, result.box)
                self.saliency.publish(bgr_image_message(overlay, answer.header))
        self._finish(job, answer)

    def _model_error_text(self, error: Exception) -> str:
        """Return a MODEL_ERROR reason; free kept frames and GPU memory after out-of-memory."""
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            if self._engine is not None:
                self._engine.forget_frames()  # kept prefixes are the first memory to give back
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return f'out of GPU memory ({error}); try a smaller image or tile_threshold'
        if isinstance(error, ValueError):
            return f'cannot answer: {error}'
        self.get_logger().error(f'model error:\n{traceback.format_exc()}')
        return f'model failed: {type(error).__name__}: {error}'

    def _choose_frame(self, job: Job, wait_s: float = 0.0) -> None:
        """
        Pick the camera frame a question is about (undecoded) into ``job.frame``.

        Raises AnswerError for NO_IMAGE or STALE_IMAGE. Called on arrival with ``wait_s`` 0, so
        that "the frame at this time" does not depend on the queue; when the question's stamp is
        newer than every buffered frame, its frame may still be on the way: the choice is left
        to the worker, which waits up to ``wait_s`` for a frame at or after the stamp.
        """
        if job.image is not None:
            return
        camera = job.camera or self.settings.default_camera
        buffer = self._buffers.get(camera)
        if buffer is None:
            raise AnswerError(Answer.NOT_READY, f'the {camera} camera is not subscribed')
        job.camera = camera
        deadline = time.monotonic() + wait_s
        while job.stamp_ns and (buffer.newest_stamp_ns() or 0) < job.stamp_ns:
            if wait_s == 0.0:
                return  # decided by the worker
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        try:
            job.frame = buffer.choose(
                job.stamp_ns,
                self.get_clock().now().nanoseconds,
                int(self.settings.max_image_age * 1e9),
            )
        except FrameChoiceError as error:
            raise AnswerError(getattr(Answer, error.status), str(error)) from None

    def _decode(self, job: Job):
        """Return (header, rgb) of the job's image, or raise AnswerError (BAD_IMAGE)."""
        if job.image is not None:
            message = job.image
        else:
            message = deserialize_message(job.frame.data, job.frame.message_type)
        try:
            rgb = decode_rgb(message, self.settings.max_image_pixels)
        except BadImageError as error:
            raise AnswerError(Answer.BAD_IMAGE, f'{job.source} image: {error}') from None
        return message.header, rgb

    # ----- answers -----------------------------------------------------------------------------

    def _blank_answer(self, job: Job) -> Answer:
        """Return an Answer carrying the job's identity, nothing decided yet."""
        answer = Answer(id=job.id, question=job.question, model=self.settings.model)
        answer.camera = job.source
        answer.method = job.method
        answer.header = Header()
        return answer

    def _refusal_answer(self, job: Job, refusal: AnswerError) -> Answer:
        """Return an error Answer for ``job``."""
        answer = self._blank_answer(job)
        answer.status, answer.error = refusal.status, str(refusal)
        return answer

    def _finish(self, job: Job, answer: Answer) -> None:
        """Decide ``job`` with ``answer`` and publish it, exactly once per job."""
        if answer.status != Answer.OK and not answer.error:
            raise AssertionError('an error answer needs a reason')
        answer.total_ms = (time.monotonic() - job.arrival) * 1000.0
        if not job.finish(answer):
            return
        with self._in_flight_lock:
            if self._in_flight.get(job.id) is job:
                del self._in_flight[job.id]
        self.answers.publish(answer)
        self._status_counts[STATUS_NAMES.get(answer.status, str(answer.status))] += 1
        if answer.status == Answer.OK:
            self._latencies_ms.append(answer.total_ms)
        if answer.status == Answer.BUSY:  # expected under load: not worth a warning each
            self.get_logger().debug(f'question {job.id}: BUSY')
        elif answer.status != Answer.OK:
            name = STATUS_NAMES.get(answer.status, answer.status)
            self.get_logger().warning(f'question {job.id}: {name}: {answer.error}')

    # ----- diagnostics ---------------------------------------------------------------------------

    def _state(self) -> str:
        """Return 'active', 'inactive' or 'unconfigured'."""
        if self._active:
            return 'active'
        return 'inactive' if self._engine is not None else 'unconfigured'

    def _publish_diagnostics(self) -> None:
        """Publish the node's health on /diagnostics (1 Hz)."""
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self._model_status(), self._questions_status()]
        array.status += [self._camera_status(camera) for camera in CAMERAS]
        self.diagnostics.publish(array)
        self._diagnostics_ticks += 1

    def _diagnostic(self, part: str, level: bytes, message: str, **values) -> DiagnosticStatus:
        """Return one DiagnosticStatus of this node."""
        return DiagnosticStatus(
            level=level,
            name=f'{self.get_fully_qualified_name()}: {part}',
            message=message,
            hardware_id=self._device,
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )

    def _model_status(self) -> DiagnosticStatus:
        """Report the model: OK when active, ERROR when it failed to load, WARN otherwise."""
        state = self._state()
        if state == 'active':
            level, message = DiagnosticStatus.OK, 'serving questions'
        elif self._load_error:
            level, message = DiagnosticStatus.ERROR, self._load_error
        else:
            level, message = DiagnosticStatus.WARN, f'{state}: not serving questions'
        return self._diagnostic(
            'model', level, message, state=state, model=self.settings.model,
            device=self._device,
        )  # fmt: skip

    def _questions_status(self) -> DiagnosticStatus:
        """Report queue depth, latencies and answers per status."""
        depth, capacity = len(self._queue), self._queue.capacity
        latencies = sorted(self._latencies_ms)
        last = self._latencies_ms[-1] if self._latencies_ms else float('nan')
        p95 = (
            latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
            if latencies
            else float('nan')
        )
        level = DiagnosticStatus.WARN if depth >= capacity else DiagnosticStatus.OK
        counts = {f'answers_{name}': self._status_counts[name] for name in STATUS_NAMES.values()}
        return self._diagnostic(
            'questions', level, f'{depth} of {capacity} waiting', queue_depth=depth,
            max_pending=capacity, in_flight=len(self._in_flight),
            last_latency_ms=f'{last:.1f}', p95_latency_ms=f'{p95:.1f}', **counts,
        )  # fmt: skip

    def _camera_status(self, camera: str) -> DiagnosticStatus:
        """Report the age of the camera's newest frame: OK within max_image_age, else WARN."""
        topic = self.settings.camera(camera)[0]
        buffer = self._buffers.get(camera)
        # Taking frames costs: refresh every DIAGNOSTICS_REFILL_TICKS-th report only.
        refill = self._diagnostics_ticks % DIAGNOSTICS_REFILL_TICKS == 0
        newest = buffer.newest_stamp_ns(refill) if buffer else None
        if newest is None:
            return self._diagnostic(
                f'{camera} camera', DiagnosticStatus.WARN, 'no frame received', topic=topic,
                age_s='nan', frames_received=buffer.received if buffer else 0,
            )  # fmt: skip
        age_s = (buffer.checked_ns - newest) / 1e9  # when last checked
        checked_s = (self.get_clock().now().nanoseconds - buffer.checked_ns) / 1e9
        stale = age_s > self.settings.max_image_age
        return self._diagnostic(
            f'{camera} camera', DiagnosticStatus.WARN if stale else DiagnosticStatus.OK,
            f'newest frame {age_s:.3f} s old ({checked_s:.1f} s ago)', topic=topic,
            age_s=f'{age_s:.3f}', checked_s_ago=f'{checked_s:.1f}',
            frames_received=buffer.received,
        )  # fmt: skip

    # ----- parameters --------------------------------------------------------------------------

    def _on_parameters_set(self, parameters) -> None:
        """Take accepted parameter changes into effect."""
        self.settings = Settings.from_node(self)
        self._queue.capacity = self.settings.max_pending


def load_engine(settings: Settings):
    """Load the configured model and return the ViCrop engine around it."""
    from ..core import Vicrop
    from ..models.loader import load_model

    model = load_model(settings.model, settings.device, settings.dtype, settings.trust_remote_code)
    return Vicrop(model, reuse_frames=settings.reuse_frames)


def main(args=None) -> None:
    """Run the node with a multi-threaded executor until shut down."""
    rclpy.init(args=args)
    node = None
    try:
        node = VicropNode()
        if node.settings.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error('configure failed: the node stays unconfigured')
        executor = MultiThreadedExecutor(num_threads=16)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
