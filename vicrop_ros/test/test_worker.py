"""
The worker with the real tiny LLaVA engine, no DDS: answers, bad images, faults and cancel.

Faults that cannot happen here are injected around the real engine: a model exception, a CUDA
out-of-memory error (simulated: there is no GPU) and an all-zero importance map.
"""

import dataclasses
import logging
import threading

import cv2
from intake_fakes import Bench, rgb_image
import numpy as np
import pytest
from sample_data import random_image
from sensor_msgs.msg import CompressedImage, Image
import torch

from vicrop_interfaces.msg import Answer
from vicrop_interfaces.srv import Ask
from vicrop_ros.core import SaliencyMap, Vicrop
from vicrop_ros.ros.params import Settings
from vicrop_ros.ros.worker import Worker

pytestmark = pytest.mark.slow


class ZeroMaps:
    """A model whose importance maps are all zero (its answers are the real model's)."""

    def __init__(self, model):
        self.model = model
        self.name, self.input_size, self.device = model.name, model.input_size, model.device

    def prepare(self, image, answers=True):
        prepared = self.model.prepare(image, answers)

        class Prepared:
            def saliencies(self, questions, config):
                real = prepared.saliencies(questions, config)
                return [SaliencyMap(np.zeros_like(m.values), m.extent) for m in real]

            def answers(self, questions, crops, config, stops=None):
                return prepared.answers(questions, crops, config, stops)

        return Prepared()

    def question_problem(self, question, size, config):
        return self.model.question_problem(question, size, config)


class FaultInjection(Vicrop):
    """The real engine, except for questions naming a fault: RAISE, OOM, ZEROMAP."""

    def __init__(self, model):
        super().__init__(model, reuse_frames=2)
        self.zero_maps = Vicrop(ZeroMaps(model))
        self.batches = []  # the questions of each batch, in order

    def answer_batch(self, image, questions, stops=None, on_stage=None, **overrides):
        self.batches.append(list(questions))
        if any('RAISE' in question for question in questions):
            raise RuntimeError('injected failure in the model')
        if any('OOM' in question for question in questions):
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')
        if any('ZEROMAP' in question for question in questions):
            return self.zero_maps.answer_batch(image, questions, stops, on_stage, **overrides)
        return super().answer_batch(image, questions, stops, on_stage, **overrides)


class Served:
    """A bench intake, the worker over the fault-injecting engine, and what it published."""

    def __init__(self, model, **settings):
        self.bench = Bench(settings=Settings.defaults(max_new_tokens=2, **settings))
        self.engine = FaultInjection(model)
        self.crop_boxes, self.saliency, self.saliency_wanted = [], [], True
        self.worker = Worker(
            self.bench.intake, lambda: self.engine, lambda: self.bench.settings,
            self.crop_boxes.append, self.saliency.append, lambda: self.saliency_wanted,
            logging.getLogger('test_worker'),
        )  # fmt: skip

    def ask(self, request: Ask.Request, on_stage=None) -> Answer:
        """Submit ``request``; serve it unless refused on arrival; return its one Answer."""
        intake = self.bench.intake
        job = intake.submit(intake.job_from_request(request, on_stage=on_stage))
        if not job.done:
            assert intake.queue.take(0.0) is job
            self.worker.serve(job)
        (answer,) = self.bench.answers_of(job.id)
        return answer


@pytest.fixture(scope='module')
def served(tiny_model):
    return Served(tiny_model('llava'), max_image_pixels=2_000_000)


def with_image(job_id: str, image, question='What is it?', **fields) -> Ask.Request:
    return Ask.Request(id=job_id, question=question, image=image, **fields)


def test_a_camera_question_is_answered_with_the_frame_header_box_and_overlay(served):
    served.bench.add_frame('head', rgb_image(random_image(320, 240, seed=1), 'head_optical'),
                           served.bench.clock.now_s - 0.1)  # fmt: skip
    stages = []
    answer = served.ask(Ask.Request(id='cam', question='What does the label say?'), stages.append)
    assert answer.status == Answer.OK and answer.answer == answer.answer.strip(), answer.error
    assert (answer.camera, answer.method, answer.header.frame_id) == ('head', 'rel_att',
                                                                      'head_optical')  # fmt: skip
    assert (answer.image_width, answer.image_height) == (320, 240)
    crop = answer.crop
    assert (
        crop.width > 0 and crop.x_offset + crop.width <= 320 and crop.y_offset + crop.height <= 240
    )
    assert stages == ['queued', 'saliency', 'cropping', 'answering']
    assert served.crop_boxes[-1].header == answer.header and served.crop_boxes[-1].roi == crop
    overlay = served.saliency[-1]
    assert overlay.header == answer.header and (overlay.width, overlay.encoding) == (320, 'bgr8')


