"""Qwen3-VL (``Qwen/Qwen3-VL-2B-Instruct``): a 16 px ViT merging 2 x 2, deepstack, Qwen3."""

from dataclasses import dataclass

from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ...models.qwen3_vl import Qwen3VLImageTextProcessor
from ..hub_layout import HubLayout
from ..text import (
    TEXT_MAX_POSITIONS,
    TINY_TEXT,
    TINY_VISION,
    Tower,
    chatml_template,
    chatml_tokenizer,
    transformer_sizes,
)
from .qwen2_5_vl import VISION, image_token_runs  # noqa: F401 (the same token layout)

# Qwen3-VL's vision input (transformers' defaults for the family): 16 px patches merged 2 x 2
# (32 px per token), two frames per temporal patch, mean and std 0.5.
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)
MIN_PIXELS = 64 * 64
MAX_PIXELS = 256 * 32 * 32  # 262144: the paper's 256-token budget at Qwen3-VL's 32 px tokens
ROPE_THETA = 5000000.0


@dataclass(frozen=True)
class Qwen3VLSize:
    """Layer sizes of a Qwen3-VL-shaped model."""

    vision: Tower
    text: Tower
    deepstack_layers: tuple[int, ...]  # vision blocks whose features join the first text layers
    mrope_section: tuple[int, int, int]  # temporal, height, width; sums to head_dim / 2
    pixels: tuple[int, int]  # the image processor's (min_pixels, max_pixels)
    vocab_size: int | None = None  # None: the tokenizer's size
    tie_word_embeddings: bool = False


SIZES = {
    # Tests: about 0.3 M parameters.
    'tiny': Qwen3VLSize(TINY_VISION, TINY_TEXT, (0,), (2, 3, 3), (MIN_PIXELS, MAX_PIXELS)),
    # CPU benchmarks: Qwen3-VL-2B's depth and token layout (28 text layers of head_dim 128 with
    # its interleaved mrope sections, 2 query heads per KV head, its vocabulary and tied
    # embeddings; 24 vision blocks of head 64 with deepstack at 5, 11, 17; its pixel budget, so
    # 640x480 gives 15 x 20 tokens) at a quarter of the text and vision widths.
    '2b_shape': Qwen3VLSize(
        Tower(256, 24, 4, 1024), Tower(512, 28, 4, 1536, kv_heads=2), (5, 11, 17),
        (24, 20, 20), (65536, 16777216), 151936, tie_word_embeddings=True,
    ),
}  # fmt: skip

# The image tokens of a 640x480 frame at each benchmark size, as Qwen3-VL-2B's processor files
# make them: 15 x 20 tokens of 32 px.
IMAGE_TOKENS_640x480 = {'2b_shape': 300}

# The ChatML format with each image item in place; Qwen3-VL adds no default system prompt.
CHAT_TEMPLATE = chatml_template(default_system=None)

# The maps of a 640x480 frame (rows, cols) under the tiny budget: it resizes to 576 x 416 px =
# 36 x 26 patches of 16 px, 18 x 13 tokens after the 2 x 2 merge (the attention maps read
# tokens); pure-grad pools pixel gradients per patch.
MAP_GRIDS_640x480 = {'attention': (13, 18), 'pure_grad': (26, 36)}

# The two-image prompt as the published template renders it: no default system turn.
TWO_IMAGE_PROMPT = (
    f'<|im_start|>user\n{VISION}{VISION}{{question}}<|im_end|>\n<|im_start|>assistant\n'
)

HUB = HubLayout('Qwen3VLProcessor', chat_template_files=('chat_template.json',))


def build(size: str = 'tiny'):
    """Return (model class, config, processor) of a random Qwen3-VL of ``SIZES[size]``."""
    shape = SIZES[size]
    tokenizer = chatml_tokenizer(CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        vision_config={
            'depth': shape.vision.layers,
            'hidden_size': shape.vision.hidden,
            'intermediate_size': shape.vision.intermediate,
            'num_heads': shape.vision.heads,
            'patch_size': PATCH_SIZE,
            'spatial_merge_size': MERGE_SIZE,
            'temporal_patch_size': TEMPORAL_PATCH_SIZE,
            'out_hidden_size': shape.text.hidden,
            'deepstack_visual_indexes': list(shape.deepstack_layers),
        },
        text_config={
            'vocab_size': shape.vocab_size or len(tokenizer),
            **transformer_sizes(shape.text),
            'head_dim': shape.text.head_dim,
            'max_position_embeddings': TEXT_MAX_POSITIONS,
            'rope_parameters': {
                'rope_type': 'default',
                'rope_theta': ROPE_THETA,
                'mrope_section': list(shape.mrope_section),
                'mrope_interleaved': True,
            },
            'bos_token_id': ids('<|endoftext|>'),
            'eos_token_id': tokenizer.eos_token_id,
            'pad_token_id': tokenizer.pad_token_id,
        },
        image_token_id=ids('<|image_pad|>'),
        video_token_id=ids('<|video_pad|>'),
        vision_start_token_id=ids('<|vision_start|>'),
        vision_end_token_id=ids('<|vision_end|>'),
        tie_word_embeddings=shape.tie_word_embeddings,
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=shape.pixels[0],
        max_pixels=shape.pixels[1],
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    processor = Qwen3VLImageTextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    return Qwen3VLForConditionalGeneration, config, processor
