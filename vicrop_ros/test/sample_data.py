"""Test data shared by the tests: the model families, reproducible images, image bombs."""

import struct
import zlib

import cv2
import numpy as np

from vicrop_ros.models.registry import FAMILY_NAMES

FAMILIES = FAMILY_NAMES  # every supported family, as the family-parametrised tests run them


def random_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Return a reproducible random HWC uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def jpeg_claiming(width: int, height: int) -> bytes:
    """Return a small real JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    ok, encoded = cv2.imencode('.jpg', np.zeros((16, 16, 3), np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b'\xff\xc0')
    struct.pack_into('>HH', data, sof + 5, height, width)  # after marker, length, precision
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """Return a small real PNG whose IHDR claims ``width`` x ``height`` pixels (CRC redone)."""
    ok, encoded = cv2.imencode('.png', np.zeros((16, 16, 3), np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    struct.pack_into('>II', data, 16, width, height)  # IHDR data starts at byte 16
    struct.pack_into('>I', data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)
