"""Questions in, one Answer out: checks, refusals, frame choice, timeouts, cancel. No DDS."""

from builtin_interfaces.msg import Time
from intake_fakes import Bench, S, rgb_image
import numpy as np
import pytest

from vicrop_interfaces.msg import Answer, Question
from vicrop_interfaces.srv import Ask
from vicrop_ros.ros.jobs import Job, JobQueue
from vicrop_ros.ros.params import Settings


def stamp(seconds: float) -> Time:
    sec, nanosec = divmod(int(seconds * S), S)
    return Time(sec=sec, nanosec=nanosec)


def ask(bench: Bench, job_id='q', question='What is it?', camera='', method='', at=0.0,
        timeout=0.0, image=None, raw_stamp=None):  # fmt: skip
    request = Ask.Request(
        id=job_id, question=question, camera=camera, method=method, timeout=timeout
    )
    request.stamp = raw_stamp or (stamp(at) if at else Time())
    if image is not None:
        request.image = image
    return bench.intake.submit(bench.intake.job_from_request(request))


@pytest.fixture
def bench() -> Bench:
    bench = Bench()
    bench.add_frame('head', rgb_image(np.zeros((4, 6, 3), np.uint8), 'h0'), 999.9)
    return bench


@pytest.mark.parametrize(
    ('fields', 'reason'),
    [
        (dict(question='   '), 'the question is empty'),
        (dict(question='\u200b\u200b'), 'the question is empty (nothing visible in it)'),
        (dict(question='\ufeff \u2060\n'), 'the question is empty (nothing visible in it)'),
        (dict(timeout=float('inf')), 'the timeout inf must be 0 (the node default) or a positive'),
        (dict(timeout=float('nan')), 'the timeout nan must be 0'),
        (dict(timeout=-1.0), 'the timeout -1.0 must be 0'),
        (dict(timeout=1e10), 'the timeout 1e+10 s is over the limit of 3600 s'),
        (
            dict(raw_stamp=Time(sec=5, nanosec=4_000_000_000)),
            'the stamp has nanosec 4000000000, which must be below 1000000000',
        ),
        (dict(raw_stamp=Time(sec=-5)), 'the stamp has a negative sec (-5)'),
        (dict(question='why ' * 600), 'the question is too long (2400 > 2000 characters'),
        (dict(camera='tail'), "unknown camera 'tail'; use head, wrist or '' for the default"),
        (dict(method='sharpest'), "unknown method 'sharpest'"),
        (dict(at=1100.0), 'the stamp is 100.000 s in the future'),
    ],
)
def test_bad_requests_are_refused_at_once_with_a_reason(bench, fields, reason):
    job = ask(bench, **fields)
    (answer,) = bench.published
    assert job.done and answer is job.answer
    assert answer.status == Answer.BAD_REQUEST and reason in answer.error
    assert len(bench.intake.queue) == 0 and bench.intake.in_flight == 0


def test_made_up_ids_are_unique_and_unlike_a_callers_counter(bench):
    jobs = [ask(bench, job_id='') for _ in range(3)]
    ids = [job.id for job in jobs]
    assert len(set(ids)) == 3 and all(i.startswith('vicrop-') and len(i) == 43 for i in ids)
    callers = ask(bench, job_id='vicrop-1')  # a caller's own counter, as the node once made
    assert not callers.done  # queued: no made-up id takes it


def test_not_ready_carries_the_reason_given():
    bench = Bench(readiness="the node is unconfigured: cannot load model 'x': no such directory")
    ask(bench)
    (answer,) = bench.published
    assert answer.status == Answer.NOT_READY and 'cannot load model' in answer.error


def test_a_good_question_is_queued_with_its_frame_chosen_on_arrival(bench):
    job = ask(bench, job_id='good')
    assert not job.done and bench.published == [] and len(bench.intake.queue) == 1
    assert job.camera == 'head' and job.frame_request.result().stamp_ns == int(999.9 * S)


