"""Saliency images for people: the map as a heatmap over the frame, with the crop box drawn."""

import cv2
import numpy as np

from .core.box import Box

BOX_COLOUR_BGR = (0, 255, 0)


def saliency_overlay(
    image: np.ndarray, saliency: np.ndarray | None, box: Box | None, alpha: float = 0.45
) -> np.ndarray:
    """
    Return a BGR uint8 image: ``image`` with ``saliency`` blended over it and ``box`` drawn.

    ``image``: HWC uint8 RGB. ``saliency``: (rows, cols) on a grid tiling the whole image (as in
    ``VicropResult.saliency``), stretched to the image and min-max normalised; None draws no
    heatmap. ``box``: source pixels; None draws no box. ``alpha``: heatmap weight in [0, 1].
    """
    frame = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    height, width = frame.shape[:2]
    if saliency is not None:
        values = np.asarray(saliency, np.float32)
        span = float(values.max() - values.min())
        normalised = (values - values.min()) / span if span > 0 else np.zeros_like(values)
        heat = cv2.resize(
            (normalised * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
        )
        frame = cv2.addWeighted(
            cv2.applyColorMap(heat, cv2.COLORMAP_JET), alpha, frame, 1.0 - alpha, 0.0
        )
    if box is not None and box.area > 0:
        thickness = max(2, round(min(width, height) / 200))
        cv2.rectangle(frame, (box.x0, box.y0), (box.x1 - 1, box.y1 - 1), BOX_COLOUR_BGR, thickness)
    return frame
