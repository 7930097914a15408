"""
``vicrop-replay``: play a rosbag into live topics, ask scripted questions, check the answers.

    vicrop-replay BAG --script questions.yaml [--rate 1.0] [--clock] [--remap FROM:=TO ...]
                  [--topics T ...] [--time header|bag] [--start S] [--duration D] [--loop N]
                  [--out-bag OUT] [--report report.jsonl] [--html report.html]
                  [--saliency-dir DIR] [--golden G.jsonl] [--overlap]

Any bag with Image/CompressedImage topics works (rosbag2 mcap or sqlite3, or ROS 1 ``.bag``). The
script (YAML ``questions:`` list, or JSONL) gives per question ``at`` (seconds after the bag's
first message), ``question``, and optionally ``id``, ``camera``, ``method``, ``stamp`` ('bag' =
the time at ``at``, default; 'newest' = the newest frame) and ``expect`` (``answer``:
case-insensitive substring; ``region``: [x0, y0, x1, y1] source pixels the crop must contain;
``status``: the status the answer must have, default OK). The script is validated
(``replay_script.py``) before anything is replayed.

A question is sent ``--question-lag`` bag seconds after its time, once every message up to then
is published and acknowledged by the node's reliable readers, and bag time stands still until
its answer (lockstep; ``--overlap`` does not wait): the report does not depend on the node's
speed, the machine's load or the rate (for questions stamped with bag time; a ``newest``
question gets the node's newest frame, which depends on when its reader took the last ones).

Time: ``--time header`` (default) puts ``/clock`` and the question stamps on the header stamps'
timeline (bag time plus the offset of the first played message, with a warning when it is a
second or more); ``--time bag`` uses bag time as it is. ``--start``/``--duration`` play a window
of the bag (seconds after its first message) and ask the questions inside it; ``--loop N`` plays
it N times, the questions of pass n asked as ``<id>#n`` (each checked against the same golden
entry; the clock jumps back between passes, so the node drops the frames of the last pass).

Exit status: 0 every question passed; 1 a regression (a question without exactly one answer, a
status other than expected, an expectation or a golden difference); 2 a usage or input error (bad
arguments, script, golden report or bag; the node not found).
"""

import argparse
import json
from pathlib import Path
import sys
import time

import rclpy
from rosbags.highlevel import AnyReader

from .bags import typestore
from .frames import header_stamp_ns
from .replay_report import (
    check,
    describe,
    load_golden,
    match_saliency,
    render_html,
    thumbnail_png,
    write_bag,
    write_saliency,
)
from .replay_script import GOLDEN_KEYS, ScriptedQuestion, ScriptError, load_script
from .replayer import Pace, Replayer, choose_topics, parse_remaps

EXIT_CODES = """exit status:
  0  every question passed
  1  a regression: a question without exactly one answer, a status other than its expect.status
     (default OK), a failed expectation, or a difference from --golden (status, answer, box,
     image stamp, frame_id)
  2  a usage or input error: arguments, script (file:line and the key), golden report, bag, node"""
TIME_CHOICES = ('header', 'bag')
OFFSET_WARNING_NS = 1_000_000_000  # bag time this far from the header stamps is worth a line


def time_offset_ns(mode: str, bag_ns: int, cdr: bytes, topic: str) -> int:
    """
    Return what /clock and question stamps add to bag time, from the first played message.

    ``mode`` 'header': its header stamp minus its bag time ``bag_ns`` (0 when it has no stamp);
    'bag': 0. A difference of a second or more is printed either way, naming the offset.
    """
    stamp_ns = header_stamp_ns(cdr)
    offset_ns = stamp_ns - bag_ns if stamp_ns else 0
    if abs(offset_ns) >= OFFSET_WARNING_NS:
        follows = ('/clock and question stamps follow the header stamps (--time header)'
                   if mode == 'header' else
                   'frames will look that old or new to the node (--time header follows the '
                   'header stamps)')  # fmt: skip
        print(f'vicrop-replay: warning: the header stamps are {offset_ns / 1e9:+.3f} s from bag '
              f'time (first message on {topic}); {follows}', file=sys.stderr)  # fmt: skip
    return offset_ns if mode == 'header' else 0


