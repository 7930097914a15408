"""
``vicrop_node``: ViCrop as a managed ROS 2 node; this file only wires the parts to rclpy.

* :mod:`.cameras` subscribes the cameras (on configure, on the companion node
  ``<node>_cameras``) and chooses each question's frame;
* :mod:`.requests` takes questions from ``~/questions``, ``~/ask`` and ``~/ask_question`` and
  gives each exactly one Answer on ``~/answers``;
* :mod:`.worker` runs the engine on one thread;
* :mod:`.diagnostics` reports health on ``/diagnostics``; :mod:`.qos` holds every profile.

Service and action callbacks are coroutines that await their question's answer, so a waiting
caller holds no executor thread. The model is loaded on configure (after the node is spinning,
so questions meanwhile get NOT_READY at once) and freed on cleanup.
"""

import signal
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from sensor_msgs.msg import Image

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, CropBox, Question
from vicrop_interfaces.srv import Ask

from . import diagnostics, qos
from .cameras import CameraConfig, CameraNode, Cameras
from .jobs import STATUS_NAMES, Job
from .params import CameraSettings, Settings, SettingsError, declare_parameters
from .requests import Intake
from .worker import Worker

STAGES = {
    'queued': AskQuestion.Feedback.QUEUED,
    'saliency': AskQuestion.Feedback.SALIENCY,
    'cropping': AskQuestion.Feedback.CROPPING,
    'answering': AskQuestion.Feedback.ANSWERING,
}
SHUTDOWN_GRACE_S = 2.0  # longest wait for waiting callers to get their last responses
RESPONSE_TAIL_S = 0.3  # spinning after the last caller resumed, for its response to go out
WAKE_S = 0.25  # the executor wakes at least this often (steady time), so signal handlers run


class _NextWake:
    """Awaitable that suspends a coroutine callback until the executor next wakes."""

    def __await__(self):
        yield


