"""
``vicrop-make-demo-bag``: a rosbag2 of synthetic head and wrist camera streams with small details.

The head camera (raw ``sensor_msgs/Image``, rgb8) looks at a table with a bottle carrying a tiny
printed label, a small red cube and a dial; the wrist camera (``sensor_msgs/CompressedImage``,
JPEG) sees a parts box with small printed text and a screw head. A question script (YAML) for
``vicrop-replay`` is written beside the bag.
"""

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
import yaml

from .bags import typestore

HEAD_TOPIC = '/head_camera/image_raw'
WRIST_TOPIC = '/wrist_camera/image_raw/compressed'
START_NS = 1_700_000_000_000_000_000  # bag time of the first frame (2023-11-14 22:13:20 UTC)
FONT = cv2.FONT_HERSHEY_SIMPLEX

QUESTIONS = [
    {'at': 0.5, 'id': 'label', 'camera': 'head',
     'question': 'What does the small label on the bottle say?'},
    {'at': 1.0, 'id': 'cube', 'camera': 'head', 'question': 'What colour is the small cube?'},
    {'at': 1.5, 'id': 'dial', 'camera': 'head', 'question': 'Which number does the dial show?'},
    {'at': 2.0, 'id': 'parts', 'camera': 'wrist',
     'question': 'What size is written on the parts box?'},
    {'at': 2.5, 'id': 'screw', 'camera': 'wrist', 'method': 'grad_att',
     'question': 'Is the screw head Phillips or flat?'},
]  # fmt: skip


def head_frame(width: int, height: int, index: int) -> np.ndarray:
    """Render the head camera's view (HWC uint8 RGB) for frame ``index``."""
    image = np.full((height, width, 3), (150, 140, 125), np.uint8)
    cv2.rectangle(image, (0, int(height * 0.6)), (width, height), (110, 85, 60), -1)  # table
    s = width / 640
    shift = int(4 * s * math.sin(index / 15))  # a slow sway, so frames differ
    x, y = int(430 * s) + shift, int(190 * s)
    cv2.rectangle(image, (x, y), (x + int(40 * s), y + int(110 * s)), (40, 120, 40), -1)  # bottle
    cv2.rectangle(image, (x + 3, y + int(45 * s)), (x + int(37 * s), y + int(62 * s)),
                  (245, 245, 235), -1)  # fmt: skip
    cv2.putText(image, 'ACME 12V', (x + 4, y + int(57 * s)), FONT, 0.22 * s, (20, 20, 20), 1,
                cv2.LINE_AA)  # fmt: skip
    cube = (int(150 * s) + shift, int(270 * s))
    cv2.rectangle(image, cube, (cube[0] + int(12 * s), cube[1] + int(12 * s)), (210, 30, 30), -1)
    centre, radius = (int(300 * s), int(120 * s)), int(22 * s)
    cv2.circle(image, centre, radius, (235, 235, 235), -1)
    cv2.circle(image, centre, radius, (30, 30, 30), 1)
    for value in range(0, 10):
        angle = math.radians(225 - value * 30)
        at = (int(centre[0] + 0.72 * radius * math.cos(angle)) - 2,
              int(centre[1] - 0.72 * radius * math.sin(angle)) + 2)  # fmt: skip
        cv2.putText(image, str(value), at, FONT, 0.16 * s, (30, 30, 30), 1, cv2.LINE_AA)
    needle = math.radians(225 - 7 * 30)
    tip = (int(centre[0] + 0.6 * radius * math.cos(needle)),
           int(centre[1] - 0.6 * radius * math.sin(needle)))  # fmt: skip
    cv2.line(image, centre, tip, (200, 20, 20), 1, cv2.LINE_AA)
    return image


