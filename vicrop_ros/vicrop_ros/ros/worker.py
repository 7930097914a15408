"""
The inference worker: queued jobs -> the engine -> one Answer each, plus crop box and saliency.

One thread serves the queue. For each job it waits for the frame if that has not come yet,
decodes it, takes the queued jobs about the same frame with it (up to ``max_batch``), runs the
engine on them as one batch with each job's stop check (so a canceled or timed-out question
stops at the next stage or decoded token, and the others go on), and hands each Answer to
:meth:`Intake.finish`. No node here: the engine, the settings and the output publishers are
given; :meth:`Worker.serve` answers one job on the calling thread (tests).
"""

from collections.abc import Callable
import threading
import traceback

from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer

from ..core import BadQuestion, Canceled
from .answers import Refusal, blank_answer, crop_box_message, result_answer
from .frames import Frame, FrameChoiceError
from .images import BadImageError, bgr_image_message, decode_rgb
from .jobs import Job
from .params import Settings
from .requests import Intake


class Worker:
    """Serves the intake's queue with the engine on one thread."""

    def __init__(
        self,
        intake: Intake,
        engine: Callable[[], object],
        settings: Callable[[], Settings],
        publish_crop_box: Callable[[object], None],
        publish_saliency: Callable[[Image], None],
        saliency_wanted: Callable[[], bool],
        logger,
    ):
        """
        Answer with ``engine()`` (a Vicrop, or None when unloaded) under ``settings()``.

        Saliency overlays are drawn only while ``saliency_wanted()`` (someone subscribes).
        """
        self._intake, self._engine, self._settings = intake, engine, settings
        self._publish_crop_box, self._publish_saliency = publish_crop_box, publish_saliency
        self._saliency_wanted, self._logger = saliency_wanted, logger
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='vicrop_worker', daemon=True)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (the running job stops at its next check once it is decided)."""
        self._stopping.set()
        self._intake.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        """Serve queued jobs one at a time until stopped."""
        while not self._stopping.is_set():
            job = self._intake.queue.take(timeout_s=0.5)
            if job is None or job.done:
                continue
            try:
                self.serve(job)
            except Exception:  # noqa: BLE001 (the worker must survive anything)
                self._logger.error(f'unexpected error on {job.id}:\n{traceback.format_exc()}')
                self._intake.refuse(job, Refusal(
                    Answer.MODEL_ERROR, 'internal error; see the node log'))  # fmt: skip

    def serve(self, job: Job) -> None:
        """
        Answer ``job`` with the engine and publish the results.

        Questions waiting in the queue about the same camera frame, by the same method, are
        taken with it (up to ``max_batch`` in all) and answered as one batch.
        """
        settings = self._settings()
        answer = self._started_answer(job, settings)
        try:
            engine = self._engine()
            if engine is None:
                raise Refusal(Answer.NOT_READY, 'the model was unloaded before this question ran')
            frame = None if job.image is not None else self._intake.await_frame(job, settings)
            header, rgb = decode(job, frame, settings.max_image_pixels)
        except Exception as error:  # noqa: BLE001 (a failure must not stop the node)
            answer.status, answer.error = self._failure(error)
            self._intake.finish(job, answer)
            return
        method = job.method or settings.method
        jobs = [job] + self._batch_mates(job, frame, method, settings)
        try:
            self._answer_batch(engine, jobs, answer, header, rgb, method, settings)
        finally:  # a mate taken from the queue must not be left without its answer
            for mate in jobs[1:]:
                self._intake.refuse(mate, Refusal(
                    Answer.MODEL_ERROR, 'internal error; see the node log'))  # fmt: skip

    def _answer_batch(self, engine, jobs: list[Job], answer: Answer, header, rgb, method: str,
                      settings: Settings) -> None:  # fmt: skip
        """Run the engine on ``jobs`` (one frame, ``answer`` the first's) and finish each."""
        answers = [answer] + [self._started_answer(mate, settings) for mate in jobs[1:]]
        for each in answers:
            each.header, each.camera, each.method = header, jobs[0].source, method
            each.image_width, each.image_height = int(rgb.shape[1]), int(rgb.shape[0])
        layer = settings.attention_layer
        try:
            outcomes = engine.answer_batch(
                rgb, [j.question for j in jobs], [j.should_stop for j in jobs],
                on_stage=lambda stage: [j.report(stage) for j in jobs], method=method,
                max_new_tokens=settings.max_new_tokens, tile_threshold=settings.tile_threshold,
                attention_layer=None if layer < 0 else layer,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 (a failure must not stop the node)
            outcomes = [error] * len(jobs)
        for each_job, each_answer, outcome in zip(jobs, answers, outcomes, strict=True):
            self._publish(each_job, each_answer, rgb, outcome, settings)

    def _started_answer(self, job: Job, settings: Settings) -> Answer:
        """Return the job's Answer with its identity and queue wait, nothing decided yet."""
        answer = blank_answer(job, settings.model)
        if job.started is not None:
            answer.queue_wait_ms = (job.started - job.arrival) * 1000.0
        return answer

    def _batch_mates(
        self, job: Job, frame: Frame | None, method: str, settings: Settings
    ) -> list[Job]:
        """Take the queued jobs about ``frame`` (job's camera frame) by ``method`` (max_batch)."""
        if frame is None or settings.max_batch <= 1:
            return []

        def same_frame(other: Job) -> bool:
            request = other.frame_request
            if other.image is not None or request is None or not request.decided:
                return False
            if (other.method or settings.method) != method or other.should_stop():
                return False
            try:
                return request.result() is frame
            except FrameChoiceError:
                return False

        return self._intake.queue.take_where(same_frame, settings.max_batch - 1)

    def _publish(self, job: Job, answer: Answer, rgb, outcome, settings: Settings) -> None:
        """Finish ``job`` with the engine's ``outcome`` (a result or an exception) and publish."""
        if isinstance(outcome, Exception):
            answer.status, answer.error = self._failure(outcome)
            self._intake.finish(job, answer)
            return
        if job.done:  # timed out meanwhile: its TIMEOUT answer stands
            return
        result_answer(answer, outcome)
        if outcome.box is not None:
            self._publish_crop_box(crop_box_message(job, answer))
            wanted = settings.publish_saliency and outcome.saliency is not None
            if wanted and self._saliency_wanted():
                from ..visualize import saliency_overlay

                overlay = saliency_overlay(rgb, outcome.saliency, outcome.box)
                self._publish_saliency(bgr_image_message(overlay, answer.header))
        self._intake.finish(job, answer)

    def _failure(self, error: Exception) -> tuple[int, str]:
        """Return the (status, reason) of a question whose answer raised ``error``."""
        if isinstance(error, Refusal):
            return error.status, str(error)
        if isinstance(error, BadQuestion):  # input, not a model failure
            return Answer.BAD_REQUEST, str(error)
        if isinstance(error, Canceled):
            return Answer.CANCELED, f'canceled by the caller ({error})'
        return Answer.MODEL_ERROR, self._model_error_text(error)

    def _model_error_text(self, error: Exception) -> str:
        """Return a MODEL_ERROR reason; free kept frames and GPU memory after out-of-memory."""
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            engine = self._engine()
            if engine is not None:
                engine.forget_frames()  # kept prefixes are the first memory to give back
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return f'out of GPU memory ({error}); try a smaller image or tile_threshold'
        if isinstance(error, ValueError):
            return f'cannot answer: {error}'
        self._logger.error(f'model error:\n{traceback.format_exc()}')
        return f'model failed: {type(error).__name__}: {error}'


def decode(job: Job, frame: Frame | None, max_pixels: int):
    """Return (header, HWC uint8 RGB) of ``frame`` or else the job's image, or raise Refusal."""
    # A camera frame is deserialized only now, when a question uses it.
    message = job.image if frame is None else deserialize_message(frame.data, frame.message_type)
    try:
        rgb = decode_rgb(message, max_pixels)
    except BadImageError as error:
        where = "the request's image" if frame is None else f'the {job.camera} camera frame'
        raise Refusal(Answer.BAD_IMAGE, f'{where}: {error}') from None
    return message.header, rgb
