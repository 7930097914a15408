"""
Per-camera ring buffers of received frames, and the choice of the frame a question is about.

Frames are kept as the serialized (CDR) bytes the subscription delivered: storing one costs a
stamp read and an append, and only the frame a question uses is ever deserialized and decoded.
Stamps are integer nanoseconds: the header stamp (read straight from the bytes), or the receive
time when a driver leaves it zero. No ROS here: the camera subscription feeds :meth:`add`.

A question whose frame has not arrived yet (stamped after the newest frame, or asking for the
newest when the newest is missing or too old) gets a :class:`FrameRequest` that the buffer decides
the moment such a frame is added, from the frames kept then. The choice therefore depends only on
the sequence of frames, not on when the worker gets to the question (by then the frame may have
left the ring).
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


class FrameRequest:
    """A question's frame choice: decided on arrival, when its frame comes, or when settled."""

    def __init__(self, stamp_ns: int, max_age_ns: int):
        """Choose the frame at ``stamp_ns`` (0: newest) within ``max_age_ns`` (see choose)."""
        self.stamp_ns, self.max_age_ns = stamp_ns, max_age_ns
        self._frame: Frame | None = None
        self._error: FrameChoiceError | None = None
        self._decided = threading.Event()
        self._withdraw: Callable[[FrameRequest], None] = lambda request: None

    @property
    def decided(self) -> bool:
        """Whether the frame (or the reason there is none) is known."""
        return self._decided.is_set()

    def result(self) -> Frame:
        """Return the chosen frame, or raise the FrameChoiceError that decided it."""
        if not self.decided:
            raise RuntimeError('the frame request is not decided yet')
        if self._error is not None:
            raise self._error
        return self._frame

    def withdraw(self) -> None:
        """Stop waiting (the question ended without needing its frame)."""
        self._withdraw(self)

    def _decide(self, name: str, frames: list[Frame], now_ns: int) -> None:
        """Choose from camera ``name``'s ``frames`` (in arrival order) at node time ``now_ns``."""
        try:
            self._frame = choose_frame(name, frames, self.stamp_ns, now_ns, self.max_age_ns)
        except FrameChoiceError as error:
            self._error = error
        self._decided.set()

    def _arrived(self, frames: list[Frame], now_ns: int) -> bool:
        """Whether a frame this request waits for is among ``frames``."""
        if not frames:
            return False
        newest = newest_frame(frames).stamp_ns
        if self.stamp_ns:
            return newest >= self.stamp_ns
        return now_ns - newest <= self.max_age_ns


class FrameBuffer:
    """The last ``length`` frames of camera ``name``; thread-safe (intake, worker, callbacks)."""

    def __init__(self, name: str, length: int, message_type: type):
        """Keep at most ``length`` frames of ``message_type`` (Image or CompressedImage)."""
        self.name = name
        self.message_type = message_type
        self._frames: deque[Frame] = deque(maxlen=length)
        self._waiting: list[FrameRequest] = []  # undecided requests, oldest first
        self._lock = threading.Lock()
        self.received = 0  # frames added since start

    def add(self, data: bytes, received_ns: int) -> None:
        """Store one serialized message received at ``received_ns`` (the subscription callback)."""
        frame = Frame(header_stamp_ns(data) or received_ns, data, self.message_type)
        with self._lock:
            self._frames.append(frame)
            self.received += 1
            if self._waiting:
                frames = list(self._frames)
                waiting = []
                for request in self._waiting:
                    if request._arrived(frames, received_ns):
                        request._decide(self.name, frames, received_ns)
                    else:
                        waiting.append(request)
                self._waiting = waiting

    def clear(self) -> int:
        """Forget every kept frame (their stamps belong to another timeline); return how many."""
        with self._lock:
            count = len(self._frames)
            self._frames.clear()
        return count

    def request(self, stamp_ns: int, now_ns: int, max_age_ns: int) -> FrameRequest:
        """
        Return the request for the frame at ``stamp_ns`` (0: newest), asked at ``now_ns``.

        It is decided now when its frame is here, else when that frame is added (see
        :meth:`settle` for a frame that never comes).
        """
        request = FrameRequest(stamp_ns, max_age_ns)
        with self._lock:
            frames = list(self._frames)
            if request._arrived(frames, now_ns):
                request._decide(self.name, frames, now_ns)
            else:
                request._withdraw = self._withdraw
                self._waiting.append(request)
        return request

    def settle(self, request: FrameRequest, now_ns: int) -> None:
        """Decide ``request`` from the frames kept now, if its frame has not come."""
        with self._lock:
            if not request.decided:
                self._waiting.remove(request)
                request._decide(self.name, list(self._frames), now_ns)

    def _withdraw(self, request: FrameRequest) -> None:
        """Forget an undecided request."""
        with self._lock:
            if request in self._waiting:
                self._waiting.remove(request)

    @property
    def waiting(self) -> int:
        """Return how many requests wait for a frame."""
        with self._lock:
            return len(self._waiting)

    def newest_stamp_ns(self) -> int | None:
        """Return the stamp of the newest frame, or None before the first."""
        with self._lock:
            return newest_frame(self._frames).stamp_ns if self._frames else None

    def choose(self, stamp_ns: int, now_ns: int, max_age_ns: int) -> Frame:
        """Return the frame a question is about from the kept frames (see choose_frame)."""
        with self._lock:
            frames = list(self._frames)
        return choose_frame(self.name, frames, stamp_ns, now_ns, max_age_ns)


def newest_frame(frames) -> Frame:
    """
    Return the frame with the latest stamp among ``frames`` (in arrival order, not empty).

    Stamps may go backwards (a driver's clock, a multi-threaded driver's publish order): the
    newest frame is the one stamped last, not the one received last; of equal stamps, the later.
    """
    return max(reversed(frames), key=lambda frame: frame.stamp_ns)


def choose_frame(
    name: str, frames: list[Frame], stamp_ns: int, now_ns: int, max_age_ns: int
) -> Frame:
    """
    Return the frame of camera ``name``'s ``frames`` (in arrival order) a question is about.

    ``stamp_ns`` 0 means the newest frame (:func:`newest_frame`), which must be at most
    ``max_age_ns`` older than ``now_ns``. Otherwise the frame nearest to ``stamp_ns``, which
    must lie within ``max_age_ns`` of it (before or after). Raises FrameChoiceError when
    there is none.
    """
    if not frames:
        raise FrameChoiceError('NO_IMAGE', f'no frame received on the {name} camera yet')
    if stamp_ns == 0:
        frame = newest_frame(frames)
        age_ns = now_ns - frame.stamp_ns
        if age_ns > max_age_ns:
            raise FrameChoiceError(
                'STALE_IMAGE',
                f'newest {name} frame is {age_ns / 1e9:.3f} s old '
                f'(max_image_age {max_age_ns / 1e9:.3f} s)',
            )
        return frame
    frame = min(frames, key=lambda f: abs(f.stamp_ns - stamp_ns))
    gap_ns = abs(frame.stamp_ns - stamp_ns)
    if gap_ns > max_age_ns:
        raise FrameChoiceError(
            'STALE_IMAGE',
            f'nearest {name} frame to the requested stamp is {gap_ns / 1e9:.3f} s away '
            f'(max_image_age {max_age_ns / 1e9:.3f} s)',
        )
    return frame