class VicropNode(LifecycleNode):
    """The ViCrop perception node (lifecycle: the model lives between configure and cleanup)."""

    def __init__(self, make_engine=None, **kwargs):
        """
        Declare parameters and create the question and answer interfaces.

        ``make_engine(settings) -> Vicrop`` builds the engine on configure (default:
        :func:`load_engine`); ``kwargs`` go to ``rclpy`` (``context``, ``parameter_overrides``,
        ``cli_args``, ``namespace``).
        """
        super().__init__('vicrop', **kwargs)
        self._guard_transitions()
        self._make_engine = make_engine or load_engine
        declare_parameters(self)
        self.settings = Settings.from_node(self)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._engine = None  # vicrop_ros.core.Vicrop while configured
        self._camera_node: CameraNode | None = None  # while configured
        self._state = 'unconfigured'  # also 'loading', 'failed', 'inactive', 'active', 'closing'
        self._load_error = ''  # why the last configure failed
        self._device = ''  # where the model runs, once loaded
        self._goals: dict[bytes, Job] = {}  # running action goals by goal id
        self._waiting = 0  # service/action callbacks awaiting an answer
        self._waiting_lock = threading.Lock()
        self.finished = Future()  # done when the node should exit (lifecycle shutdown, signal)

        requests = ReentrantCallbackGroup()  # coroutines: many wait at once
        housekeeping = MutuallyExclusiveCallbackGroup()
        self.answers = self.create_publisher(Answer, '~/answers', qos.RESULTS)
        self.crop_boxes = self.create_publisher(CropBox, '~/crop_boxes', qos.RESULTS)
        self.saliency = self.create_publisher(Image, '~/saliency', qos.LARGE_IMAGES)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', qos.DIAGNOSTICS)
        self.intake = Intake(
            self.get_name(), lambda: self.settings, self.readiness, self._camera_set,
            self.answers.publish, lambda: self.get_clock().now().nanoseconds, self.get_logger(),
        )  # fmt: skip
        self.worker = Worker(
            self.intake, lambda: self._engine, lambda: self.settings, self.crop_boxes.publish,
            self.saliency.publish, lambda: self.saliency.get_subscription_count() > 0,
            self.get_logger(),
        )  # fmt: skip
        self.create_subscription(
            Question, '~/questions', self._on_question, qos.RESULTS, callback_group=requests
        )
        self.create_service(
            Ask, '~/ask', self._on_ask, qos_profile=qos.REQUESTS, callback_group=requests
        )
        self._action = ActionServer(
            self, AskQuestion, '~/ask_question', self._execute_goal,
            goal_callback=lambda goal: GoalResponse.ACCEPT, cancel_callback=self._on_cancel,
            callback_group=requests, feedback_pub_qos_profile=qos.FEEDBACK,
            goal_service_qos_profile=qos.REQUESTS, result_service_qos_profile=qos.REQUESTS,
            cancel_service_qos_profile=qos.REQUESTS,
        )  # fmt: skip
        self.create_timer(0.2, self.intake.expire_overdue, callback_group=housekeeping)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=housekeeping)
        self.worker.start()

    # ----- lifecycle ---------------------------------------------------------------------------

    def _guard_transitions(self) -> None:
        """
        Refuse, on ``~/change_state``, a transition the current state does not have.

        rclpy's own handler raises for an id that is not available from the current state
        (activate while active, an unknown id, configure after shutdown; rclpy issue 1209),
        which would end the node; such a request now gets ``success: false`` and a warning.
        """
        change_state = self._service_change_state
        take = change_state.callback

        def guarded(request, response):
            transition = request.transition
            available = {t[0]: t[1] for t in self._state_machine.available_transitions}
            if not transition.label and transition.id not in available:
                state = self._state_machine.current_state[1]
                self.get_logger().warning(
                    f'lifecycle transition {transition.id} refused: not available from state '
                    f"'{state}' (available: {available or 'none'})"
                )
                response.success = False
                return response
            return take(request, response)

        change_state.callback = guarded

    def readiness(self) -> str:
        """Return '' while questions are served, else why not (the NOT_READY reason)."""
        model = self.settings.model
        return {
            'active': '',
            'loading': f'the model {model!r} is loading; ask again when the node is active',
            'failed': f'the node is unconfigured: {self._load_error}',
            'unconfigured': 'the node is unconfigured: no model is serving questions '
            '(configure and activate it)',
            'inactive': 'the node is inactive: no model is serving questions (activate it)',
            'closing': 'the node is shutting down',
        }[self._state]

    def autostart(self) -> None:
        """Configure and activate (the ``autostart`` parameter); run by the spinning executor."""
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
        else:
            self.get_logger().error('configure failed: the node stays unconfigured')

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load the model and subscribe to the cameras."""
        settings = self.settings
        self._state = 'loading'
        self.get_logger().info(
            f'loading model {settings.model!r} (device {settings.device}, dtype {settings.dtype})'
        )
        try:
            engine = self._make_engine(settings)
        except Exception as error:  # noqa: BLE001 (any load failure leaves the node unconfigured)
            return self._configure_failed(f'cannot load model {settings.model!r}: {error}')
        try:
            self._camera_node = CameraNode(
                self, [self._camera_config(c) for c in settings.cameras]
            )
        except Exception as error:  # noqa: BLE001 (e.g. a topic of another type in this process)
            return self._configure_failed(f'cannot subscribe the cameras: {error}')
        self._load_error = ''
        self._device = str(engine.model.device)
        self._engine = engine
        self._state = 'inactive'
        self.get_logger().info(f'model {settings.model!r} loaded on {self._device}')
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        """Stay unconfigured, with ``reason`` in NOT_READY answers and diagnostics."""
        self._load_error = reason
        self._state = 'failed'
        self.get_logger().error(reason)
        return TransitionCallbackReturn.FAILURE

    def _camera_config(self, camera: CameraSettings) -> CameraConfig:
        """Return how ``camera`` is subscribed, from its parameters."""
        return CameraConfig(
            camera.name, camera.topic, camera.transport, camera.reliability,
            self.settings.buffer_length,
        )  # fmt: skip

    @property
    def camera_node(self) -> CameraNode | None:
        """Return the companion node of the cameras (None while unconfigured)."""
        return self._camera_node

    def _camera_set(self) -> Cameras | None:
        """Return the subscribed cameras (None while unconfigured)."""
        camera_node = self._camera_node
        return None if camera_node is None else camera_node.cameras

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start answering questions."""
        self._state = 'active'
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop answering: new and queued questions get NOT_READY (the running one finishes)."""
        self._state = 'inactive'
        self.intake.refuse_all(Answer.NOT_READY, 'node deactivated', queued_only=True)
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Free the model (and GPU memory) and unsubscribe the cameras."""
        self._release()
        self._state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Answer what is waiting, free everything and let ``main`` end the process."""
        self.close()
        self.finished.set_result(True)  # main() stops spinning and exits 0
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Refuse every open question (NOT_READY), stop the worker, free the model; idempotent."""
        if self._state == 'closing':
            return
        self._state = 'closing'
        self.intake.refuse_all(Answer.NOT_READY, 'the node is shutting down')
        self.worker.stop()
        self._release()

    def _release(self) -> None:
        """Drop the model and the camera subscriptions."""
        self._engine = None
        if self._camera_node is not None:
            self._camera_node.close()
            self._camera_node = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def waiting_callers(self) -> int:
        """Return how many service/action callers wait for an answer."""
        return self._waiting

    # ----- requests ----------------------------------------------------------------------------

    def _on_question(self, msg: Question) -> None:
        """Queue a question from the topic; its answer is published when decided."""
        self.intake.submit(self.intake.job_from_question(msg))

    async def _on_ask(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        """Serve the Ask service: queue the question and await its answer (no thread held)."""
        job = self.intake.submit(self.intake.job_from_request(request))
        response.answer = await self._answer_of(job)
        return response

    async def _execute_goal(self, goal_handle) -> AskQuestion.Result:
        """Serve an AskQuestion goal: as Ask, with stage feedback; a cancel stops the work."""
        arrival = self.get_clock().now()

        def feedback(stage: str) -> None:
            elapsed_ms = (self.get_clock().now() - arrival).nanoseconds / 1e6
            goal_handle.publish_feedback(
                AskQuestion.Feedback(stage=STAGES[stage], elapsed_ms=elapsed_ms)
            )

        job = self.intake.job_from_request(goal_handle.request, on_stage=feedback)
        goal_id = bytes(goal_handle.goal_id.uuid)
        self._goals[goal_id] = job
        try:
            self.intake.submit(job)
            answer = await self._answer_of(job)
        finally:
            self._goals.pop(goal_id, None)
        if answer.status == Answer.CANCELED:
            # The server marks the goal CANCELING right after _on_cancel returns.
            while not goal_handle.is_cancel_requested:
                await _NextWake()
            goal_handle.canceled()
        elif answer.status == Answer.OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return AskQuestion.Result(answer=answer)

    def _on_cancel(self, goal_handle) -> CancelResponse:
        """Accept a cancel: a queued goal ends at once, a running one at its next check."""
        job = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if job is None or job.done:
            return CancelResponse.REJECT
        self.intake.cancel(job)
        return CancelResponse.ACCEPT

    async def _answer_of(self, job: Job) -> Answer:
        """Await ``job``'s answer without holding an executor thread."""
        future = Future(executor=self.executor)
        future.add_done_callback(lambda done: None)  # setting the result wakes the executor
        with self._waiting_lock:
            self._waiting += 1
        try:
            job.add_done_callback(future.set_result)
            return await future
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    # ----- periodic ----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        """Publish the node's health on /diagnostics (1 Hz)."""
        name, device, intake = self.get_fully_qualified_name(), self._device, self.intake
        array = DiagnosticArray()
        now = self.get_clock().now()
        array.header.stamp = now.to_msg()
        reason = self._load_error if self._state == 'failed' else self.readiness()
        array.status = [
            diagnostics.model_status(name, self._state, reason, self.settings.model, device),
            diagnostics.questions_status(
                name, device, len(intake.queue), intake.queue.capacity, intake.in_flight,
                list(intake.latencies_ms), intake.status_counts, list(STATUS_NAMES.values()),
            ),
        ]  # fmt: skip
        cameras = self._camera_set()
        if cameras is not None:
            array.status += [
                diagnostics.camera_status(
                    name, device, camera, now.nanoseconds, self.settings.max_image_age
                )
                for camera in cameras
            ]
        self.diagnostics.publish(array)

    def _on_parameters_set(self, parameters) -> None:
        """Take accepted parameter changes into effect."""
        self.settings = Settings.from_node(self)
        self.intake.queue.capacity = self.settings.max_pending
        self.intake.queue.lane_limit = self.settings.max_pending_per_camera


def load_engine(settings: Settings):
    """Load the configured model and return the ViCrop engine around it."""
    from ..core import Vicrop
    from ..models.loader import load_model

    model = load_model(
        settings.model, settings.device, settings.dtype, settings.trust_remote_code,
        allow_download=settings.allow_download,
        pixel_budget=(settings.min_pixels, settings.max_pixels),
    )  # fmt: skip
    return Vicrop(model, reuse_frames=settings.reuse_frames)


def spin_until_finished(node: VicropNode, executor) -> None:
    """
    Spin until ``node.finished``, then answer waiting callers (bounded by the grace time).

    Python runs signal handlers only between waits: spinning in steps of WAKE_S (steady time)
    keeps a SIGINT effective while no timer fires (e.g. a stopped /clock with use_sim_time).
    """
    while not node.finished.done():
        executor.spin_until_future_complete(node.finished, timeout_sec=WAKE_S)
    node.close()
    grace = time.monotonic() + SHUTDOWN_GRACE_S  # not the node clock: /clock may have stopped
    while node.waiting_callers and time.monotonic() < grace:
        executor.spin_once(timeout_sec=0.05)
    # The resumed callers' responses, and action results, which the action server sends from
    # tasks of its own once a goal has ended.
    tail = min(grace, time.monotonic() + RESPONSE_TAIL_S)
    while time.monotonic() < tail:
        executor.spin_once(timeout_sec=0.05)


def main(args=None) -> None:
    """Run the node until lifecycle shutdown, SIGINT or SIGTERM (each ends it cleanly)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = MultiThreadedExecutor(num_threads=8)
    try:
        node = VicropNode()

        def finish(signum, frame) -> None:
            if not node.finished.done():
                node.finished.set_result(signal.Signals(signum).name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, finish)  # a second signal during cleanup changes nothing
        executor.add_node(node)
        if node.settings.autostart:
            executor.create_task(node.autostart)
        spin_until_finished(node, executor)
    except SettingsError as error:  # a parameter the node cannot start with
        get_logger('vicrop').fatal(f'cannot start: {error}')
        raise SystemExit(2) from None
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            executor.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
