"""The HTML report of vicrop-replay, rendered by a real browser (headless Chromium)."""

from html import escape
from pathlib import Path
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer
from vicrop_ros.ros.replay_report import check, render_html, thumbnail_png
from vicrop_ros.ros.replay_script import ScriptedQuestion

BROWSER = shutil.which('chromium') or shutil.which('chromium-browser')
SCREENSHOT_DIR = Path('/tmp/vicrop-test-artifacts')  # kept after the run, for a person to look at


def saliency_image(box: tuple[int, int, int, int]) -> Image:
    """Return a 640x480 rgb8 saliency-like image with a green box (x0, y0, x1, y1)."""
    rgb = np.full((480, 640, 3), 40, np.uint8)
    rgb[:, :, 0] = np.linspace(0, 255, 640, dtype=np.uint8)  # a red ramp: the 'map'
    cv2.rectangle(rgb, box[:2], box[2:], (0, 255, 0), 4)
    return Image(height=480, width=640, encoding='rgb8', step=640 * 3, data=rgb.tobytes())


def answered(question_id: str, text: str, status: int, box=None, **expect) -> ScriptedQuestion:
    """Return a scripted question with one Answer of ``status`` (and its crop ``box``)."""
    answer = Answer(id=question_id, status=status, camera='head', method='rel_att')
    answer.answer = 'ACME' if status == Answer.OK else ''
    answer.error = '' if status == Answer.OK else 'no frame received on the head camera yet'
    if status == Answer.OK:  # the frame used; none for an error before a frame was chosen
        answer.header.stamp.sec, answer.header.frame_id = 7, 'head_optical'
        answer.image_width, answer.image_height = 640, 480
    answer.answer_ms, answer.total_ms = 120.0, 150.0
    if box:
        x0, y0, x1, y1 = box
        answer.crop.x_offset, answer.crop.y_offset = x0, y0
        answer.crop.width, answer.crop.height = x1 - x0, y1 - y0
    scripted = ScriptedQuestion(at=0.5, id=question_id, question=text, camera='head',
                                expect=expect)  # fmt: skip
    scripted.sent_wall = 1.0
    scripted.answers.append((answer, 1.2))
    return scripted


def report_page(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Write a report of three questions (one passed with a crop, two failed) and return it."""
    boxes = {'label': (300, 200, 420, 290), 'cube': (10, 10, 200, 150)}
    questions = [
        answered('label', 'What does the small label say?', Answer.OK, boxes['label'],
                 answer='ACME'),
        answered('cube', 'What colour is the cube?', Answer.OK, boxes['cube'], answer='red'),
        answered('quiet', 'Is the <script>alert(1)</script> tag text?', Answer.NO_IMAGE),
    ]  # fmt: skip
    entries = [check(q, None) for q in questions]
    summary = {'questions': 3, 'failed': 2, 'messages': 120, 'bag_duration_s': 2.0,
               'playback_wall_s': 2.5}  # fmt: skip
    thumbnails = {name: thumbnail_png(saliency_image(box)) for name, box in boxes.items()}
    page = tmp_path / 'report.html'
    page.write_text(render_html('vicrop-replay: demo', entries, summary, thumbnails))
    return page, entries


def test_the_report_page_names_every_question_verdict_and_escapes_text(tmp_path):
    page, entries = report_page(tmp_path)
    html = page.read_text()
    assert '1/3 questions passed' in html
    assert '<tr id="label" class="passed">' in html
    assert '<tr id="cube" class="failed">' in html
    assert escape("answer 'ACME' does not contain 'red'") in html
    assert '<tr id="quiet" class="failed">' in html and 'status NO_IMAGE' in html
    assert '<script>' not in html and '&lt;script&gt;' in html  # question text stays text
    assert html.count('data:image/png;base64,') == 2  # the two answers with a crop
    assert entries[0]['timings_ms']['total'] == 150.0


@pytest.mark.skipif(BROWSER is None, reason='chromium is not installed (scripts/setup installs it '
                    'with apt where it can)')  # fmt: skip
def test_headless_chromium_shows_every_question_and_its_saliency_image(tmp_path):
    page, entries = report_page(tmp_path)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / 'replay-report.png'
    screenshot.unlink(missing_ok=True)
    common = [BROWSER, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
              f'--user-data-dir={tmp_path / "profile"}']  # fmt: skip
    dom = subprocess.run(
        common + ['--dump-dom', page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr
    for entry in entries:  # the rendered DOM holds a row per question with its text
        assert f'<tr id="{entry["id"]}"' in dom.stdout
        assert escape(entry['question'], quote=False) in dom.stdout
    shot = subprocess.run(
        common + [f'--screenshot={screenshot}', '--window-size=1400,900', page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr
    pixels = cv2.imread(str(screenshot))
    assert pixels.shape[:2] == (900, 1400)
    # The embedded saliency thumbnails were drawn: their green box is on the page.
    green = (pixels[:, :, 1] > 200) & (pixels[:, :, 0] < 80) & (pixels[:, :, 2] < 80)
    assert green.sum() > 200
    print(f'screenshot: {screenshot}')
