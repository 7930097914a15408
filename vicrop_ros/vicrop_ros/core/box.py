"""The crop box type: XYXY integer pixels, half-open."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """
    An axis-aligned box in image pixels, XYXY, half-open.

    It covers the pixels (x, y) with ``x0 <= x < x1`` and ``y0 <= y < y1``, in the frame of the
    image it refers to (origin top-left, x right, y down). Width and height may be zero.
    """

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        """Reject non-integer coordinates and negative sizes."""
        for name in ('x0', 'y0', 'x1', 'y1'):
            if not isinstance(getattr(self, name), int):
                raise TypeError(f'Box.{name} must be an int, got {getattr(self, name)!r}')
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValueError(f'Box has a negative size: {self}')

    @classmethod
    def whole(cls, width: int, height: int) -> 'Box':
        """Return the box covering a whole ``width`` x ``height`` image."""
        return cls(0, 0, width, height)

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        """Area in pixels."""
        return self.width * self.height

    def contains(self, x: float, y: float) -> bool:
        """Return whether the point (x, y), in pixels, lies inside the box."""
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1

    def is_inside(self, width: int, height: int) -> bool:
        """Return whether the box lies within a ``width`` x ``height`` image."""
        return self.x0 >= 0 and self.y0 >= 0 and self.x1 <= width and self.y1 <= height

    def shifted(self, dx: int, dy: int) -> 'Box':
        """Return the box moved by (dx, dy) pixels (e.g. from tile to full-image coordinates)."""
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def slices(self) -> tuple[slice, slice]:
        """Return the numpy index (rows, columns) of the box's pixels in an HW or HWC array."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    def as_xyxy(self) -> tuple[int, int, int, int]:
        """Return (x0, y0, x1, y1)."""
        return (self.x0, self.y0, self.x1, self.y1)
