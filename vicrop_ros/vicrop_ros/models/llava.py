"""LLaVA-1.5 (llava-hf checkpoints): a CLIP vision tower and Vicuna, one image token per patch."""

import cv2
import numpy as np
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from ..core.geometry import Extent, image_size, pad_to_square
from .base import HfVisionLanguageModel

# Padding may grow an image at most this many times in pixels; a longer thin strip is shrunk
# first (to twice the model's input side), so a 20000x20 frame never becomes a 20000x20000 one.
PAD_GROWTH_LIMIT = 4


class LlavaAdapter(HfVisionLanguageModel):
    """
    LLaVA-1.5: one block of image tokens per image, each token one CLIP patch (row-major grid).

    Images are padded to a square with the processor's mean colour before the processor sees them,
    as LLaVA-1.5 was trained (its llava-hf processor would centre-crop instead and never show the
    sides of a wide camera frame). The paper reads layer 14 of 32.
    """

    paper_layer = (14, 32)
    shares_prefix = True

    processor_class = LlavaProcessor

    @staticmethod
    def transformers_class() -> type:
        """LlavaForConditionalGeneration."""
        return LlavaForConditionalGeneration

    def model_view(self, image: np.ndarray) -> tuple[np.ndarray, Extent]:
        """
        Pad to a square with the processor's mean colour; the extent reaches past the image.

        Frames of usual shapes are padded as they are (the processor resizes the square). A
        strip whose square would have more than PAD_GROWTH_LIMIT times its pixels is shrunk
        first, to a long side of twice the model input: the square then stays small (a bound
        of (2 x input)² pixels) and the model sees the same picture.
        """
        mean = self.processor.image_processor.image_mean
        fill = tuple(int(round(255 * m)) for m in mean)
        width, height = image_size(image)
        side, target = max(width, height), 2 * self.input_size
        if side * side <= PAD_GROWTH_LIMIT * width * height or side <= target:
            return pad_to_square(image, fill)
        scale = target / side
        small = cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))),
            interpolation=cv2.INTER_AREA,
        )  # fmt: skip
        square, extent = pad_to_square(small, fill)
        # The extent in source pixels: the shrunk image's extent, scaled back per axis.
        sx, sy = width / small.shape[1], height / small.shape[0]
        return square, (extent[0] * sx, extent[1] * sy, extent[2] * sx, extent[3] * sy)

    def images_after_first(self, inputs) -> dict:
        """Return the pixel values of the images after the first (the crop)."""
        pixels = inputs['pixel_values'][1:]
        return {'pixel_values': pixels} if len(pixels) else {}