def test_no_frame_or_an_old_frame_waits_for_the_worker_then_is_no_image_or_stale(bench):
    from vicrop_ros.ros.answers import Refusal

    wrist = ask(bench, job_id='wrist', camera='wrist')
    bench.clock.now_s = 1005.0
    head = ask(bench, job_id='head')
    assert not wrist.done and not head.done  # a frame may still come
    assert not wrist.frame_request.decided and not head.frame_request.decided
    settings = Settings.defaults(frame_wait=0.01)
    with pytest.raises(Refusal) as none:  # the worker's choice, after its wait
        bench.intake.await_frame(wrist, settings)
    assert none.value.status == Answer.NO_IMAGE and 'wrist camera' in str(none.value)
    with pytest.raises(Refusal) as stale:
        bench.intake.await_frame(head, settings)
    assert stale.value.status == Answer.STALE_IMAGE
    # Settled when the wait ended: 5.0 s after the newest frame plus the two waits (one slice of
    # FRAME_WAIT_SLICE_S each on the fake's clocks).
    assert 'newest head frame is 5.200 s old' in str(stale.value)


def test_a_question_stamped_after_every_frame_is_decided_when_its_frame_arrives(bench):
    job = ask(bench, at=1000.0)
    assert not job.done and not job.frame_request.decided and len(bench.intake.queue) == 1
    bench.add_frame('head', rgb_image(np.zeros((4, 6, 3), np.uint8), 'h1'), 999.98)
    assert not job.frame_request.decided  # still before the stamp
    for index, at in enumerate((1000.03, 1000.07, 1000.1)):  # more come before the worker looks
        bench.add_frame('head', rgb_image(np.zeros((4, 6, 3), np.uint8), f'h{index + 2}'), at)
    # Decided by the first frame at or after the stamp, from the two frames around it.
    assert job.frame_request.result().stamp_ns == int(999.98 * S)
    assert bench.buffers['head'].waiting == 0


def test_a_question_that_ends_stops_waiting_for_its_frame(bench):
    job = ask(bench, at=1000.0)
    assert bench.buffers['head'].waiting == 1
    bench.intake.cancel(job)
    assert job.answer.status == Answer.CANCELED and bench.buffers['head'].waiting == 0


def test_an_image_sent_with_the_request_needs_no_camera(bench):
    job = ask(bench, camera='tail', image=rgb_image(np.zeros((2, 2, 3), np.uint8), 'sent'))
    assert not job.done and job.source == 'image' and job.frame_request is None


def test_an_id_in_flight_is_refused_and_free_again_once_answered(bench):
    first = ask(bench, job_id='dup')
    second = ask(bench, job_id='dup')
    assert second.answer.status == Answer.BAD_REQUEST and "id 'dup' is in flight" in (
        second.answer.error
    )
    bench.intake.finish(first, Answer(id='dup', status=Answer.OK))
    assert not ask(bench, job_id='dup').done


def test_over_max_pending_is_busy_and_says_which_limit():
    bench = Bench(settings=Settings.defaults(max_pending=2))
    bench.add_frame('head', rgb_image(np.zeros((4, 6, 3), np.uint8)), 999.9)
    jobs = [ask(bench, job_id=f'b{i}') for i in range(4)]
    assert [job.done for job in jobs] == [False, False, True, True]
    assert {a.status for a in bench.published} == {Answer.BUSY}
    assert '2 questions are already waiting (max_pending)' in bench.published[0].error


def queued_job(job_id: str, camera: str) -> Job:
    return Job(id=job_id, question='q?', camera=camera, method='', stamp_ns=0, timeout_s=30.0)


