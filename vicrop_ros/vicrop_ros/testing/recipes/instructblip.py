"""InstructBLIP-Vicuna (``Salesforce/instructblip-vicuna-7b``): ViT/14, a Q-Former, Vicuna."""

from dataclasses import dataclass, replace

from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    PreTrainedTokenizerFast,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from ..hub_layout import HubLayout
from ..text import (
    TINY_TEXT,
    TINY_VISION,
    Tower,
    llama_text_config,
    llama_tokenizer,
    train_bpe,
    with_prefix,
)

# The published input: 224 px ViT/14 (16 x 16 patches + CLS), a Q-Former with 32 learnt queries.
IMAGE_SIZE = 224
PATCH_SIZE = 14
QFORMER_CROSS_ATTENTION_FREQUENCY = 2
QFORMER_QUERY_TOKENS = 32
QFORMER_MAX_POSITIONS = 512

# The hub names a video processor (AutoProcessor would then need torchvision), its files are the
# image processor's, and its generation config says bos 0 and eos 1 while the tokenizer's </s> is
# id 2 (here too: <unk> 0, <s> 1, </s> 2).
# The maps of a 640x480 frame (rows, cols): (224 / 14)^2 patches, for attention and pixel maps.
MAP_GRIDS_640x480 = {'attention': (16, 16), 'pure_grad': (16, 16)}


def image_token_runs(config, inputs) -> list[int]:
    """Return the image-token count of the image of ``inputs`` by the config: the queries."""
    return [config.num_query_tokens]


HUB = HubLayout(
    'InstructBlipVideoProcessor',
    files_processor_class='InstructBlipProcessor',
    generation=(('bos_token_id', 0), ('eos_token_id', 1)),
)


@dataclass(frozen=True)
class InstructBlipSize:
    """Widths and depths of the vision tower, the Q-Former and the Vicuna decoder."""

    vision: Tower
    qformer: Tower
    text: Tower
    vocab_size: int | None = None  # None: the tokenizer's size


SIZES = {
    # Tests: well under 1 M parameters.
    'tiny': InstructBlipSize(TINY_VISION, replace(TINY_VISION, layers=4), TINY_TEXT),
    # CPU benchmarks: instructblip-vicuna-7b's depths and head sizes (EVA ViT-g 39 blocks of
    # head 88, the full Q-Former: 12 layers of 768, Vicuna-7B's 32 layers of head 128 and its
    # 32001-token vocabulary) at a quarter of the vision width and an eighth of the text width.
    '7b_shape': InstructBlipSize(
        Tower(352, 39, 4, 1536), Tower(768, 12, 12, 3072), Tower(512, 32, 4, 1376), 32001
    ),
}

# The image tokens of a 640x480 frame at each benchmark size: the Q-Former's 32 queries.
IMAGE_TOKENS_640x480 = {'7b_shape': QFORMER_QUERY_TOKENS}


def build(size: str = 'tiny'):
    """Return (model class, config, processor) of a random InstructBLIP of ``SIZES[size]``."""
    shape = SIZES[size]
    # '<image>' is in the vocabulary but not named as the tokenizer's ``image_token``:
    # InstructBlipProcessor adds it itself (a no-op here, so its id stays fixed) and breaks when
    # the tokenizer already names one (it then reads ``.content`` of a plain string).
    tokenizer = llama_tokenizer(['<image>'], extra_special_tokens=['<image>'])
    qformer = with_prefix(train_bpe(['[PAD]', '[UNK]', '[CLS]', '[SEP]']), '[CLS]', '[SEP]')
    qformer_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=qformer,
        pad_token='[PAD]',
        unk_token='[UNK]',
        cls_token='[CLS]',
        sep_token='[SEP]',
        model_max_length=QFORMER_MAX_POSITIONS,
    )
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(
            hidden_size=shape.vision.hidden,
            intermediate_size=shape.vision.intermediate,
            num_hidden_layers=shape.vision.layers,
            num_attention_heads=shape.vision.heads,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        ),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=len(qformer_tokenizer),
            hidden_size=shape.qformer.hidden,
            num_hidden_layers=shape.qformer.layers,
            num_attention_heads=shape.qformer.heads,
            intermediate_size=shape.qformer.intermediate,
            encoder_hidden_size=shape.vision.hidden,
            cross_attention_frequency=QFORMER_CROSS_ATTENTION_FREQUENCY,
            max_position_embeddings=QFORMER_MAX_POSITIONS,
            pad_token_id=qformer_tokenizer.pad_token_id,
        ),
        text_config=llama_text_config(tokenizer, shape.text, shape.vocab_size),
        num_query_tokens=QFORMER_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids('<image>'),
    )
    image_processor = BlipImageProcessorPil(
        size={'height': IMAGE_SIZE, 'width': IMAGE_SIZE},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    processor = InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=QFORMER_QUERY_TOKENS,
    )
    return InstructBlipForConditionalGeneration, config, processor
