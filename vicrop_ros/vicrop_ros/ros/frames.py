"""
Per-camera ring buffers of received frames, and the choice of the frame a question is about.

Frames are kept as the serialized (CDR) bytes the subscription delivered: storing one costs a
stamp read and an append, and only the frame a question uses is ever deserialized and decoded.
Stamps are integer nanoseconds: the header stamp (read straight from the bytes), or the receive
time when a driver leaves it zero. No ROS here: the camera subscription feeds :meth:`add`.
"""

from collections import deque
from dataclasses import dataclass
import struct
import threading


@dataclass(frozen=True)
class Frame:
    """One received camera message."""

    stamp_ns: int  # header stamp (or receive time if the header stamp is zero), nanoseconds
    data: bytes  # the serialized sensor_msgs/Image or sensor_msgs/CompressedImage (CDR)
    message_type: type  # Image or CompressedImage


def header_stamp_ns(cdr: bytes) -> int:
    """
    Return the header stamp, in nanoseconds, of a serialized message that starts with a Header.

    CDR: a 4-byte encapsulation header (byte 1: 0 big-endian, 1 little-endian), then
    ``std_msgs/Header.stamp`` as int32 seconds and uint32 nanoseconds.
    """
    order = '<' if cdr[1] & 1 else '>'
    seconds, nanoseconds = struct.unpack_from(f'{order}iI', cdr, 4)
    return seconds * 1_000_000_000 + nanoseconds


class FrameChoiceError(Exception):
    """No usable frame; ``status`` names the Answer status (NO_IMAGE or STALE_IMAGE)."""

    def __init__(self, status: str, reason: str):
        """Record the status name and the human-readable reason."""
        super().__init__(reason)
        self.status = status


class FrameBuffer:
    """The last ``length`` frames of camera ``name``; thread-safe (intake, worker, callbacks)."""

    def __init__(self, name: str, length: int, message_type: type):
        """Keep at most ``length`` frames of ``message_type`` (Image or CompressedImage)."""
        self.name = name
        self.message_type = message_type
        self._frames: deque[Frame] = deque(maxlen=length)
        self._lock = threading.Lock()
        self.received = 0  # frames added since start

    def add(self, data: bytes, received_ns: int) -> None:
        """Store one serialized message received at ``received_ns`` (the subscription callback)."""
        frame = Frame(header_stamp_ns(data) or received_ns, data, self.message_type)
        with self._lock:
            self._frames.append(frame)
            self.received += 1

    def newest_stamp_ns(self) -> int | None:
        """Return the stamp of the newest frame, or None before the first."""
        with self._lock:
            return self._frames[-1].stamp_ns if self._frames else None

    def choose(self, stamp_ns: int, now_ns: int, max_age_ns: int) -> Frame:
        """
        Return the frame a question is about, or raise FrameChoiceError.

        ``stamp_ns`` 0 means the newest frame, which must be at most ``max_age_ns`` older than
        ``now_ns``. Otherwise the frame nearest to ``stamp_ns``, which must lie within
        ``max_age_ns`` of it (before or after).
        """
        with self._lock:
            frames = list(self._frames)
        if not frames:
            raise FrameChoiceError('NO_IMAGE', f'no frame received on the {self.name} camera yet')
        if stamp_ns == 0:
            frame = frames[-1]
            age_ns = now_ns - frame.stamp_ns
            if age_ns > max_age_ns:
                raise FrameChoiceError(
                    'STALE_IMAGE',
                    f'newest {self.name} frame is {age_ns / 1e9:.3f} s old '
                    f'(max_image_age {max_age_ns / 1e9:.3f} s)',
                )
            return frame
        frame = min(frames, key=lambda f: abs(f.stamp_ns - stamp_ns))
        gap_ns = abs(frame.stamp_ns - stamp_ns)
        if gap_ns > max_age_ns:
            raise FrameChoiceError(
                'STALE_IMAGE',
                f'nearest {self.name} frame to the requested stamp is {gap_ns / 1e9:.3f} s away '
                f'(max_image_age {max_age_ns / 1e9:.3f} s)',
            )
        return frame
