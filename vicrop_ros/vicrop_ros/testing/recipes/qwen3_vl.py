"""Qwen3-VL (``Qwen/Qwen3-VL-2B-Instruct``): a 16 px ViT merging 2 x 2, deepstack, Qwen3."""

from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ...models.qwen3_vl import Qwen3VLImageTextProcessor
from ..hub_layout import HubLayout
from ..text import (
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_INTERMEDIATE,
    TEXT_KV_HEADS,
    TEXT_LAYERS,
    TEXT_MAX_POSITIONS,
    VISION_HEADS,
    VISION_HIDDEN,
    VISION_INTERMEDIATE,
    VISION_LAYERS,
    chatml_template,
    chatml_tokenizer,
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
DEEPSTACK_LAYERS = (0,)  # vision blocks whose features are added to the first text layers
MROPE_SECTION = (2, 3, 3)  # temporal, height, width; sums to head_dim / 2, interleaved
ROPE_THETA = 5000000.0

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
    """Return (model class, config, processor) of the tiny Qwen3-VL."""
    if size != 'tiny':
        raise ValueError(f'Qwen3-VL has one test size, tiny; not {size!r}')
    tokenizer = chatml_tokenizer(CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        vision_config={
            'depth': VISION_LAYERS,
            'hidden_size': VISION_HIDDEN,
            'intermediate_size': VISION_INTERMEDIATE,
            'num_heads': VISION_HEADS,
            'patch_size': PATCH_SIZE,
            'spatial_merge_size': MERGE_SIZE,
            'temporal_patch_size': TEMPORAL_PATCH_SIZE,
            'out_hidden_size': TEXT_HIDDEN,
            'deepstack_visual_indexes': list(DEEPSTACK_LAYERS),
        },
        text_config={
            'vocab_size': len(tokenizer),
            'hidden_size': TEXT_HIDDEN,
            'intermediate_size': TEXT_INTERMEDIATE,
            'num_hidden_layers': TEXT_LAYERS,
            'num_attention_heads': TEXT_HEADS,
            'num_key_value_heads': TEXT_KV_HEADS,
            'head_dim': TEXT_HIDDEN // TEXT_HEADS,
            'max_position_embeddings': TEXT_MAX_POSITIONS,
            'rope_parameters': {
                'rope_type': 'default',
                'rope_theta': ROPE_THETA,
                'mrope_section': list(MROPE_SECTION),
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
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
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
