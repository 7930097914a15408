"""Qwen2.5-VL: native-resolution vision with 2x2 patch merging; rectangular token grids."""

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from .base import HfVisionLanguageModel


class Qwen2_5_VLImageTextProcessor(Qwen2_5_VLProcessor):  # noqa: N801 (transformers' naming)
    """
    Qwen2.5-VL's processor for images and text only: no video sub-processor.

    The stock processor always loads a video processor, and every video processor in
    transformers needs torchvision, which this project does not install (its PyPI wheels do not
    import beside the pinned torch). Images and text behave exactly as in ``Qwen2_5_VLProcessor``;
    ``from_pretrained`` loads the image processor, tokenizer and chat template of any checkpoint.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        """Build from an image processor and a tokenizer (the video processor slot stays None)."""
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLAdapter(HfVisionLanguageModel):  # noqa: N801 (transformers' naming)
    """
    Qwen2.5-VL: an image of (H, W) resized pixels gives (H/28) x (W/28) tokens, row-major.

    The processor resizes the whole image (no crop), so a map covers the whole source image.
    The paper reads layer 22 of 36 (Qwen2.5-VL-3B) and used 224 px as the box base size.
    """

    processor_class = Qwen2_5_VLImageTextProcessor  # images and text, with or without torchvision
    shares_prefix = True  # every prompt starts with [system + user turn opening + first image]
    paper_layer = (22, 36)
    paper_base_size = 224  # the paper's crop base size for Qwen2.5-VL (it has no fixed input size)

    @staticmethod
    def transformers_class() -> type:
        """Qwen2_5_VLForConditionalGeneration."""
        return Qwen2_5_VLForConditionalGeneration

    @staticmethod
    def apply_pixel_budget(processor, min_pixels: int, max_pixels: int) -> None:
        """
        Set the image processor's pixel budget; 0 keeps the checkpoint's value.

        Every image (frame, tile, crop) is resized to between ``min_pixels`` and ``max_pixels``
        pixels, aspect kept, sides multiples of 28: the main cost and accuracy knob (the paper
        used max_pixels = 256 x 28 x 28 = 200704). Raises ValueError for min over max.
        """
        images = processor.image_processor
        low = min_pixels or images.size['shortest_edge']
        high = max_pixels or images.size['longest_edge']
        if low > high:
            raise ValueError(f'min_pixels {low} is over max_pixels {high}')
        images.size = {'shortest_edge': low, 'longest_edge': high}

    def image_tokens(self, width: int, height: int) -> int:
        """Return the merged tokens of an image resized by the processor's pixel budget."""
        patches = self.processor.image_processor.get_number_of_image_patches(height, width)
        return int(patches) // self.merge_size**2

    @property
    def merge_size(self) -> int:
        """Patches merged per token along each axis (2)."""
        return int(self.model.config.vision_config.spatial_merge_size)

    def patch_grid(self, inputs, row: int) -> tuple[int, int]:
        """Return the merged token grid of row ``row``'s image (``image_grid_thw``)."""
        _, height, width = (int(v) for v in inputs['image_grid_thw'][row])
        return (height // self.merge_size, width // self.merge_size)

    def pixel_images(self, inputs, pixel_tensor: torch.Tensor) -> torch.Tensor:
        """
        Undo the processor's patch layout: (patches, C*T*p*p) rows -> (images, C, H, W).

        Rows are ordered (H/2p, W/2p, 2, 2) per image, columns (C, T, p, p); the T temporal
        copies of a still image are averaged. All images must have the same grid.
        """
        grids = [tuple(int(v) for v in thw) for thw in inputs['image_grid_thw']]
        if len(set(grids)) != 1:
            raise ValueError('pixel_images needs images of one size')
        _, grid_h, grid_w = grids[0]
        m, p = self.merge_size, self.patch_size
        channels = pixel_tensor.shape[1] // (self.temporal_patch_size * p * p)
        x = pixel_tensor.reshape(
            len(grids), grid_h // m, grid_w // m, m, m, channels, self.temporal_patch_size, p, p
        ).mean(dim=6)  # (n, bh, bw, mh, mw, C, ph, pw)
        x = x.permute(0, 5, 1, 3, 6, 2, 4, 7)  # (n, C, bh, mh, ph, bw, mw, pw)
        return x.reshape(len(grids), channels, grid_h * p, grid_w * p)

    def image_inputs(self, inputs) -> dict:
        """Return the pixel patches and each image's (t, h, w) patch grid."""
        return {'pixel_values': inputs['pixel_values'], 'image_grid_thw': inputs['image_grid_thw']}

    def images_after_first(self, inputs) -> dict:
        """Return the patches and grids of the images after the first (the crop)."""
        grids = inputs['image_grid_thw']
        if len(grids) < 2:
            return {}
        first = int(grids[0].prod())  # the first image's patch rows
        return {'pixel_values': inputs['pixel_values'][first:], 'image_grid_thw': grids[1:]}

    def positions(
        self, ids: torch.Tensor, image_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """
        Return the model's 3-D mrope position ids of whole prompts: (3, batch, length).

        Also records the prompts' position deltas on the model (``rope_deltas``), where a
        generation continuing after them (the prefix-continued answer) reads its positions.
        """
        language = self.model.model
        positions, deltas = language.get_rope_index(
            ids,
            (ids == self.image_token_id).int(),  # token types: 1 for image tokens, 0 for text
            image_grid_thw=image_grid_thw,
            attention_mask=attention_mask,
        )
        language.rope_deltas = deltas
        return positions

    @property
    def temporal_patch_size(self) -> int:
        """Frames per temporal patch (2); a still image is repeated."""
        return int(self.model.config.vision_config.temporal_patch_size)
