"""
Tiny random multimodal LLMs of the real transformers classes, saved for offline loading.

``make_tiny_model(family, out_dir)`` builds a randomly initialised model of the same transformers
class as the real checkpoint (LLaVA-1.5, InstructBLIP-Vicuna, Qwen2.5-VL), with a byte-level BPE
tokenizer trained in code on a small built-in corpus and the family's real processor class, and
writes everything with ``save_pretrained``. The directory then loads through the same
``from_pretrained`` calls as a hub checkpoint, with no network: weights, configs (with the token
ids the real checkpoints carry), tokenizer, chat template and image processor.

Qwen2.5-VL: the stock processor cannot be built without torchvision (see
:class:`~vicrop_ros.models.qwen2_5_vl.Qwen2_5_VLImageTextProcessor`); the tiny directory keeps a
real checkpoint's layout (``processor_class`` ``Qwen2_5_VLProcessor``, a video processor entry),
so ``AutoProcessor`` loads it where torchvision exists and the image+text processor elsewhere.
"""

from dataclasses import dataclass
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
import torch
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.tokenization_utils_base import TOKENIZER_CONFIG_FILE
from transformers.utils import PROCESSOR_NAME
from transformers.utils import logging as transformers_logging

from .qwen2_5_vl import Qwen2_5_VLImageTextProcessor

FAMILIES = ('llava', 'instructblip', 'qwen2_5_vl')  # the tiny test models
# Also accepted by make_tiny_model: 'llava_mid', a ~170 M-parameter LLaVA for CPU benchmarks.

# Byte-level BPE: 256 byte symbols plus merges learnt from the corpus, up to this many entries.
VOCAB_SIZE = 640

# The text model every family shares in shape (Llama for LLaVA and InstructBLIP, Qwen2 for Qwen).
TEXT_LAYERS = 4
TEXT_HIDDEN = 64
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
TEXT_INTERMEDIATE = 128
TEXT_MAX_POSITIONS = 4096

# Vision encoders (CLIP for LLaVA, EVA-style ViT for InstructBLIP, Qwen2.5-VL ViT).
VISION_LAYERS = 2
VISION_HIDDEN = 32
VISION_HEADS = 2
VISION_INTERMEDIATE = 64

# The tiny models' vision inputs take the published defaults of each family, so that the grids
# match real checkpoints; the adapters read them back from the saved configs, never from here.
# LLaVA-1.5 default: 336 px input, 14 px patches, a 24 x 24 grid (CLS dropped by 'default').
LLAVA_IMAGE_SIZE = 336
LLAVA_PATCH_SIZE = 14

# InstructBLIP default: 224 px ViT/14 (16 x 16 patches + CLS), a Q-Former with 32 learnt queries.
BLIP_IMAGE_SIZE = 224
BLIP_PATCH_SIZE = 14
QFORMER_LAYERS = 4
QFORMER_CROSS_ATTENTION_FREQUENCY = 2
QFORMER_QUERY_TOKENS = 32
QFORMER_MAX_POSITIONS = 512

# Qwen2.5-VL: 14 px patches merged 2 x 2, windowed attention in all but the last vision block.
QWEN_PATCH_SIZE = 14
QWEN_MERGE_SIZE = 2
QWEN_TEMPORAL_PATCH_SIZE = 2
QWEN_WINDOW_SIZE = 112
QWEN_FULL_ATTENTION_BLOCKS = (1,)
QWEN_MROPE_SECTION = (2, 3, 3)  # temporal, height, width; sums to head_dim / 2
QWEN_ROPE_THETA = 1000000.0
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 256 * 28 * 28  # 200704: a 640 x 480 frame becomes 364 x 504 (26 x 36 patches)

