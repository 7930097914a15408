"""LLaVA-1.5 (llava-hf checkpoints): a CLIP vision tower and Vicuna, one image token per patch."""

import numpy as np
from transformers import LlavaForConditionalGeneration

from ..core.geometry import Extent, pad_to_square
from .base import HfVisionLanguageModel


class LlavaModel(HfVisionLanguageModel):
    """
    LLaVA-1.5: one block of image tokens per image, each token one CLIP patch (row-major grid).

    Images are padded to a square with the processor's mean colour before the processor sees them,
    as LLaVA-1.5 was trained (its llava-hf processor would centre-crop instead and never show the
    sides of a wide camera frame). The paper reads layer 14 of 32.
    """

    paper_layer = (14, 32)
    shares_prefix = True

    @staticmethod
    def transformers_class() -> type:
        """LlavaForConditionalGeneration."""
        return LlavaForConditionalGeneration

    def model_view(self, image: np.ndarray) -> tuple[np.ndarray, Extent]:
        """Pad to a square with the processor's mean colour; the extent reaches past the image."""
        mean = self.processor.image_processor.image_mean
        return pad_to_square(image, tuple(int(round(255 * m)) for m in mean))

    def images_after_first(self, inputs) -> dict:
        """Return the pixel values of the images after the first (the crop)."""
        pixels = inputs['pixel_values'][1:]
        return {'pixel_values': pixels} if len(pixels) else {}
