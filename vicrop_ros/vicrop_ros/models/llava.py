"""LLaVA-1.5 (llava-hf checkpoints): CLIP ViT-L/14-336 + Vicuna, 24x24 image tokens."""

from collections.abc import Sequence

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from ..core.config import VicropConfig
from ..core.geometry import Extent, pad_to_square
from .base import Forward, HfVisionLanguageModel


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

    @property
    def input_size(self) -> int:
        """Return the vision tower's input side in pixels (336 for LLaVA-1.5)."""
        return int(self.model.config.vision_config.image_size)

    @property
    def patch_size(self) -> int:
        """Return CLIP's patch side in pixels (14)."""
        return int(self.model.config.vision_config.patch_size)

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """Return the Llama decoder layers."""
        return self.model.model.language_model.layers

    @property
    def output_head(self) -> torch.nn.Module:
        """Return the LM head."""
        return self.model.lm_head

    @property
    def image_token_id(self) -> int:
        """Return the ``<image>`` token id from the model config."""
        return int(self.model.config.image_token_id)

    def model_view(self, image: np.ndarray) -> tuple[np.ndarray, Extent]:
        """Pad to a square with the processor's mean colour; the extent reaches past the image."""
        mean = self.processor.image_processor.image_mean
        return pad_to_square(image, tuple(int(round(255 * m)) for m in mean))

    def prompt(self, question: str, images: int) -> str:
        """Apply the checkpoint's chat template: user turn with ``images`` images then text."""
        content = [{'type': 'image'}] * images + [{'type': 'text', 'text': question}]
        messages = [{'role': 'user', 'content': content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def encode(self, images: Sequence[Sequence[np.ndarray]], prompts: Sequence[str]):
        """Run the processor on a batch, right-padded, on the model's device."""
        flat = [image for row in images for image in row]
        inputs = self.processor(
            images=flat,
            text=list(prompts),
            return_tensors='pt',
            padding=True,
            padding_side='right',
        )
        return inputs.to(self.device, dtype=self.model.dtype)

    def forward(self, inputs, out: Forward, config: VicropConfig) -> None:
        """Run vision tower, projector and language model to the last hidden state."""
        out.hidden = self.model.model(**inputs, use_cache=False).last_hidden_state

    def images_after_first(self, inputs) -> dict:
        """Return the pixel values of the images after the first (the crop)."""
        pixels = inputs['pixel_values'][1:]
        return {'pixel_values': pixels} if len(pixels) else {}

    def patch_grid(self, inputs, row: int) -> tuple[int, int]:
        """Return the CLIP patch grid: (image_size / patch_size) squared."""
        side = self.input_size // self.patch_size
        return (side, side)