def test_the_queue_serves_the_cameras_in_turn_oldest_first_within_each():
    queue = JobQueue(capacity=20)
    # A chatty robot asks six questions about r1_head before r2 asks two and r3 one.
    names = [('a1', 'r1_head'), ('a2', 'r1_head'), ('a3', 'r1_head'), ('b1', 'r2_head'),
             ('a4', 'r1_head'), ('c1', 'r3_wrist'), ('b2', 'r2_head'), ('a5', 'r1_head'),
             ('a6', 'r1_head')]  # fmt: skip
    for job_id, camera in names:
        assert queue.offer(queued_job(job_id, camera)) == ''
    served = [queue.take(0.0).id for _ in names]
    assert served == ['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'a4', 'a5', 'a6']
    assert queue.take(0.0) is None and len(queue) == 0


def test_a_quiet_camera_goes_before_the_backlog_of_a_busy_one():
    queue = JobQueue(capacity=20)
    for job_id, camera in [('a1', 'r1_head'), ('a2', 'r1_head'), ('a3', 'r1_head'),
                           ('q1', 'r2_head')]:  # fmt: skip
        assert queue.offer(queued_job(job_id, camera)) == ''
    assert [queue.take(0.0).id for _ in range(3)] == ['a1', 'q1', 'a2']
    # r2_head asks again: it was served before r1_head was last, so it goes first, not behind
    # r1_head's backlog as a lane that joins the end of a round would.
    assert queue.offer(queued_job('q2', 'r2_head')) == ''
    assert [queue.take(0.0).id for _ in range(2)] == ['q2', 'a3']


def test_jobs_taken_with_another_leave_the_queue_oldest_first_and_the_turns_stay():
    queue = JobQueue(capacity=20, monotonic=lambda: 7.0)
    for job_id, camera in [('a1', 'r1'), ('b1', 'r2'), ('a2', 'r1'), ('a3', 'r1'), ('b2', 'r2')]:
        assert queue.offer(queued_job(job_id, camera)) == ''
    first = queue.take(0.0)
    mates = queue.take_where(lambda job: job.source == 'r1', limit=1)
    assert first.id == 'a1' and [job.id for job in mates] == ['a2']
    assert mates[0].started == 7.0 and len(queue) == 3
    assert queue.take_where(lambda job: False, limit=5) == []
    assert [queue.take(0.0).id for _ in range(3)] == ['b1', 'a3', 'b2']


def test_a_full_camera_lane_is_busy_and_says_so_while_other_cameras_still_queue():
    queue = JobQueue(capacity=5, lane_limit=2)
    assert [queue.offer(queued_job(f'h{i}', 'head')) for i in range(2)] == ['', '']
    refused = queue.offer(queued_job('h2', 'head'))
    assert (
        '2 questions about the head camera are already waiting (max_pending_per_camera)' in refused
    )
    assert [queue.offer(queued_job(f'w{i}', 'wrist')) for i in range(2)] == ['', '']
    assert queue.offer(queued_job('s0', 'side')) == ''
    assert '5 questions are already waiting (max_pending)' in queue.offer(queued_job('x', 'top'))
    head = queued_job('late', 'head')
    assert queue.remove(queue.take(0.0)) is False  # taken: no longer waiting
    assert queue.offer(head) == ''
    assert queue.remove(head) is True and len(queue) == 4
    assert [job.id for job in queue.drain()] == ['h1', 'w0', 'w1', 's0']  # oldest first
    queue.lane_limit = 0  # as max_pending_per_camera 0 means: the whole queue
    assert queue.lane_capacity == queue.capacity == 5


def test_a_question_over_its_camera_limit_is_busy_naming_the_limit():
    bench = Bench(settings=Settings.defaults(max_pending=10, max_pending_per_camera=1))
    bench.add_frame('head', rgb_image(np.zeros((4, 6, 3), np.uint8)), 999.9)
    jobs = [ask(bench, job_id=f'p{i}', camera='head') for i in range(2)]
    assert [job.done for job in jobs] == [False, True]
    (answer,) = bench.published
    assert answer.status == Answer.BUSY and 'max_pending_per_camera' in answer.error
    image = rgb_image(np.zeros((4, 6, 3), np.uint8))
    sent = [ask(bench, job_id=f'i{i}', image=image) for i in range(2)]
    assert [job.done for job in sent] == [False, True]
    assert '1 question about images sent with requests is already waiting' in sent[1].answer.error


def test_timeouts_while_queued_and_while_worked_answer_once(bench):
    queued = ask(bench, job_id='queued', timeout=0.5)
    worked = ask(bench, job_id='worked', timeout=2.0)
    bench.intake.queue.take(0.0)  # the worker took 'queued'... the oldest
    bench.clock.monotonic_s += 1.0
    bench.intake.expire_overdue()
    assert queued.answer.status == Answer.TIMEOUT
    assert queued.answer.error == 'not answered within 0.5 s (while the model worked)'
    assert not worked.done
    bench.clock.monotonic_s += 1.5
    bench.intake.expire_overdue()
    assert worked.answer.error == 'not answered within 2 s (while waiting in the queue)'
    assert len(bench.intake.queue) == 0
    assert not bench.intake.finish(queued, Answer(id='queued', status=Answer.OK))  # too late
    assert [a.id for a in bench.published] == ['queued', 'worked']
    assert queued.should_stop()  # the worker stops working on it


def test_the_node_timeout_applies_when_the_request_names_none(bench):
    job = ask(bench)
    assert job.timeout_s == bench.settings.timeout


def test_cancel_while_queued_ends_at_once_and_while_running_at_the_next_check(bench):
    queued = ask(bench, job_id='queued')
    bench.intake.cancel(queued)
    assert queued.answer.status == Answer.CANCELED
    assert queued.answer.error == 'canceled by the caller while queued'
    running = ask(bench, job_id='running')
    assert bench.intake.queue.take(0.0) is running
    bench.intake.cancel(running)
    assert not running.done and running.should_stop()  # the worker's stop check ends it


def test_refuse_all_answers_every_open_question():
    bench = Bench(settings=Settings.defaults(max_pending=10))
    bench.add_frame('head', rgb_image(np.zeros((4, 6, 3), np.uint8)), 999.9)
    jobs = [ask(bench, job_id=f'j{i}') for i in range(3)]
    bench.intake.queue.take(0.0)  # one is running
    bench.intake.refuse_all(Answer.NOT_READY, 'node deactivated', queued_only=True)
    assert [job.done for job in jobs] == [False, True, True]
    bench.intake.refuse_all(Answer.NOT_READY, 'the node is shutting down')
    assert all(job.done for job in jobs) and bench.intake.in_flight == 0
    assert len(bench.published) == 3 and bench.intake.status_counts['NOT_READY'] == 3


def test_ids_are_made_for_questions_without_one(bench):
    msg = Question(question='What is it?')
    first = bench.intake.submit(bench.intake.job_from_question(msg))
    second = bench.intake.submit(bench.intake.job_from_question(msg))
    assert first.id != second.id and first.id.startswith('vicrop-')
    assert not first.done and not second.done


@pytest.mark.parametrize('node_rate', [0.1, 1.0, 10.0])
def test_the_frame_wait_runs_on_the_node_clock_at_any_bag_rate(bench, node_rate):
    # A question stamped ahead of every frame; its frame comes 0.5 s of node time later, within
    # frame_wait (1 s) of node time, however fast the node clock runs against the steady one.
    bench.node_rate = node_rate
    job = ask(bench, at=1000.4)
    frame = rgb_image(np.zeros((4, 6, 3), np.uint8), 'late')
    bench.scheduled.append((1000.5, 'head', frame, 1000.4))
    chosen = bench.intake.await_frame(job, Settings.defaults(frame_wait=1.0))
    assert chosen.stamp_ns == int(1000.4 * S)
    assert bench.clock.now_s == pytest.approx(1000.5, abs=0.11 * max(1.0, node_rate))


def test_a_node_clock_that_stands_still_ends_the_frame_wait(bench):
    bench.node_rate = 0.0  # a paused bag: /clock no longer moves
    job = ask(bench, at=1000.4)
    started = bench.clock.monotonic_s
    chosen = bench.intake.await_frame(job, Settings.defaults(frame_wait=1.0))
    # The choice from the frames kept (the one 0.5 s before the stamp), after frame_wait of
    # steady time, instead of waiting for node time that does not pass.
    assert chosen.stamp_ns == int(999.9 * S) and bench.clock.now_s == 1000.0
    assert bench.clock.monotonic_s - started == pytest.approx(1.0, abs=0.11)