def play_pass(
    replayer: Replayer,
    messages,
    questions: list[ScriptedQuestion],
    args: argparse.Namespace,
    first_ns: int,
    start_ns: int,
) -> tuple[int, float]:
    """
    Play one pass of the bag window from ``start_ns`` (bag ns) with its questions.

    ``messages``: (connection, bag ns, CDR bytes) in bag order; ``first_ns``: the bag's first
    message, which the questions' ``at`` counts from. Returns (messages published, wall seconds
    of playing, lockstep pauses left out).
    """
    replayer.tick_clock(start_ns)  # a new pass starts a new timeline for the node
    time.sleep(0.2)  # let the clock reach the node before the first frame
    pace = Pace(start_ns, args.rate)
    pending = list(questions)  # sorted by at

    def due_ns(scripted: ScriptedQuestion) -> int:
        # Asked --question-lag bag seconds after its time (its stamp stays that time), once
        # every message up to then is published and acknowledged.
        return first_ns + int((scripted.at + args.question_lag) * 1e9)

    def ask_due(before_ns: int) -> None:
        """Ask every pending question due before ``before_ns`` (bag time)."""
        while pending and due_ns(pending[0]) < before_ns:
            scripted = pending.pop(0)
            question_ns = max(due_ns(scripted), replayer.bag_now_ns)
            pace.wait_until(question_ns)
            replayer.tick_clock(question_ns)
            replayer.wait_for_acknowledgements(args.wait)
            replayer.ask(scripted, first_ns)
            if not args.overlap:
                # Lockstep: bag time stands still until the answer, after the bag's end too, so
                # the frames the node holds, their age and its queue depend neither on its speed
                # nor on the rate (a frame wait then ends after frame_wait steady seconds).
                with pace.paused():
                    replayer.await_answers([scripted], args.timeout, args.rate, False)

    published = 0
    for connection, timestamp, data in messages:
        ask_due(timestamp)
        pace.wait_until(timestamp)
        replayer.tick_clock(timestamp)
        replayer.publisher(connection.topic, connection.msgtype).publish(data)
        published += 1
    playback_s = pace.elapsed_s()
    ask_due(sys.maxsize)  # the questions after the last message, each at its time
    replayer.await_answers(questions, args.timeout, args.rate, True)
    return published, playback_s


def play(args: argparse.Namespace, passes: list[list[ScriptedQuestion]], context) -> dict:
    """Play the bag's window once per pass with that pass's questions; return the figures."""
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

            first_ns = reader.start_time
            start_ns = first_ns + int(args.start * 1e9)
            stop_ns = reader.end_time
            if args.duration is not None:
                stop_ns = min(stop_ns, start_ns + int(args.duration * 1e9))
            if start_ns > reader.end_time:
                raise ValueError(f'--start {args.start} s is after the bag\'s end '
                                 f'({(reader.end_time - first_ns) / 1e9:.3f} s)')  # fmt: skip

            def window():
                return reader.messages(connections=connections, start=start_ns, stop=stop_ns + 1)

            first = next(iter(window()), None)
            if first is not None:
                connection, timestamp, raw = first
                replayer.offset_ns = time_offset_ns(
                    args.time, timestamp, cdr(connection, raw), connection.topic
                )
            published, playback_s = 0, 0.0
            for questions in passes:
                messages = ((c, t, cdr(c, raw)) for c, t, raw in window())
                count, seconds = play_pass(replayer, messages, questions, args, first_ns, start_ns)
                published, playback_s = published + count, playback_s + seconds
        asked = [q for questions in passes for q in questions]
        if (args.saliency_dir or args.html) and not replayer.await_saliency(asked, args.timeout):
            print('vicrop-replay: warning: some saliency images did not arrive within '
                  f'{args.timeout} s', file=sys.stderr)  # fmt: skip
        time.sleep(args.settle)  # a second answer to one question would arrive now
        bag_s = (stop_ns - start_ns) / 1e9 * len(passes)
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
    parser.add_argument(
        '--time', choices=TIME_CHOICES, default='header',
        help='the timeline of /clock and question stamps: the header stamps (default; bag time '
        'plus the first message\'s offset) or bag time as recorded',
    )  # fmt: skip
    parser.add_argument(
        '--start', type=float, default=0.0, metavar='S',
        help='play from S seconds after the bag\'s first message (questions before are left out)',
    )  # fmt: skip
    parser.add_argument(
        '--duration', type=float, metavar='D',
        help='play D seconds from --start (questions after are left out; default: to the end)',
    )  # fmt: skip
    parser.add_argument(
        '--loop', type=int, default=1, metavar='N',
        help='play N times; pass n asks each question as <id>#n (default 1)',
    )  # fmt: skip
    parser.add_argument('--node', default='/vicrop', help='the vicrop node (topic prefix)')
    parser.add_argument('--out-bag', help='write the node outputs into this new bag (mcap)')
    parser.add_argument('--report', help='write one JSON line per question (and a summary)')
    parser.add_argument(
        '--html', help='write a self-contained HTML report (answers beside saliency images)'
    )
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
        help='bag seconds between a question\'s time and sending it (its stamp stays that '
        'time), so the frames of that time have reached the node',
    )  # fmt: skip
    return parser


