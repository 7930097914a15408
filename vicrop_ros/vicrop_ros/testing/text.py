"""
The pieces every test-model recipe shares.

A byte-level BPE trained in code, Llama-style tokenizers and text configs, and the tiny sizes of
text and vision towers.

The tokenizer vocabulary is learnt from a small built-in corpus of robot questions, so prompts
tokenize into a few dozen tokens as with a real tokenizer, with no download.
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

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


def train_bpe(special_tokens: list[str]) -> Tokenizer:
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


def with_prefix(tokenizer: Tokenizer, prefix: str | None, suffix: str | None = None) -> Tokenizer:
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


def llama_tokenizer(extra: list[str], **kwargs) -> PreTrainedTokenizerFast:
    """Return a Llama/Vicuna-like tokenizer: <unk>, <s> (prepended), </s>, <pad>, ``extra``."""
    tokenizer = with_prefix(train_bpe(['<unk>', '<s>', '</s>', '<pad>', *extra]), '<s>')
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


def llama_text_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden: int = TEXT_HIDDEN,
    layers: int = TEXT_LAYERS,
    heads: int = TEXT_HEADS,
    kv_heads: int = TEXT_KV_HEADS,
    intermediate: int = TEXT_INTERMEDIATE,
    vocab_size: int | None = None,
) -> LlamaConfig:
    """Return a Llama text config (LLaVA's and InstructBLIP's Vicuna); vocab: the tokenizer's."""
    return LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=TEXT_MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# The special tokens of the Qwen vision-language chat format, in the order of their ids.
CHATML_SPECIALS = (
    '<|endoftext|>',
    '<|im_start|>',
    '<|im_end|>',
    '<|vision_start|>',
    '<|vision_end|>',
    '<|image_pad|>',
    '<|video_pad|>',
)


def chatml_template(default_system: str | None) -> str:
    """
    Return the Qwen-VL ChatML chat template.

    Each image item sits in place as ``<|vision_start|><|image_pad|><|vision_end|>``;
    ``default_system`` is the system turn when the messages have none (None: no system turn,
    as Qwen3-VL).
    """
    system = (
        (
            '{% if messages[0]["role"] != "system" %}'
            f'<|im_start|>system\n{default_system}<|im_end|>\n'
            '{% endif %}'
        )
        if default_system
        else ''
    )
    return system + (
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


def chatml_tokenizer(chat_template: str) -> PreTrainedTokenizerFast:
    """Return a Qwen-VL-like tokenizer: ChatML turns, vision tokens, ``chat_template``."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(list(CHATML_SPECIALS)),
        eos_token='<|im_end|>',
        pad_token='<|endoftext|>',
        extra_special_tokens={
            'image_token': '<|image_pad|>',
            'video_token': '<|video_pad|>',
            'vision_bos_token': '<|vision_start|>',
            'vision_eos_token': '<|vision_end|>',
        },
        chat_template=chat_template,
        padding_side='left',
        model_max_length=TEXT_MAX_POSITIONS,
    )
