"""
Image messages <-> numpy arrays, with errors a person can act on.

Decoding happens only when a question needs a frame (never in the camera callbacks).
"""

import array

import cv2
import numpy as np
from rosbags.image import ImageError, message_to_cvimage
from sensor_msgs.msg import CompressedImage, Image

DEFAULT_MAX_PIXELS = 33_177_600  # 8K UHD (7680x4320); the node's max_image_pixels parameter


class BadImageError(ValueError):
    """The image message cannot be used; the message says why."""


def check_image_message(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise BadImageError unless a raw Image's size fields and data agree and fit the limit."""
    if msg.width == 0 or msg.height == 0:
        raise BadImageError(f'image has zero size ({msg.width}x{msg.height})')
    if msg.width * msg.height > max_pixels:
        raise BadImageError(
            f'image of {msg.width}x{msg.height} pixels is over the limit of {max_pixels} pixels '
            '(max_image_pixels)'
        )
    if msg.step < msg.width:
        raise BadImageError(f'image step {msg.step} is smaller than its width {msg.width}')
    if len(msg.data) != msg.step * msg.height:
        raise BadImageError(
            f'image data has {len(msg.data)} bytes, expected step x height = '
            f'{msg.step} x {msg.height} = {msg.step * msg.height}'
        )


def decode_rgb(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """
    Return the message's pixels as an HWC uint8 RGB array.

    Raw encodings that ``rosbags-image`` knows (rgb8, bgr8, rgba8, bgra8, mono8, mono16, bayer_*,
    yuv422, ...) and compressed images OpenCV decodes (JPEG, PNG, ...) are accepted; anything else,
    or more than ``max_pixels`` pixels, raises BadImageError.
    """
    if isinstance(msg, CompressedImage):
        rgb = _decode_compressed(msg)
    else:
        check_image_message(msg, max_pixels)
        try:
            rgb = message_to_cvimage(msg, 'rgb8')
        except (ImageError, ValueError, TypeError) as error:
            raise BadImageError(
                f'cannot decode image encoding {msg.encoding!r}: {error}'
            ) from None
    if rgb.shape[0] * rgb.shape[1] > max_pixels:
        raise BadImageError(
            f'image of {rgb.shape[1]}x{rgb.shape[0]} pixels is over the limit of {max_pixels} '
            'pixels (max_image_pixels)'
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _decode_compressed(msg: CompressedImage) -> np.ndarray:
    """Decode a CompressedImage with OpenCV to HWC uint8 RGB."""
    if not len(msg.data):
        raise BadImageError('compressed image has no data')
    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadImageError(
            f'cannot decode compressed image (format {msg.format!r}): corrupt data?'
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bgr_image_message(bgr: np.ndarray, header) -> Image:
    """Return a bgr8 Image message of ``bgr`` (HWC uint8) with ``header`` (fast byte copy)."""
    msg = Image(header=header, height=bgr.shape[0], width=bgr.shape[1], encoding='bgr8')
    msg.step = bgr.shape[1] * 3
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(bgr, dtype=np.uint8).tobytes())
    msg.data = data
    return msg