def usage_error(args: argparse.Namespace) -> str:
    """Return what is wrong with the numeric arguments, or ''."""
    if args.rate <= 0:
        return '--rate must be > 0'
    if args.start < 0:
        return '--start must be >= 0'
    if args.duration is not None and args.duration <= 0:
        return '--duration must be > 0'
    if args.loop < 1:
        return '--loop must be >= 1'
    return ''


def in_window(questions: list[ScriptedQuestion], args) -> list[ScriptedQuestion]:
    """Return the questions whose ``at`` lies in --start/--duration; print one line per other."""
    end = args.start + args.duration if args.duration is not None else float('inf')
    kept = []
    for scripted in questions:
        if args.start <= scripted.at <= end:
            kept.append(scripted)
        else:
            print(f'leaving out {scripted.id}: at {scripted.at} s is outside the played window '
                  f'{args.start}..{end} s', file=sys.stderr)  # fmt: skip
    return kept


def main(argv: list[str] | None = None) -> int:
    """Replay, report, and return 0 only when every question passed."""
    args = build_parser().parse_args(argv)
    problem = usage_error(args)
    if problem:
        print(f'vicrop-replay: error: {problem}', file=sys.stderr)
        return 2
    try:
        questions = in_window(load_script(Path(args.script)), args)
        golden = load_golden(Path(args.golden)) if args.golden else None
        parse_remaps(args.remap)
    except (OSError, ScriptError, ValueError) as error:
        print(f'vicrop-replay: error: {error}', file=sys.stderr)
        return 2
    passes = [[q.in_pass(number) for q in questions] for number in range(1, args.loop + 1)]
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        figures = play(args, passes, context)
    except (OSError, ValueError, TimeoutError) as error:
        print(f'vicrop-replay: error: {error}', file=sys.stderr)
        return 2
    finally:
        rclpy.try_shutdown(context=context)
    asked = [q for questions in passes for q in questions]
    entries = [check(scripted, golden) for scripted in asked]
    for entry in entries:
        print(describe(entry))
    failed = sum(bool(entry['failures']) for entry in entries)
    summary = {k: figures[k] for k in ('messages', 'bag_duration_s', 'playback_wall_s',
                                       'rate_requested', 'rate_achieved')}  # fmt: skip
    summary |= {'kind': 'summary', 'questions': len(asked), 'failed': failed}
    print(f"replayed {summary['messages']} messages, {summary['bag_duration_s']:.2f} s of bag in "
          f"{summary['playback_wall_s']:.2f} s (rate {summary['rate_achieved']:.3f}); "
          f'{len(asked) - failed}/{len(asked)} questions passed')  # fmt: skip
    if args.report:
        lines = [json.dumps(e) for e in entries + [summary]]
        Path(args.report).write_text('\n'.join(lines) + '\n')
    if args.out_bag:
        write_bag(Path(args.out_bag), figures['recorded'])
    saliency = match_saliency(asked, figures['saliency'])
    if args.saliency_dir:
        write_saliency(Path(args.saliency_dir), saliency)
    if args.html:
        thumbnails = {question_id: thumbnail_png(image) for question_id, image in saliency.items()}
        title = f'vicrop-replay: {Path(args.bag).name}'
        Path(args.html).write_text(render_html(title, entries, summary, thumbnails))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
