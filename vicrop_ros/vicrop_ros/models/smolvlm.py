"""SmolVLM2: each image split into 512 px tiles plus a global view, 64 tokens per tile."""

from collections.abc import Sequence
import re

import numpy as np
import torch
from transformers import ProcessorMixin, SmolVLMForConditionalGeneration, SmolVLMProcessor

from .base import HfVisionLanguageModel

# The tile position tokens of the prompt: '<row_2_col_3>' precedes the tile of row 2, column 3.
TILE_TOKEN = re.compile(r'<row_(\d+)_col_(\d+)>')


class SmolVLMImageTextProcessor(SmolVLMProcessor):
    """
    SmolVLM's processor for images and text only: no video sub-processor.

    The stock processor always loads a video processor, which needs torchvision (not installed
    here, see Qwen2.5-VL's); images and text behave exactly as in ``SmolVLMProcessor``.
    """

    def __init__(
        self, image_processor=None, tokenizer=None, image_seq_len=169, chat_template=None, **kwargs
    ):
        """Build from an image processor and a tokenizer (the video processor slot stays None)."""
        super().__init__(
            image_processor, tokenizer, None, image_seq_len, chat_template=chat_template, **kwargs
        )

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """
        Render a conversation of images and text with the chat template.

        ``SmolVLMProcessor``'s own version first reads the video processor's frame sampling,
        which only videos use; an image-and-text processor renders as ``ProcessorMixin`` does.
        """
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


