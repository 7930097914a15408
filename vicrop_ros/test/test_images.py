"""Image messages -> RGB arrays: encodings, row padding, size limits, image bombs. No DDS."""

import cv2
import numpy as np
import psutil
import pytest
from sample_data import jpeg_claiming, png_claiming
from sensor_msgs.msg import CompressedImage, Image

from vicrop_ros.ros.images import BadImageError, decode_rgb

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # height 5, width 7


def raw(encoding: str, pixels: np.ndarray, padding: int = 0) -> Image:
    """Return an Image of ``pixels`` (HxW or HxWxC) with ``padding`` junk bytes after every row."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8)
    junk = np.full((height, padding), 0xAB, np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    return Image(height=height, width=width, encoding=encoding, step=data.shape[1],
                 data=data.tobytes())  # fmt: skip


PADDED_CASES = {
    'rgb8': (RGB, RGB),
    'bgr8': (RGB[..., ::-1].copy(), RGB),
    'bgra8': (np.dstack([RGB[..., ::-1], np.full((5, 7), 255, np.uint8)]), RGB),
    'rgba8': (np.dstack([RGB, np.full((5, 7), 9, np.uint8)]), RGB),
    'mono8': (RGB[..., 0].copy(), np.repeat(RGB[..., :1], 3, axis=2)),
    'rgb16': (RGB.astype(np.uint16) * 257, RGB),
}


@pytest.mark.parametrize('encoding', sorted(PADDED_CASES))
@pytest.mark.parametrize('padding', [0, 3, 64])
def test_raw_images_decode_pixel_exact_with_or_without_row_padding(encoding, padding):
    pixels, expected = PADDED_CASES[encoding]
    rgb = decode_rgb(raw(encoding, pixels, padding))
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize(
    ('change', 'reason'),
    [
        (dict(width=0), 'image has zero size (0x5)'),
        (dict(step=20), 'image step 20 is smaller than a row of 7 rgb8 pixels (21 bytes)'),
        (dict(encoding='rgb9'), "cannot decode image encoding 'rgb9'"),
        (dict(height=6), 'image data has 105 bytes, expected step x height = 21 x 6 = 126'),
    ],
)
def test_raw_images_that_disagree_with_their_fields_are_refused_with_the_reason(change, reason):
    msg = raw('rgb8', RGB)
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(BadImageError) as error:
        decode_rgb(msg)
    assert reason in str(error.value)


def test_the_pixel_limit_is_checked_before_the_data():
    msg = Image(height=20000, width=20000, encoding='rgb8', step=60000)  # no data at all
    with pytest.raises(BadImageError) as error:
        decode_rgb(msg, max_pixels=33_177_600)
    assert 'image of 20000x20000 pixels is over the limit of 33177600 pixels' in str(error.value)


def compressed(data: bytes, image_format='jpeg') -> CompressedImage:
    return CompressedImage(format=image_format, data=data)


@pytest.mark.parametrize(
    ('data', 'claimed'),
    [
        (jpeg_claiming(30000, 30000), 'more than'),  # over Pillow's own header limit too
        (jpeg_claiming(65000, 65000), 'more than'),
        (jpeg_claiming(9000, 9000), 'image of 9000x9000 pixels is over the limit'),
        (png_claiming(20000, 20000), 'more than'),
        (png_claiming(8000, 5000), 'image of 8000x5000 pixels is over the limit'),
    ],
)
def test_compressed_bombs_are_refused_from_their_header_without_decoding(data, claimed):
    process = psutil.Process()
    before = process.memory_info().rss
    with pytest.raises(BadImageError) as error:
        decode_rgb(compressed(data), max_pixels=33_177_600)
    growth_mb = (process.memory_info().rss - before) / 2**20
    print(f'{len(data)}-byte image: RSS growth {growth_mb:.1f} MB')
    assert claimed in str(error.value) and 'max_image_pixels' in str(error.value)
    assert growth_mb < 200  # decoding would have needed gigabytes


def test_compressed_images_decode_and_broken_ones_are_refused():
    ok, png = cv2.imencode('.png', cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_rgb(compressed(png.tobytes(), 'png')), RGB)
    with pytest.raises(BadImageError) as empty:
        decode_rgb(compressed(b''))
    assert str(empty.value) == 'compressed image has no data'
    with pytest.raises(BadImageError) as garbage:
        decode_rgb(compressed(b'not an image at all'))
    assert "cannot read the compressed image header (format 'jpeg')" in str(garbage.value)
    truncated = jpeg_claiming(16, 16)[:40]
    with pytest.raises(BadImageError) as cut:
        decode_rgb(compressed(truncated))
    assert 'compressed image' in str(cut.value)


def test_depth_frames_compressed_are_refused_like_raw_depth():
    depth = (np.arange(48 * 64).reshape(48, 64) * 13).astype(np.uint16)  # millimetres
    ok, png16 = cv2.imencode('.png', depth)
    with pytest.raises(BadImageError) as deep:
        decode_rgb(compressed(png16.tobytes(), '16UC1; png compressed'))
    assert "has 'I;16' pixels, one channel deeper than 8 bits: a depth" in str(deep.value)
    with pytest.raises(BadImageError) as depth_transport:
        decode_rgb(compressed(bytes(12) + png16.tobytes(), '16UC1; compressedDepth png'))
    assert 'is a depth image (compressedDepth)' in str(depth_transport.value)
    # An 8-bit mono PNG is a camera image and decodes (grey to RGB).
    ok, mono = cv2.imencode('.png', RGB[..., 0])
    np.testing.assert_array_equal(
        decode_rgb(compressed(mono.tobytes(), 'png'))[..., 1], RGB[..., 0]
    )