def test_no_overlay_is_drawn_while_nobody_subscribes(served):
    before = len(served.saliency)
    served.saliency_wanted = False
    try:
        image = rgb_image(random_image(96, 64, seed=2), 'x')
        assert served.ask(with_image('unseen', image)).status == Answer.OK
    finally:
        served.saliency_wanted = True
    assert len(served.saliency) == before


def test_questions_queued_about_one_frame_are_answered_together_as_each_alone(served):
    bench, intake = served.bench, served.bench.intake
    bench.settings = dataclasses.replace(bench.settings, max_batch=3)
    intake.queue.capacity = 8  # as the node sets it when max_pending changes
    rgb = random_image(320, 240, seed=7)
    bench.add_frame('head', rgb_image(rgb, 'batch_optical'), bench.clock.now_s - 0.1)
    questions = ['What does the label say?', 'Which colour is the cap?', 'Is it open?',
                 'How many are there?', 'What is it?']  # fmt: skip
    methods = ['', '', 'rel_att', '', 'none']  # '' is the node's: rel_att as well
    requests = [Ask.Request(id=f'batch-{i}', question=q, method=m)
                for i, (q, m) in enumerate(zip(questions, methods, strict=True))]  # fmt: skip
    jobs = [intake.submit(intake.job_from_request(request)) for request in requests]
    served.engine.batches.clear()
    try:
        while (job := intake.queue.take(0.0)) is not None:
            served.worker.serve(job)
    finally:
        bench.settings = dataclasses.replace(bench.settings, max_batch=4)
        intake.queue.capacity = bench.settings.max_pending
    # max_batch 3 of the four rel_att questions, then the fourth; none is another method.
    assert served.engine.batches == [questions[:3], questions[3:4], questions[4:]]
    for job, question, method in zip(jobs, questions, methods, strict=True):
        (answer,) = bench.answers_of(job.id)
        assert answer.status == Answer.OK, answer.error
        assert answer.header.frame_id == 'batch_optical' and answer.camera == 'head'
        alone = served.engine(rgb, question, method=method or 'rel_att', max_new_tokens=2)
        assert answer.answer == alone.answer and answer.method == (method or 'rel_att')
        if alone.box is not None:
            assert (answer.crop.x_offset, answer.crop.y_offset) == (alone.box.x0, alone.box.y0)
        assert answer.queue_wait_ms >= 0.0


def test_method_none_answers_without_a_crop(served):
    answer = served.ask(with_image('none', rgb_image(random_image(96, 64), 'x'), method='none'))
    assert answer.status == Answer.OK and answer.method == 'none' and answer.crop.width == 0


def raw(width, height, encoding='rgb8', step=None, data=None) -> Image:
    image = Image(width=width, height=height, encoding=encoding)
    image.step = step if step is not None else width * 3
    image.data = data if data is not None else bytes(image.step * height)
    return image


def jpeg(data: bytes) -> CompressedImage:
    return CompressedImage(format='jpeg', data=data)


BAD_IMAGES = [
    ('encoding', raw(8, 4, '32FC1', 32, bytes(128)), "cannot decode image encoding '32FC1'"),
    ('length', raw(8, 4, data=bytes(10)), 'expected step x height'),
    ('zero', raw(0, 4, step=0, data=bytes(12)), 'zero size (0x4)'),
    ('huge', raw(1500, 1500), 'over the limit of 2000000 pixels'),
    (
        'step',
        raw(8, 4, step=5, data=bytes(20)),
        'step 5 is smaller than a row of 8 rgb8 pixels (24 bytes)',
    ),
]


