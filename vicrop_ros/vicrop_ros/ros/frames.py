"""
Per-camera ring buffers of received frames, and the choice of the frame a question is about.

Frames wait in the DDS reader's own history (KEEP_LAST ``buffer_length``) and are taken only
when somebody needs them (a question, the periodic diagnostics): a 30 Hz stream that nobody asks
about costs no Python work at all. Taken frames are kept as serialized (CDR) bytes, deserialized
and decoded only for the question that uses them, with their stamp in integer nanoseconds: the
header stamp (read straight from the bytes), or the take time when a driver leaves it zero.
"""

from collections import deque
from collections.abc import Callable
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
    """
    The last ``length`` frames of one camera; thread-safe (intake, worker and diagnostics).

    ``take()`` returns the next waiting serialized message (oldest first) or None;
    ``now_ns()`` stamps frames whose header stamp is zero; ``message_type`` is what they hold.
    """

    def __init__(
        self,
        name: str,
        length: int,
        take: Callable[[], bytes | None],
        message_type: type,
        now_ns: Callable[[], int],
    ):
        """Keep at most ``length`` frames of camera ``name``, taken with ``take``."""
        self.name = name
        self._frames: deque[Frame] = deque(maxlen=length)
        self._take, self._message_type, self._now_ns = take, message_type, now_ns
        self._lock = threading.Lock()
        self.received = 0  # frames taken since start
        self.checked_ns = 0  # when waiting frames were last taken (now_ns clock)

    def _refill(self) -> None:
        """Take every waiting frame (call with the lock held)."""
        self.checked_ns = self._now_ns()
        while (data := self._take()) is not None:
            stamp_ns = header_stamp_ns(data) or self.checked_ns
            self._frames.append(Frame(stamp_ns, data, self._message_type))
            self.received += 1

    def newest_stamp_ns(self, refill: bool = True) -> int | None:
        """Return the stamp of the newest frame (taking waiting ones first), or None."""
        with self._lock:
            if refill:
                self._refill()
            return self._frames[-1].stamp_ns if self._frames else None

    def choose(self, stamp_ns: int, now_ns: int, max_age_ns: int) -> Frame:
        """
        Return the frame a question is about, or raise FrameChoiceError.

        ``stamp_ns`` 0 means the newest frame, which must be at most ``max_age_ns`` older than
        ``now_ns``. Otherwise the frame nearest to ``stamp_ns``, which must lie within
        ``max_age_ns`` of it (before or after).
        """
        with self._lock:
            self._refill()
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
