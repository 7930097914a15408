"""
Image messages <-> numpy arrays, with errors a person can act on.

Decoding happens only when a question needs a frame (never in the camera callbacks). Raw images
honour ``step`` (rows may be padded, as ROS allows). A compressed image's size is read from its
header and checked against the pixel limit before anything is decoded, so a small file that
claims (or holds) a huge picture costs no memory.
"""

import array
import io
import warnings

import cv2
import numpy as np
import PIL.Image
from rosbags.image import ImageError, message_to_cvimage
from rosbags.image.image import to_cvtype
from sensor_msgs.msg import CompressedImage, Image

DEFAULT_MAX_PIXELS = 33_177_600  # 8K UHD (7680x4320); the node's max_image_pixels parameter


class BadImageError(ValueError):
    """The image message cannot be used; the message says why."""


def check_size(width: int, height: int, max_pixels: int) -> None:
    """Raise BadImageError for a zero-sized image or one of more than ``max_pixels`` pixels."""
    if width == 0 or height == 0:
        raise BadImageError(f'image has zero size ({width}x{height})')
    if width * height > max_pixels:
        raise BadImageError(
            f'image of {width}x{height} pixels is over the limit of {max_pixels} pixels '
            '(max_image_pixels)'
        )


def row_bytes(msg: Image) -> int:
    """Return the bytes of one unpadded row of a raw Image (width x bytes per pixel)."""
    try:
        bits, _, _, channels = to_cvtype(msg.encoding)
    except ImageError as error:
        raise BadImageError(f'cannot decode image encoding {msg.encoding!r}: {error}') from None
    return msg.width * channels * bits // 8


def check_image_message(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise BadImageError unless a raw Image's size fields and data agree and fit the limit."""
    check_size(msg.width, msg.height, max_pixels)
    row = row_bytes(msg)
    if msg.step < row:
        raise BadImageError(
            f'image step {msg.step} is smaller than a row of {msg.width} {msg.encoding} pixels '
            f'({row} bytes)'
        )
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
        rgb = _decode_compressed(msg, max_pixels)
    else:
        check_image_message(msg, max_pixels)
        try:
            rgb = message_to_cvimage(_unpadded(msg), 'rgb8')
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


def _unpadded(msg: Image) -> Image:
    """Return ``msg``, or a copy without the padding at the end of each row (step > row)."""
    row = row_bytes(msg)
    if msg.step == row:
        return msg
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :row]
    packed = Image(header=msg.header, height=msg.height, width=msg.width, step=row)
    packed.encoding, packed.is_bigendian = msg.encoding, msg.is_bigendian
    packed.data = np.ascontiguousarray(rows).tobytes()
    return packed


# Pillow modes of single-channel images deeper than 8 bits: depth, thermal and other non-photos.
NON_PHOTO_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')


def compressed_size(data: bytes, image_format: str, max_pixels: int) -> tuple[int, int]:
    """Return (width, height) from a compressed image's header (see compressed_header)."""
    width, height, _ = compressed_header(data, image_format, max_pixels)
    return width, height


def compressed_header(data: bytes, image_format: str, max_pixels: int) -> tuple[int, int, str]:
    """
    Return (width, height, Pillow mode) from a compressed image's header, pixels not decoded.

    Pillow refuses to open headers of more than 2 x ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (its
    own bomb check); such an image is reported as over the limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(data)) as header:
                return (*header.size, header.mode)
    except PIL.Image.DecompressionBombError:
        raise BadImageError(
            f'compressed image header claims more than {2 * PIL.Image.MAX_IMAGE_PIXELS} pixels '
            f'(the limit is {max_pixels} pixels, max_image_pixels)'
        ) from None
    except (PIL.Image.UnidentifiedImageError, OSError, ValueError) as error:
        raise BadImageError(
            f'cannot read the compressed image header (format {image_format!r}): {error}'
        ) from None


def _decode_compressed(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """Decode a CompressedImage with OpenCV to HWC uint8 RGB, its size checked first."""
    if not len(msg.data):
        raise BadImageError('compressed image has no data')
    data = bytes(msg.data)
    if 'compresseddepth' in msg.format.lower().replace(' ', ''):
        raise BadImageError(
            f'compressed image format {msg.format!r} is a depth image (compressedDepth); '
            'questions need a colour or mono camera'
        )
    width, height, mode = compressed_header(data, msg.format, max_pixels)
    if mode in NON_PHOTO_MODES:
        raise BadImageError(
            f'compressed image (format {msg.format!r}) has {mode!r} pixels, one channel deeper '
            'than 8 bits: a depth or other non-photo frame; questions need a colour or mono camera'
        )
    check_size(width, height, max_pixels)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise BadImageError(
            f'cannot decode compressed image (format {msg.format!r}): {error}'
        ) from None
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