_CORPUS = (
    'USER: What is the color of the cup on the table? ASSISTANT: The cup is red.',
    'Question: How many screws are in the tray? Short answer: three',
    'Question: What does the label on the box say? Short answer: fragile',
    'Is the gripper holding the bolt? Yes, the gripper is holding a small silver bolt.',
    'The robot arm moves the wrist camera closer to the shelf to read the small text.',
    'Which tool is on the left side of the workbench? A screwdriver with a yellow handle.',
    'What number is written on the valve? The number written on the valve is 42.',
    'Answer the question using a single word or phrase.',
    'You are a helpful assistant. Describe the image in one sentence.',
    'There is a green light, a blue cable, a black connector and a white sticker.',
    'The head camera sees the whole room; the wrist camera sees the object in the hand.',
    'Where is the key? The key is next to the laptop, under the paper.',
    'What time does the clock show? It shows ten past nine.',
    'Is the door open or closed? The door is closed.',
    'Read the text on the sign: STOP, EXIT, PUSH, PULL, DANGER, CAUTION.',
    '0 1 2 3 4 5 6 7 8 9 10 11 12 100 2025',
)

# LLaVA-1.5's conversation format: "USER: <image>\n{question} ASSISTANT:", one <image> line per
# image item, in order.
_LLAVA_CHAT_TEMPLATE = (
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

# Qwen2.5-VL's ChatML format, each image item as <|vision_start|><|image_pad|><|vision_end|> in
# place, with the default system prompt when the messages have none.
_QWEN_CHAT_TEMPLATE = (
    '{% if messages[0]["role"] != "system" %}'
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
    '{% endif %}'
    '{% for message in messages %}'
    '<|im_start|>{{ message["role"] }}\n'
    '{% if message["content"] is string %}{{ message["content"] }}'
    '{% else %}'
    '{% for item in message["content"] %}'
    '{% if item["type"] == "image" %}<|vision_start|><|image_pad|><|vision_end|>'
    '{% elif item["type"] == "video" %}<|vision_start|><|video_pad|><|vision_end|>'
    '{% elif item["type"] == "text" %}{{ item["text"] }}'
    '{% endif %}'
    '{% endfor %}'
    '{% endif %}'
    '<|im_end|>\n'
    '{% endfor %}'
    '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}'
)


def _train_bpe(special_tokens: list[str]) -> Tokenizer:
    """Train a byte-level BPE on the built-in corpus; the special tokens get ids 0, 1, ..."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return tokenizer


def _with_prefix(tokenizer: Tokenizer, prefix: str | None, suffix: str | None = None) -> Tokenizer:
    """Make ``tokenizer`` add ``prefix`` (a BOS or CLS) and ``suffix`` (a SEP) around each text."""
    single = ' '.join(t for t in (prefix, '$A', suffix) if t)
    pair = ' '.join(t for t in (prefix, '$A', suffix, prefix, '$B', suffix) if t)
    specials = [(t, tokenizer.token_to_id(t)) for t in (prefix, suffix) if t]
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials),
        ]
    )
    return tokenizer


def _llama_tokenizer(extra: list[str], **kwargs) -> PreTrainedTokenizerFast:
    """Return a Llama/Vicuna-like tokenizer: <unk>, <s> (prepended), </s>, <pad>, ``extra``."""
    tokenizer = _with_prefix(_train_bpe(['<unk>', '<s>', '</s>', '<pad>', *extra]), '<s>')
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token='<unk>',
        bos_token='<s>',
        eos_token='</s>',
        pad_token='<pad>',
        padding_side='left',
        model_max_length=TEXT_MAX_POSITIONS,
        **kwargs,
    )


@dataclass(frozen=True)
class LlavaSize:
    """Layer sizes of a LLaVA-1.5-shaped model (CLIP ViT/14 at 336 px + a Llama decoder)."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vocab_size: int | None  # None: the tokenizer's size


LLAVA_SIZES = {
    # Tests: about 0.3 M parameters.
    'tiny': LlavaSize(VISION_HIDDEN, VISION_LAYERS, VISION_HEADS, VISION_INTERMEDIATE,
                      TEXT_HIDDEN, TEXT_LAYERS, TEXT_HEADS, TEXT_KV_HEADS, TEXT_INTERMEDIATE,
                      None),
    # CPU benchmarks: about 170 M parameters, 576 image tokens like the real model.
    'mid': LlavaSize(256, 4, 4, 1024, 1024, 8, 16, 16, 2816, 32000),
    # GPU benchmarks: the shape of LLaVA-1.5-7B (CLIP ViT-L/14-336 + Vicuna-7B), about 7 B.
    '7b': LlavaSize(1024, 24, 16, 4096, 4096, 32, 32, 32, 11008, 32064),
}  # fmt: skip


def _llama_text_config(
    tokenizer: PreTrainedTokenizerFast, size: LlavaSize = LLAVA_SIZES['tiny']
) -> LlamaConfig:
    """Return a Llama text config (LLaVA's and InstructBLIP's Vicuna) of ``size``."""
    return LlamaConfig(
        vocab_size=size.vocab_size or len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=size.text_intermediate,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=TEXT_MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_llava(size: str = 'tiny'):
    """Return (model class, config, processor) of a random LLaVA-1.5 of ``LLAVA_SIZES[size]``."""
    shape = LLAVA_SIZES[size]
    tokenizer = _llama_tokenizer(
        ['<image>'],
        extra_special_tokens={'image_token': '<image>'},
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=LLAVA_IMAGE_SIZE,
        patch_size=LLAVA_PATCH_SIZE,
        projection_dim=shape.vision_hidden,
    )
    patches = (LLAVA_IMAGE_SIZE // LLAVA_PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_text_config(tokenizer, shape),
        image_token_index=tokenizer.convert_tokens_to_ids('<image>'),
        image_seq_length=patches,
        vision_feature_select_strategy='default',
        vision_feature_layer=-2,
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = CLIPImageProcessorPil(
        size={'shortest_edge': LLAVA_IMAGE_SIZE},
        crop_size={'height': LLAVA_IMAGE_SIZE, 'width': LLAVA_IMAGE_SIZE},
        do_center_crop=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH_SIZE,
        vision_feature_select_strategy='default',
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    return LlavaForConditionalGeneration, config, processor


def _build_instructblip():
    """Return (model class, config, processor) of the tiny InstructBLIP-Vicuna."""
    # '<image>' is in the vocabulary but not named as the tokenizer's ``image_token``:
    # InstructBlipProcessor adds it itself (a no-op here, so its id stays fixed) and breaks when
    # the tokenizer already names one (it then reads ``.content`` of a plain string).
    tokenizer = _llama_tokenizer(['<image>'], extra_special_tokens=['<image>'])
    qformer = _with_prefix(_train_bpe(['[PAD]', '[UNK]', '[CLS]', '[SEP]']), '[CLS]', '[SEP]')
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
            hidden_size=VISION_HIDDEN,
            intermediate_size=VISION_INTERMEDIATE,
            num_hidden_layers=VISION_LAYERS,
            num_attention_heads=VISION_HEADS,
            image_size=BLIP_IMAGE_SIZE,
            patch_size=BLIP_PATCH_SIZE,
        ),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=len(qformer_tokenizer),
            hidden_size=VISION_HIDDEN,
            num_hidden_layers=QFORMER_LAYERS,
            num_attention_heads=VISION_HEADS,
            intermediate_size=VISION_INTERMEDIATE,
            cross_attention_frequency=QFORMER_CROSS_ATTENTION_FREQUENCY,
            max_position_embeddings=QFORMER_MAX_POSITIONS,
            pad_token_id=qformer_tokenizer.pad_token_id,
        ),
        text_config=_llama_text_config(tokenizer),
        num_query_tokens=QFORMER_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids('<image>'),
    )
    image_processor = BlipImageProcessorPil(
        size={'height': BLIP_IMAGE_SIZE, 'width': BLIP_IMAGE_SIZE},
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


def _build_qwen2_5_vl():
    """Return (model class, config, processor) of the tiny Qwen2.5-VL."""
    specials = [
        '<|endoftext|>',
        '<|im_start|>',
        '<|im_end|>',
        '<|vision_start|>',
        '<|vision_end|>',
        '<|image_pad|>',
        '<|video_pad|>',
    ]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(specials),
        eos_token='<|im_end|>',
        pad_token='<|endoftext|>',
        extra_special_tokens={
            'image_token': '<|image_pad|>',
            'video_token': '<|video_pad|>',
            'vision_bos_token': '<|vision_start|>',
            'vision_eos_token': '<|vision_end|>',
        },
        chat_template=_QWEN_CHAT_TEMPLATE,
        padding_side='left',
        model_max_length=TEXT_MAX_POSITIONS,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config={
            'depth': VISION_LAYERS,
            'hidden_size': VISION_HIDDEN,
            'intermediate_size': VISION_INTERMEDIATE,
            'num_heads': VISION_HEADS,
            'patch_size': QWEN_PATCH_SIZE,
            'spatial_merge_size': QWEN_MERGE_SIZE,
            'temporal_patch_size': QWEN_TEMPORAL_PATCH_SIZE,
            'window_size': QWEN_WINDOW_SIZE,
            'fullatt_block_indexes': list(QWEN_FULL_ATTENTION_BLOCKS),
            'out_hidden_size': TEXT_HIDDEN,
        },
        text_config={
            'vocab_size': len(tokenizer),
            'hidden_size': TEXT_HIDDEN,
            'intermediate_size': TEXT_INTERMEDIATE,
            'num_hidden_layers': TEXT_LAYERS,
            'num_attention_heads': TEXT_HEADS,
            'num_key_value_heads': TEXT_KV_HEADS,
            'max_position_embeddings': TEXT_MAX_POSITIONS,
            'max_window_layers': TEXT_LAYERS,
            'rope_parameters': {
                'rope_type': 'default',
                'rope_theta': QWEN_ROPE_THETA,
                'mrope_section': list(QWEN_MROPE_SECTION),
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
        min_pixels=QWEN_MIN_PIXELS,
        max_pixels=QWEN_MAX_PIXELS,
        patch_size=QWEN_PATCH_SIZE,
        temporal_patch_size=QWEN_TEMPORAL_PATCH_SIZE,
        merge_size=QWEN_MERGE_SIZE,
    )
    processor = Qwen2_5_VLImageTextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=_QWEN_CHAT_TEMPLATE
    )
    return Qwen2_5_VLForConditionalGeneration, config, processor


def _save_as_stock_qwen_layout(out_dir: Path) -> None:
    """
    Make the saved Qwen2.5-VL processor files read as a real checkpoint's.

    ``processor_class`` becomes ``Qwen2_5_VLProcessor`` (in ``processor_config.json`` and
    ``tokenizer_config.json``) and ``processor_config.json`` gains the video processor entry a real
    checkpoint has, written by hand because that class cannot be built without torchvision.
    """
    stock = Qwen2_5_VLProcessor.__name__
    processor_path = out_dir / PROCESSOR_NAME
    processor_config = json.loads(processor_path.read_text())
    processor_config['processor_class'] = stock
    processor_config['video_processor'] = {
        'video_processor_type': 'Qwen2VLVideoProcessor',
        'size': {'shortest_edge': QWEN_MIN_PIXELS, 'longest_edge': QWEN_MAX_PIXELS},
        'patch_size': QWEN_PATCH_SIZE,
        'temporal_patch_size': QWEN_TEMPORAL_PATCH_SIZE,
        'merge_size': QWEN_MERGE_SIZE,
        'image_mean': list(OPENAI_CLIP_MEAN),
        'image_std': list(OPENAI_CLIP_STD),
    }
    processor_path.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + '\n')
    tokenizer_path = out_dir / TOKENIZER_CONFIG_FILE
    tokenizer_config = json.loads(tokenizer_path.read_text())
    tokenizer_config['processor_class'] = stock
    tokenizer_path.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + '\n')


_BUILDERS = {
    'llava': build_llava,
    'llava_mid': lambda: build_llava('mid'),
    'instructblip': _build_instructblip,
    'qwen2_5_vl': _build_qwen2_5_vl,
}


def make_tiny_model(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """
    Build, save (model + processor incl. tokenizer + chat template) and return ``out_dir``.

    ``family`` is one of ``FAMILIES``. Weights are random but a function of ``seed`` only (the
    caller's torch RNG state is left as it was). The directory loads offline with
    ``AutoModelForImageTextToText.from_pretrained`` and ``loader.load_processor``.
    """
    if family not in _BUILDERS:
        raise ValueError(f'unknown family {family!r}; expected one of {tuple(_BUILDERS)}')
    out_dir = Path(out_dir)
    model_class, config, processor = _BUILDERS[family]()
    tokenizer = processor.tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.get_text_config().bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    transformers_logging.disable_progress_bar()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if family == 'qwen2_5_vl':
        _save_as_stock_qwen_layout(out_dir)
    return out_dir
