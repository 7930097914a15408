"""SmolVLM2 (``HuggingFaceTB/SmolVLM2-500M-Video-Instruct``): SigLIP tiles of 512 px, SmolLM2."""

from transformers import PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMForConditionalGeneration
from transformers.image_utils import PILImageResampling
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

from ...models.smolvlm import SmolVLMImageTextProcessor
from ..hub_layout import HubLayout
from ..text import (
    TEXT_MAX_POSITIONS,
    TINY_TEXT,
    TINY_VISION,
    Tower,
    VisionTextSize,
    llama_text_config,
    train_bpe,
)

# Hub facts, from a public transcription of the checkpoint's config.json, preprocessor_config.json,
# processor_config.json and tokenizer_config.json (the hub itself cannot be reached here):
# processor_class SmolVLMProcessor in both processor files, image_seq_len 64; images resized to
# a longest edge of 2048 px (LANCZOS, mean and std 0.5), split into 512 px tiles of 16 px
# patches, a 4 x 4 pixel shuffle: 8 x 8 = 64 tokens per tile. Vision: SigLIP-B/16 at 512 px (12
# layers of 768, 12 heads, MLP 3072). Text: a Llama of 32 layers (hidden 960, 15 heads, 5 KV
# heads, MLP 2560), vocabulary 49280, context 8192, untied embeddings. Not seen in that
# transcription, so written as transformers' SmolVLM processor expects them: the chat template's
# file name and text (the template below is transformers' default for SmolVLM without its video
# branch) and generation_config.json (left as save_pretrained writes it).
LONGEST_EDGE = 2048
TILE = 512
PATCH_SIZE = 16
SHUFFLE = 4
IMAGE_SEQ_LEN = (TILE // PATCH_SIZE // SHUFFLE) ** 2
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)
TILE_GRID = 6  # the tokenizer's tile tokens: <row_1_col_1> ... <row_6_col_6>


SIZES = {
    # Tests: about 0.3 M parameters.
    'tiny': VisionTextSize(TINY_VISION, TINY_TEXT),
    # CPU benchmarks: SmolVLM2-500M's depths, head size and token layout (12 SigLIP layers of
    # head 64 over 512 px tiles, 64 tokens a tile; 32 Llama layers of head 64 with 3 query heads
    # per KV head; its vocabulary; its 2048 px longest edge, so 640x480 gives 12 tiles and a
    # global view) at a quarter of the vision width and a fifth of the text width.
    '500m_shape': VisionTextSize(
        Tower(192, 12, 3, 768), Tower(192, 32, 3, 512, kv_heads=1), 49280
    ),
}

# The image tokens of a 640x480 frame at each benchmark size, as SmolVLM2-500M's processor files
# make them: 3 x 4 tiles of 512 px and the global view, 64 tokens each.
IMAGE_TOKENS_640x480 = {'500m_shape': 13 * IMAGE_SEQ_LEN}

# The tokenizer's special tokens, in the order of their ids (SmolLM2's three, then the added
# image tokens as published: 49152 <global-img>, the tile tokens, 49189 <fake_token_around_image>,
# 49190 <image>, 49279 <end_of_utterance>, which is its eos).
SPECIALS = (
    '<|endoftext|>',
    '<|im_start|>',
    '<|im_end|>',
    '<global-img>',
    *(f'<row_{r}_col_{c}>' for r in range(1, TILE_GRID + 1) for c in range(1, TILE_GRID + 1)),
    '<fake_token_around_image>',
    '<image>',
    '<end_of_utterance>',
)

# SmolVLM2's conversation format: 'User:<image>{question}<end_of_utterance>\nAssistant:', image
# items in place; one <|im_start|> opens the conversation.
CHAT_TEMPLATE = (
    '<|im_start|>'
    '{% for message in messages %}'
    '{{ message["role"] | capitalize }}'
    '{% if message["content"] is string %}: {{ message["content"] }}'
    '{% else %}'
    '{% if message["content"][0]["type"] == "image" %}:{% else %}: {% endif %}'
    '{% for item in message["content"] %}'
    '{% if item["type"] == "text" %}{{ item["text"] }}'
    '{% elif item["type"] == "image" %}<image>'
    '{% endif %}'
    '{% endfor %}'
    '{% endif %}'
    '<end_of_utterance>\n'
    '{% endfor %}'
    '{% if add_generation_prompt %}Assistant:{% endif %}'
)

# The maps of a 640x480 frame (rows, cols): resized to 2048 x 1536 px, 3 x 4 tiles of 8 x 8
# tokens (the attention maps read tokens); pure-grad pools the tiles' pixel gradients per patch.
MAP_GRIDS_640x480 = {'attention': (24, 32), 'pure_grad': (96, 128)}

# The two-image prompt as the published template renders it ({question}: the text item).
TWO_IMAGE_PROMPT = '<|im_start|>User:<image><image>{question}<end_of_utterance>\nAssistant:'


def image_token_runs(config, inputs) -> list[int]:
    """Return the image-token runs of ``inputs`` by the config: one per view (tile or global)."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size // config.scale_factor
    return [side * side] * int(inputs['pixel_values'].shape[1])


HUB = HubLayout('SmolVLMProcessor', chat_template_files=('chat_template.json',))


def smolvlm_tokenizer() -> PreTrainedTokenizerFast:
    """Return a SmolLM2-like tokenizer with SmolVLM2's image tokens and chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(list(SPECIALS)),
        unk_token='<|endoftext|>',
        bos_token='<|im_start|>',
        eos_token='<end_of_utterance>',
        pad_token='<|im_end|>',
        extra_special_tokens={
            'image_token': '<image>',
            'fake_image_token': '<fake_token_around_image>',
            'global_image_token': '<global-img>',
            'end_of_utterance_token': '<end_of_utterance>',
        },
        chat_template=CHAT_TEMPLATE,
        padding_side='left',
        model_max_length=TEXT_MAX_POSITIONS,
    )


def build(size: str = 'tiny'):
    """Return (model class, config, processor) of a random SmolVLM2 of ``SIZES[size]``."""
    shape = SIZES[size]
    tokenizer = smolvlm_tokenizer()
    config = SmolVLMConfig(
        vision_config={
            'hidden_size': shape.vision.hidden,
            'intermediate_size': shape.vision.intermediate,
            'num_hidden_layers': shape.vision.layers,
            'num_attention_heads': shape.vision.heads,
            'image_size': TILE,
            'patch_size': PATCH_SIZE,
        },
        text_config=llama_text_config(tokenizer, shape.text, shape.vocab_size),
        scale_factor=SHUFFLE,
        image_token_id=tokenizer.convert_tokens_to_ids('<image>'),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    image_processor = SmolVLMImageProcessorPil(
        size={'longest_edge': LONGEST_EDGE},
        max_image_size={'longest_edge': TILE},
        do_image_splitting=True,
        resample=PILImageResampling.LANCZOS,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    processor = SmolVLMImageTextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    return SmolVLMForConditionalGeneration, config, processor