class SmolVLMAdapter(HfVisionLanguageModel):
    """
    SmolVLM2: an image is resized, split into square tiles and shown with a global view.

    The processor resizes the image to its longest edge (``size``), stretches it to whole tiles
    of ``max_image_size`` (R rows x C columns) and shows each tile, then the whole image squeezed
    into one tile (the global view); a pixel shuffle makes each tile s x s tokens (s = tile /
    patch / ``scale_factor``, 8 for SmolVLM2: 64 tokens). Every view spans the whole image (each
    axis scaled linearly), so one map covers the whole source image:

    * attention maps: the tiles' tokens laid out as an (R*s, C*s) mosaic, plus the global
      view's tokens spread evenly over the R x C mosaic cells each covers (attention per area);
    * pure-grad: the pixel gradients of the tiles as one (R*tile, C*tile) image (the global
      view, the same picture at 1 / (R*C) of the pixels, is left out).

    An image no larger than one tile is shown alone (no global view): s x s tokens.

    Default layer: the paper has none for SmolVLM. Its text model is a Llama (SmolLM2), as
    LLaVA-1.5's Vicuna, so the default is LLaVA-1.5's relative depth (14 of 32, layer 14 of
    SmolVLM2-500M's 32, 13 of the 256M's 30): a transfer, not a measurement, to be chosen again on
    real weights by the paper's criterion (the attention ratio inside the ground-truth box).
    Box base size: no fixed input side sets a crop's resolution (every image, crop or frame, is
    resized to the same longest edge), as for Qwen2.5-VL, so the paper's base size for such a
    model, 224 px, is used.
    """

    processor_class = SmolVLMImageTextProcessor
    shares_prefix = True  # every prompt starts with 'User:' and the first image's block
    paper_layer = (14, 32)  # see the class docstring: LLaVA-1.5's relative depth
    paper_base_size = 224  # the paper's crop base size for a model without a fixed input side

    @staticmethod
    def transformers_class() -> type:
        """SmolVLMForConditionalGeneration."""
        return SmolVLMForConditionalGeneration

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """Return the text model's decoder layers."""
        return self.model.model.text_model.layers

    @property
    def tile_side(self) -> int:
        """Return a tile's token grid side s (config: tile / patch / pixel-shuffle factor)."""
        vision, shuffle = self.model.config.vision_config, int(self.model.config.scale_factor)
        return int(vision.image_size) // int(vision.patch_size) // shuffle

    def __init__(self, name: str, model: torch.nn.Module, processor):
        """Wrap ``model`` and ``processor`` (see the base class)."""
        super().__init__(name, model, processor)
        self._block_lengths: dict[tuple[int, int], int] = {}  # (R, C) -> tokens, see image_tokens
        tokenizer = processor.tokenizer
        # Token id -> (row, column) of each tile token the tokenizer has.
        self._tile_ids = {
            token_id: (int(match[1]), int(match[2]))
            for token, token_id in tokenizer.added_tokens_encoder.items()
            if (match := TILE_TOKEN.fullmatch(token))
        }
        self._global_id = tokenizer.convert_tokens_to_ids(processor.global_image_token)

    def image_tokens(self, width: int, height: int) -> int:
        """Return the length of an image's prompt block: tiles, tile tokens and global view."""
        _, rows, cols = self.processor.image_processor.get_number_of_image_patches(height, width)
        if (rows, cols) not in self._block_lengths:
            text = self.processor.replace_image_token({'rows': [[rows]], 'cols': [[cols]]}, 0)
            self._block_lengths[rows, cols] = len(self.processor.tokenizer(text)['input_ids'])
        return self._block_lengths[rows, cols]

    def encode(self, images: Sequence[Sequence[np.ndarray]], prompts: Sequence[str]):
        """Return the processor's batch for one image list per prompt (nested, as it expects)."""
        inputs = self.processor(
            images=[list(row) for row in images],
            text=list(prompts),
            return_tensors='pt',
            padding=True,
            padding_side='right',
        )
        return inputs.to(self.device, dtype=self.model.dtype)

    def image_inputs(self, inputs) -> dict:
        """Return the tiles' pixels (batch, views, C, H, W) and their pixel masks."""
        return {k: inputs[k] for k in ('pixel_values', 'pixel_attention_mask') if k in inputs}

    def tile_layout(self, ids: torch.Tensor) -> tuple[int, int]:
        """
        Return (R, C), the tile rows and columns of the first image in ``ids`` (one row of ids).

        Read from the prompt's own tile tokens ('<row_r_col_c>', before the image's global
        view); (0, 0) for an image shown alone.
        """
        rows = cols = 0
        for token_id in ids.tolist():
            if token_id == self._global_id:
                break  # the first image's global view comes after all its tiles
            row, col = self._tile_ids.get(token_id, (0, 0))
            rows, cols = max(rows, row), max(cols, col)
        return rows, cols

    def views_of_first_image(self, ids: torch.Tensor) -> int:
        """Return how many views (tiles and global) the first image of ``ids`` has."""
        rows, cols = self.tile_layout(ids)
        return rows * cols + 1 if rows else 1

    def suffix_ids(self, prefix, prompt: str) -> list[int]:
        """Return the prompt's ids after the prefix: the image block's closing token, then text."""
        closing = self.processor.tokenizer.convert_tokens_to_ids(self.processor.fake_image_token)
        return [closing, *super().suffix_ids(prefix, prompt)]

    def images_after_first(self, inputs) -> dict:
        """Return the pixels and masks of the views after the first image's (the crop's)."""
        first = self.views_of_first_image(inputs['input_ids'][0])
        after = {k: v[:, first:] for k, v in self.image_inputs(inputs).items()}
        return after if after['pixel_values'].shape[1] else {}

    def stack_image_inputs(self, rows: Sequence[dict]) -> dict:
        """
        Return several rows' views as one batch: (rows, views, ...), short rows padded with zeros.

        A crop may be cut into fewer tiles than another; the model drops all-zero views (as it
        does for the processor's own padding), so the padding adds no image tokens.
        """
        rows = [row for row in rows if row]
        if not rows:
            return {}
        views = max(row['pixel_values'].shape[1] for row in rows)
        stacked = {}
        for key in rows[0]:
            padded = []
            for row in rows:
                tensor = row[key]
                missing = views - tensor.shape[1]
                if missing:
                    filler = tensor.new_zeros((tensor.shape[0], missing, *tensor.shape[2:]))
                    tensor = torch.cat([tensor, filler], dim=1)
                padded.append(tensor)
            stacked[key] = torch.cat(padded)
        return stacked

    def token_grid(
        self, values: torch.Tensor, inputs, row: int, ids: torch.Tensor
    ) -> torch.Tensor:
        """Return the (R*s, C*s) grid: the tile mosaic plus the global view spread over it."""
        side = self.tile_side
        rows, cols = self.tile_layout(ids)
        if not rows:
            return values.reshape(side, side)
        in_tiles = rows * cols * side * side
        tiles = values[:in_tiles].reshape(rows, cols, side, side)
        mosaic = tiles.permute(0, 2, 1, 3).reshape(rows * side, cols * side)
        whole = values[in_tiles:].reshape(side, side)
        return mosaic + whole.repeat_interleave(rows, 0).repeat_interleave(cols, 1) / (rows * cols)

    def pixel_images(self, inputs, pixel_tensor: torch.Tensor) -> torch.Tensor:
        """Return (batch, C, R*H, C*W): each row's tiles as one image (global view left out)."""
        rows, cols = self.tile_layout(inputs['input_ids'][0])  # every row shows the same image
        if not rows:
            return pixel_tensor[:, 0]
        batch, _, channels, height, width = pixel_tensor.shape
        count = rows * cols
        tiles = pixel_tensor[:, :count].reshape(batch, rows, cols, channels, height, width)
        mosaic = tiles.permute(0, 3, 1, 4, 2, 5)  # (batch, channels, R, H, C, W)
        return mosaic.reshape(batch, channels, rows * height, cols * width)
