"""LLaVA-1.5 (``llava-hf/llava-1.5-7b-hf``): CLIP ViT/14 at 336 px, a projector, a Llama."""

from collections.abc import Sequence

from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from ..hub_layout import HubLayout
from ..text import (
    TINY_TEXT,
    TINY_VISION,
    Tower,
    VisionTextSize,
    llama_text_config,
    llama_tokenizer,
)

# The published input: 336 px, 14 px patches, a 24 x 24 grid (CLS dropped by 'default'). The
# adapter reads these back from the saved config, never from here.
IMAGE_SIZE = 336
PATCH_SIZE = 14

# The maps of a 640x480 frame (rows, cols): (336 / 14)^2 patches, for attention and pixel maps.
MAP_GRIDS_640x480 = {'attention': (24, 24), 'pure_grad': (24, 24)}

# The two-image prompt as the published template renders it ({question}: the text item).
TWO_IMAGE_PROMPT = 'USER: <image>\n<image>\n{question} ASSISTANT:'


def image_token_runs(config, inputs) -> list[int]:
    """Return the image-token count of each image of ``inputs`` by the config: one per patch."""
    side = config.vision_config.image_size // config.vision_config.patch_size
    return [side * side] * len(inputs['pixel_values'])


HUB = HubLayout(
    'LlavaProcessor', chat_template_files=('chat_template.json', 'chat_template.jinja')
)

# LLaVA-1.5's conversation format: "USER: <image>\n{question} ASSISTANT:", one <image> line per
# image item, in order.
CHAT_TEMPLATE = (
    '{% for message in messages %}'
    '{% if message["role"] != "system" %}{{ message["role"] | upper }}: {% endif %}'
    '{% if message["content"] is string %}{{ message["content"] }} '
    '{% else %}'
    '{% for item in message["content"] if item["type"] == "image" %}<image>\n{% endfor %}'
    '{% for item in message["content"] if item["type"] == "text" %}{{ item["text"] }} {% endfor %}'
    '{% endif %}'
    '{% endfor %}'
    '{% if add_generation_prompt %}ASSISTANT:{% endif %}'
)


SIZES = {
    # Tests: about 0.3 M parameters.
    'tiny': VisionTextSize(TINY_VISION, TINY_TEXT),
    # CPU benchmarks: about 170 M parameters, 576 image tokens like the real model.
    'mid': VisionTextSize(Tower(256, 4, 4, 1024), Tower(1024, 8, 16, 2816), 32000),
    # GPU benchmarks: the shape of LLaVA-1.5-7B (CLIP ViT-L/14-336 + Vicuna-7B), about 7 B.
    '7b': VisionTextSize(Tower(1024, 24, 16, 4096), Tower(4096, 32, 32, 11008), 32064),
}

# The image tokens of a 640x480 frame at each benchmark size, as llava-1.5-7b-hf's processor
# files make them: 24 x 24 patches, whatever the frame.
IMAGE_TOKENS_640x480 = {'mid': 576, '7b': 576}


def build(size: str = 'tiny'):
    """Return (model class, config, processor) of a random LLaVA-1.5 of ``SIZES[size]``."""
    return build_shape(SIZES[size])


def build_shape(
    shape: VisionTextSize,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    corpus: Sequence[str] | None = None,
):
    """
    Return (model class, config, processor) of a random LLaVA-1.5 of ``shape``.

    ``image_size``, ``patch_size``: the CLIP input side and patch side, pixels. ``corpus``: the
    texts the tokenizer's BPE learns from (default: the shared robot-question corpus).
    """
    tokenizer = llama_tokenizer(
        ['<image>'],
        **({} if corpus is None else {'corpus': corpus}),
        extra_special_tokens={'image_token': '<image>'},
        chat_template=CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        hidden_size=shape.vision.hidden,
        intermediate_size=shape.vision.intermediate,
        num_hidden_layers=shape.vision.layers,
        num_attention_heads=shape.vision.heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=shape.vision.hidden,
    )
    patches = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=llama_text_config(tokenizer, shape.text, shape.vocab_size),
        image_token_index=tokenizer.convert_tokens_to_ids('<image>'),
        image_seq_length=patches,
        vision_feature_select_strategy='default',
        vision_feature_layer=-2,
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = CLIPImageProcessorPil(
        size={'shortest_edge': image_size},
        crop_size={'height': image_size, 'width': image_size},
        do_center_crop=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy='default',
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return LlavaForConditionalGeneration, config, processor