@pytest.mark.parametrize(('name', 'image', 'reason'), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_a_bad_image_sent_with_the_request_is_bad_image(served, name, image, reason):
    answer = served.ask(with_image(name, image))
    assert answer.status == Answer.BAD_IMAGE and reason in answer.error


@pytest.mark.parametrize(
    ('data', 'reason'),
    [
        (b'\xff\xd8\xff' + bytes(200), 'cannot read the compressed image header'),
        (b'', 'compressed image has no data'),
    ],
    ids=['corrupt', 'empty'],
)
def test_a_bad_compressed_camera_frame_is_bad_image(served, data, reason):
    served.bench.add_frame('wrist', jpeg(data), served.bench.clock.now_s)
    answer = served.ask(Ask.Request(id=f'wrist-{reason}', question='q?', camera='wrist'))
    assert answer.status == Answer.BAD_IMAGE and reason in answer.error
    assert answer.error.startswith('the wrist camera frame: ')


def test_a_good_compressed_camera_frame_is_decoded(served):
    bgr = cv2.cvtColor(random_image(160, 120, seed=3), cv2.COLOR_RGB2BGR)
    served.bench.add_frame('wrist', jpeg(cv2.imencode('.jpg', bgr)[1].tobytes()),
                           served.bench.clock.now_s)  # fmt: skip
    answer = served.ask(Ask.Request(id='wrist-ok', question='q?', camera='wrist'))
    assert answer.status == Answer.OK and (answer.image_width, answer.image_height) == (160, 120)


def test_a_model_exception_is_model_error_and_the_next_question_is_served(served):
    image = rgb_image(random_image(64, 48), 'r')
    answer = served.ask(with_image('raise', image, 'RAISE?'))
    assert answer.status == Answer.MODEL_ERROR
    assert 'RuntimeError: injected failure in the model' in answer.error
    assert served.ask(with_image('after-raise', image)).status == Answer.OK


def test_out_of_memory_gives_kept_frames_back(served):
    image = rgb_image(random_image(64, 48, seed=4), 'w')
    assert served.ask(with_image('warm', image)).status == Answer.OK
    assert served.engine.kept_frames > 0
    answer = served.ask(with_image('oom', image, 'OOM?'))
    assert answer.status == Answer.MODEL_ERROR and 'out of GPU memory' in answer.error
    assert served.engine.kept_frames == 0


def test_a_flat_map_uses_the_whole_frame(served):
    answer = served.ask(with_image('zeromap', rgb_image(random_image(640, 480), 'z'), 'ZEROMAP?'))
    assert answer.status == Answer.OK
    assert (answer.crop.x_offset, answer.crop.y_offset) == (0, 0)
    assert (answer.crop.width, answer.crop.height) == (640, 480) and answer.crop_score == 0


def test_an_unloaded_model_is_not_ready(served):
    engine, served.engine = served.engine, None
    try:
        answer = served.ask(with_image('unloaded', rgb_image(random_image(8, 8), 'u')))
    finally:
        served.engine = engine
    assert answer.status == Answer.NOT_READY and 'unloaded' in answer.error


@pytest.mark.parametrize(
    ('stage', 'reason'),
    [
        ('saliency', 'canceled before the cropping stage'),
        ('answering', 'canceled while decoding the answer'),
    ],
)
def test_a_cancel_during_the_work_stops_it_canceled(served, stage, reason):
    intake = served.bench.intake
    request = with_image(f'cancel-{stage}', rgb_image(random_image(96, 64), 'c'),
                         method='rel_att')  # fmt: skip
    job = intake.job_from_request(request)
    job.on_stage = lambda reached: reached == stage and intake.cancel(job)
    intake.submit(job)
    assert intake.queue.take(0.0) is job
    served.worker.serve(job)
    (answer,) = served.bench.answers_of(job.id)
    assert answer.status == Answer.CANCELED and reason in answer.error


def test_a_question_timed_out_while_worked_keeps_its_one_timeout_answer(served):
    intake = served.bench.intake
    job = intake.job_from_request(with_image('late', rgb_image(random_image(96, 64), 'l')))
    intake.submit(job)
    assert intake.queue.take(0.0) is job

    def time_out(stage):
        if stage == 'cropping':
            served.bench.clock.monotonic_s += 100.0
            intake.expire_overdue()

    job.on_stage = time_out
    served.worker.serve(job)
    (answer,) = served.bench.answers_of('late')
    assert answer.status == Answer.TIMEOUT and 'while the model worked' in answer.error


def test_the_worker_waits_for_the_frame_a_question_is_stamped_at(served, monkeypatch):
    bench = served.bench
    # A long limit: the wait ends when the frame arrives, however slow the machine.
    monkeypatch.setattr(bench, 'settings', dataclasses.replace(bench.settings, frame_wait=60.0))
    bench.add_frame('head', rgb_image(random_image(64, 48, seed=5), 'before'), bench.clock.now_s)
    intake = bench.intake
    request = Ask.Request(id='ahead', question='q?', camera='head')
    request.stamp.sec = int(bench.clock.now_s) + 1  # the next frame, not here yet
    job = intake.submit(intake.job_from_request(request))
    assert intake.queue.take(0.0) is job and not job.frame_request.decided
    worker = threading.Thread(target=served.worker.serve, args=(job,))
    worker.start()
    bench.add_frame('head', rgb_image(random_image(64, 48, seed=6), 'after'),
                    int(bench.clock.now_s) + 1)  # fmt: skip
    worker.join()
    (answer,) = bench.answers_of('ahead')
    assert answer.status == Answer.OK and answer.header.frame_id == 'after'
