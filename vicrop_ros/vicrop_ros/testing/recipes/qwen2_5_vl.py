"""Qwen2.5-VL (``Qwen/Qwen2.5-VL-3B-Instruct``): a native-resolution ViT merging 2 x 2, Qwen2."""

from dataclasses import dataclass

from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ...models.qwen2_5_vl import Qwen2_5_VLImageTextProcessor
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

# Qwen2.5-VL: 14 px patches merged 2 x 2, windowed attention in all but the full blocks.
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
WINDOW_SIZE = 112
ROPE_THETA = 1000000.0
MIN_PIXELS = 56 * 56
MAX_PIXELS = 256 * 28 * 28  # 200704: a 640 x 480 frame becomes 364 x 504 (26 x 36 patches)


@dataclass(frozen=True)
class QwenSize:
    """Layer sizes of a Qwen2.5-VL-shaped model."""

    vision: Tower
    text: Tower
    full_attention_blocks: tuple[int, ...]  # vision blocks with full (not windowed) attention
    mrope_section: tuple[int, int, int]  # temporal, height, width; sums to head_dim / 2
    pixels: tuple[int, int]  # the image processor's (min_pixels, max_pixels)
    vocab_size: int | None = None  # None: the tokenizer's size


SIZES = {
    # Tests: about 0.3 M parameters.
    'tiny': QwenSize(TINY_VISION, TINY_TEXT, (1,), (2, 3, 3), (MIN_PIXELS, MAX_PIXELS)),
    # CPU benchmarks: Qwen2.5-VL-3B's depth and token layout (36 text layers, head_dim 128 with
    # its mrope sections, 2 KV heads, its vocabulary; a 32-block vision tower with its full
    # blocks; its pixel budget), at a quarter of the text width and a fifth of the vision width.
    '3b_shape': QwenSize(
        Tower(256, 32, 4, 512), Tower(512, 36, 4, 2752, kv_heads=2), (7, 15, 23, 31),
        (16, 24, 24), (3136, 12845056), 151936,
    ),
}  # fmt: skip

# The image tokens of a 640x480 frame at each benchmark size, as Qwen2.5-VL-3B's processor files
# make them: 17 x 23 after the 2 x 2 merge of 14 px patches.
IMAGE_TOKENS_640x480 = {'3b_shape': 391}

# Qwen2.5-VL's ChatML format, each image item as <|vision_start|><|image_pad|><|vision_end|> in
# place, with the default system prompt when the messages have none.
CHAT_TEMPLATE = chatml_template(default_system='You are a helpful assistant.')


def _as_published(image_processor: dict, processor: dict) -> None:
    """
    Write the hub's processor keys: ``min_pixels``/``max_pixels``, and a video processor entry.

    The entry is written by hand: the video processor class cannot be built without torchvision.
    """
    size = image_processor.pop('size')
    image_processor['min_pixels'] = size['shortest_edge']
    image_processor['max_pixels'] = size['longest_edge']
    processor['video_processor'] = {
        'video_processor_type': 'Qwen2VLVideoProcessor',
        'size': {'shortest_edge': MIN_PIXELS, 'longest_edge': MAX_PIXELS},
        'patch_size': PATCH_SIZE,
        'temporal_patch_size': TEMPORAL_PATCH_SIZE,
        'merge_size': MERGE_SIZE,
        'image_mean': list(OPENAI_CLIP_MEAN),
        'image_std': list(OPENAI_CLIP_STD),
    }


# The maps of a 640x480 frame (rows, cols) under the tiny budget: it resizes to 504 x 364 px =
# 36 x 26 patches of 14 px, 18 x 13 tokens after the 2 x 2 merge (the attention maps read
# tokens); pure-grad pools pixel gradients per patch.
MAP_GRIDS_640x480 = {'attention': (13, 18), 'pure_grad': (26, 36)}

# The two-image prompt as the published template renders it ({question}: the text item).
VISION = '<|vision_start|><|image_pad|><|vision_end|>'
TWO_IMAGE_PROMPT = (
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
    f'<|im_start|>user\n{VISION}{VISION}{{question}}<|im_end|>\n<|im_start|>assistant\n'
)


def image_token_runs(config, inputs) -> list[int]:
    """Return the image-token count of each image of ``inputs`` by the config: merged patches."""
    merge = config.vision_config.spatial_merge_size
    return [int(t * h * w) // merge**2 for t, h, w in inputs['image_grid_thw']]


HUB = HubLayout(
    'Qwen2_5_VLProcessor', chat_template_files=('chat_template.json',), edit=_as_published
)


def build(size: str = 'tiny'):
    """Return (model class, config, processor) of a random Qwen2.5-VL of ``SIZES[size]``."""
    shape = SIZES[size]
    tokenizer = chatml_tokenizer(CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config={
            'depth': shape.vision.layers,
            'hidden_size': shape.vision.hidden,
            'intermediate_size': shape.vision.intermediate,
            'num_heads': shape.vision.heads,
            'patch_size': PATCH_SIZE,
            'spatial_merge_size': MERGE_SIZE,
            'temporal_patch_size': TEMPORAL_PATCH_SIZE,
            'window_size': WINDOW_SIZE,
            'fullatt_block_indexes': list(shape.full_attention_blocks),
            'out_hidden_size': shape.text.hidden,
        },
        text_config={
            'vocab_size': shape.vocab_size or len(tokenizer),
            **transformer_sizes(shape.text),
            'max_position_embeddings': TEXT_MAX_POSITIONS,
            'max_window_layers': shape.text.layers,
            'rope_parameters': {
                'rope_type': 'default',
                'rope_theta': ROPE_THETA,
                'mrope_section': list(shape.mrope_section),
            },
            'bos_token_id': ids('<|endoftext|>'),
            'eos_token_id': tokenizer.eos_token_id,
            'pad_token_id': tokenizer.pad_token_id,
        },
        image_token_id=ids('<|image_pad|>'),
        video_token_id=ids('<|video_pad|>'),
        vision_start_token_id=ids('<|vision_start|>'),
        vision_end_token_id=ids('<|vision_end|>'),
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=shape.pixels[0],
        max_pixels=shape.pixels[1],
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
    )
    processor = Qwen2_5_VLImageTextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    return Qwen2_5_VLForConditionalGeneration, config, processor
