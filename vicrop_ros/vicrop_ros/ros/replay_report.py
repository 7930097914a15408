"""
What ``vicrop-replay`` writes: report entries and their verdicts, the HTML report, the outputs bag.

A report entry (one JSON line per question) holds the question, what the node answered (status,
answer, box, the frame used: camera, stamp, frame_id, size), the node's per-stage timings, the
latency seen by the replay and why the question failed. The HTML report shows the same entries
beside their saliency images, self-contained (images embedded). No ROS node here.
"""

import base64
import html
import json
from pathlib import Path

import cv2
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import Image

from .bags import typestore
from .images import decode_rgb
from .jobs import STATUS_NAMES
from .replay_script import ScriptedQuestion, verdict

# Answer field -> report key of the node's per-stage timings (milliseconds).
STAGE_TIMINGS = (('queue_wait_ms', 'queue_wait'), ('saliency_ms', 'saliency'), ('crop_ms', 'crop'),
                 ('answer_ms', 'answer'), ('total_ms', 'total'))  # fmt: skip
THUMBNAIL_WIDTH = 320  # pixels, saliency images in the HTML report


def check(scripted: ScriptedQuestion, golden: dict | None) -> dict:
    """Return the report entry of one question, its ``failures`` included (see verdict)."""
    entry = {'kind': 'question', 'id': scripted.id, 'at': scripted.at, 'camera': scripted.camera,
             'question': scripted.question, 'answers_received': len(scripted.answers),
             'expect': scripted.expect}  # fmt: skip
    if not scripted.answers:
        entry['status'] = None
        return entry | {'failures': verdict(entry, scripted, golden)}
    answer, received = scripted.answers[0]
    box = None
    if answer.crop.width:
        crop = answer.crop
        box = [crop.x_offset, crop.y_offset, crop.x_offset + crop.width,
               crop.y_offset + crop.height]  # fmt: skip
    entry |= {
        'status': STATUS_NAMES.get(answer.status, str(answer.status)), 'error': answer.error,
        'answer': answer.answer, 'method': answer.method, 'box': box,
        'camera_used': answer.camera,
        'image_stamp': f'{answer.header.stamp.sec}.{answer.header.stamp.nanosec:09d}',
        'frame_id': answer.header.frame_id,
        'image_size': [answer.image_width, answer.image_height],
        'timings_ms': {key: round(getattr(answer, field), 1) for field, key in STAGE_TIMINGS},
        'latency_ms': round((received - scripted.sent_wall) * 1000, 1),
    }  # fmt: skip
    return entry | {'failures': verdict(entry, scripted, golden)}


def describe(entry: dict) -> str:
    """Return the lines printed for one report entry."""
    status = entry['status'] or 'NO ANSWER'
    said = entry.get('answer') or entry.get('error', '')
    text = (f"[{entry['at']:6.2f} s] {entry['id']} ({entry['camera'] or 'default'}): "
            f"{entry['question']}\n    -> {status}: {said!r}  box={entry.get('box')}  "
            f"latency={entry.get('latency_ms')} ms")  # fmt: skip
    if entry.get('image_stamp'):
        text += f'  frame={entry["camera_used"]}@{entry["image_stamp"]}'
    if entry['failures']:
        text += f'\n    FAILED: {"; ".join(entry["failures"])}'
    return text


def load_golden(path: Path) -> dict:
    """Return the question entries of an earlier report by id; ValueError names a bad line."""
    golden = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f'{path}:{number}: not a report line: {error}') from None
        if entry.get('kind') == 'question':
            golden[entry['id']] = entry
    return golden