def wrist_frame(width: int, height: int, index: int) -> np.ndarray:
    """Render the wrist camera's view (HWC uint8 RGB) for frame ``index``."""
    image = np.full((height, width, 3), (90, 95, 100), np.uint8)
    s = width / 1280
    shift = int(6 * s * math.cos(index / 12))
    x, y = int(250 * s) + shift, int(200 * s)
    cv2.rectangle(image, (x, y), (x + int(420 * s), y + int(300 * s)), (200, 170, 110), -1)  # box
    cv2.putText(image, 'M3 x 8 DIN 912', (x + int(20 * s), y + int(40 * s)), FONT, 0.45 * s,
                (30, 30, 30), 1, cv2.LINE_AA)  # fmt: skip
    screw = (int(900 * s) + shift, int(420 * s))
    cv2.circle(image, screw, int(18 * s), (180, 180, 185), -1)
    arm = int(11 * s)
    cv2.line(image, (screw[0] - arm, screw[1]), (screw[0] + arm, screw[1]), (60, 60, 60), 2)
    cv2.line(image, (screw[0], screw[1] - arm), (screw[0], screw[1] + arm), (60, 60, 60), 2)
    return image


def write_demo_bag(
    out_dir: Path,
    seconds: float = 3.0,
    rate_hz: float = 30.0,
    head_size: tuple[int, int] = (640, 480),
    wrist_size: tuple[int, int] = (1280, 720),
    storage: str = 'mcap',
    bag_offset_s: float = 0.0,
) -> tuple[Path, Path]:
    """
    Write the bag to ``out_dir/bag`` and the question script to ``out_dir/questions.yaml``.

    ``bag_offset_s``: bag time minus header stamps (a recorder whose clock differs from the
    cameras'); 0 records each message at its header stamp.
    """
    store = typestore()
    image_type = store.types['sensor_msgs/msg/Image']
    compressed_type = store.types['sensor_msgs/msg/CompressedImage']
    header_type = store.types['std_msgs/msg/Header']
    time_type = store.types['builtin_interfaces/msg/Time']
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_path = out_dir / 'bag'
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(bag_path, version=9, storage_plugin=plugin) as writer:
        head = writer.add_connection(HEAD_TOPIC, 'sensor_msgs/msg/Image', typestore=store)
        wrist = writer.add_connection(
            WRIST_TOPIC, 'sensor_msgs/msg/CompressedImage', typestore=store
        )
        for index in range(int(seconds * rate_hz)):
            stamp_ns = START_NS + int(index * 1e9 / rate_hz)
            stamp = time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
            rgb = head_frame(*head_size, index)
            message = image_type(
                header=header_type(stamp=stamp, frame_id='head_camera_optical'),
                height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', is_bigendian=0,
                step=rgb.shape[1] * 3, data=rgb.reshape(-1),
            )  # fmt: skip
            bag_ns = stamp_ns + int(bag_offset_s * 1e9)
            writer.write(head, bag_ns, store.serialize_cdr(message, image_type.__msgtype__))
            jpeg = cv2.imencode('.jpg', cv2.cvtColor(wrist_frame(*wrist_size, index),
                                                     cv2.COLOR_RGB2BGR))[1]  # fmt: skip
            message = compressed_type(
                header=header_type(stamp=stamp, frame_id='wrist_camera_optical'),
                format='jpeg', data=jpeg.reshape(-1),
            )  # fmt: skip
            writer.write(wrist, bag_ns, store.serialize_cdr(message, compressed_type.__msgtype__))
    questions = [q for q in QUESTIONS if q['at'] < seconds]
    script = out_dir / 'questions.yaml'
    script.write_text(
        '# Questions for vicrop-replay: at = seconds after the first message of the bag.\n'
        + yaml.safe_dump({'questions': questions}, sort_keys=False)
    )
    return bag_path, script


def main(argv: list[str] | None = None) -> int:
    """Write the demo bag and its question script."""
    parser = argparse.ArgumentParser(
        prog='vicrop-make-demo-bag', description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument('out', help='directory to write (bag/ and questions.yaml)')
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second per camera')
    parser.add_argument('--head-size', default='640x480', help='WIDTHxHEIGHT of the head camera')
    parser.add_argument(
        '--wrist-size', default='1280x720', help='WIDTHxHEIGHT of the wrist camera'
    )
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    args = parser.parse_args(argv)

    def size(text: str) -> tuple[int, int]:
        width, height = text.lower().split('x')
        return int(width), int(height)

    bag, script = write_demo_bag(
        Path(args.out), args.seconds, args.rate, size(args.head_size), size(args.wrist_size),
        args.storage,
    )  # fmt: skip
    print(f'bag: {bag}\nquestions: {script}')
    return 0