def write_bag(path: Path, recorded: list) -> None:
    """Write the recorded outputs into a rosbag2 (mcap)."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msgtype, bag_ns, raw in recorded:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], bag_ns, raw)


def frame_key(header) -> tuple:
    """Return what identifies a frame in a header: its stamp and frame_id."""
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


def answered_with_crop(questions: list[ScriptedQuestion]) -> list[ScriptedQuestion]:
    """Return the questions whose first answer has a crop box (so a saliency image)."""
    return [q for q in questions if q.answers and q.answers[0][0].crop.width]


def match_saliency(questions: list[ScriptedQuestion], images: list[Image]) -> dict[str, Image]:
    """
    Return each question's saliency image by question id.

    A saliency image carries its frame's header, not the question: two questions about one
    frame send two images with one header. The node serves one question at a time and
    publishes its saliency image before its answer, so the k-th image of a header belongs to the
    k-th answer (in the order received) of that header that has a crop box.
    """
    images_by_frame: dict[tuple, list[Image]] = {}
    for image in images:
        images_by_frame.setdefault(frame_key(image.header), []).append(image)
    answered = sorted(answered_with_crop(questions), key=lambda q: q.answers[0][1])
    matched = {}
    for scripted in answered:
        waiting = images_by_frame.get(frame_key(scripted.answers[0][0].header))
        if waiting:
            matched[scripted.id] = waiting.pop(0)
    return matched


def write_saliency(folder: Path, images: dict[str, Image]) -> None:
    """Write each question's saliency image (``match_saliency``) as ``<id>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    for question_id, image in images.items():
        bgr = cv2.cvtColor(decode_rgb(image), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f'{question_id}.png'), bgr)


def thumbnail_png(image: Image, width: int = THUMBNAIL_WIDTH) -> bytes:
    """Return a saliency image scaled to ``width`` pixels (aspect kept) as PNG bytes."""
    rgb = decode_rgb(image)
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.imencode('.png', cv2.cvtColor(small, cv2.COLOR_RGB2BGR))[1].tobytes()


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ccc; padding: 0.4em 0.6em; text-align: left;
         vertical-align: top; }
tr.failed { background: #fde8e8; }
tr.passed { background: #eaf7ea; }
.verdict { font-weight: bold; }
.failures { color: #a00; }
.small { color: #555; font-size: 0.85em; }
img { display: block; }
"""


def render_html(
    title: str, entries: list[dict], summary: dict, thumbnails: dict[str, bytes]
) -> str:
    """
    Return the HTML report: a summary and one table row per question entry.

    ``thumbnails``: PNG bytes by question id (the saliency image with its box), embedded as
    data URLs, so the file is all a person needs. Every text is escaped.
    """
    e = html.escape
    passed = summary['questions'] - summary['failed']
    rows = []
    for entry in entries:
        png = thumbnails.get(entry['id'])
        picture = (f'<img alt="saliency of {e(entry["id"])}" '
                   f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                   if png else '<span class="small">no crop</span>')  # fmt: skip
        status = entry['status'] or 'NO ANSWER'
        said = entry.get('answer') or entry.get('error') or ''
        expect = ', '.join(f'{k}: {v}' for k, v in entry['expect'].items()) or 'status: OK'
        failures = ''.join(f'<li>{e(f)}</li>' for f in entry['failures'])
        timings = entry.get('timings_ms') or {}
        stages = ' · '.join(f'{k} {v:.0f}' for k, v in timings.items())
        frame = (f'{e(entry["camera_used"])} {e(entry["image_stamp"])}<br>'
                 f'{e(entry["frame_id"])} {entry["image_size"][0]}x{entry["image_size"][1]}'
                 if entry.get('image_stamp') else '')  # fmt: skip
        verdict_text = 'FAILED' if entry['failures'] else 'passed'
        rows.append(
            f'<tr id="{e(entry["id"])}" class="{verdict_text.lower()}">'
            f'<td>{picture}</td>'
            f'<td><b>{e(entry["id"])}</b> <span class="small">at {entry["at"]:.2f} s, '
            f'{e(entry["camera"] or "default camera")}</span><br>{e(entry["question"])}</td>'
            f'<td>{e(status)}</td><td>{e(said)}</td><td>{e(expect)}</td>'
            f'<td><span class="verdict">{verdict_text}</span>'
            f'<ul class="failures">{failures}</ul></td>'
            f'<td>{frame}</td>'
            f'<td>{entry.get("latency_ms", "")} ms<br><span class="small">{stages}</span></td>'
            '</tr>'
        )
    head = ''.join(f'<th>{h}</th>' for h in ('saliency', 'question', 'status', 'answer',
                                             'expected', 'verdict', 'frame used',
                                             'latency (node stages, ms)'))  # fmt: skip
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{e(title)}</title><style>{STYLE}</style></head><body>'
        f'<h1>{e(title)}</h1>'
        f'<p id="summary">{passed}/{summary["questions"]} questions passed · '
        f'{summary["messages"]} messages, {summary["bag_duration_s"]:.2f} s of bag in '
        f'{summary["playback_wall_s"]:.2f} s</p>'
        f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '</body></html>\n'
    )
