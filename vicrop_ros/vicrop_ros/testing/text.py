"""
The pieces every test-model recipe shares.

A byte-level BPE trained in code, Llama-style tokenizers and text configs, and the tiny sizes of
text and vision towers.

The tokenizer vocabulary is learnt from a small built-in corpus of robot questions, so prompts
tokenize into a few dozen tokens as with a real tokenizer, with no download.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

# Byte-level BPE: 256 byte symbols plus merges learnt from the corpus, up to this many entries.
VOCAB_SIZE = 640


@dataclass(frozen=True)
class Tower:
    """Widths and depth of one transformer stack: a vision tower, a Q-Former or a text decoder."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int | None = None  # key/value heads (grouped-query attention); None: ``heads``

    def __post_init__(self):
        """Give a stack without grouped-query attention one key/value head per query head."""
        if self.kv_heads is None:
            object.__setattr__(self, 'kv_heads', self.heads)

    @property
    def head_dim(self) -> int:
        """Return the width of one attention head."""
        return self.hidden // self.heads


def transformer_sizes(tower: Tower) -> dict:
    """Return ``tower``'s widths and depth under the names transformers' text configs use."""
    return {
        'hidden_size': tower.hidden,
        'intermediate_size': tower.intermediate,
        'num_hidden_layers': tower.layers,
        'num_attention_heads': tower.heads,
        'num_key_value_heads': tower.kv_heads,
    }


@dataclass(frozen=True)
class VisionTextSize:
    """Layer sizes of a model made of a vision tower and a text decoder (LLaVA, SmolVLM2)."""

    vision: Tower
    text: Tower
    vocab_size: int | None = None  # None: the tokenizer's size


TEXT_MAX_POSITIONS = 4096

# The tiny sizes every family's test model shares: its text decoder (Llama for LLaVA,
# InstructBLIP and SmolVLM2, Qwen2/Qwen3 for Qwen) and its vision tower (CLIP, EVA-style ViT,
# the Qwen ViTs, SigLIP).
TINY_TEXT = Tower(hidden=64, layers=4, heads=4, intermediate=128, kv_heads=2)
TINY_VISION = Tower(hidden=32, layers=2, heads=2, intermediate=64)


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


def train_bpe(special_tokens: list[str], corpus: Sequence[str] = _CORPUS) -> Tokenizer:
    """Train a byte-level BPE on ``corpus`` (default: the built-in one); specials get ids 0, 1.."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
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


def llama_tokenizer(
    extra: list[str], corpus: Sequence[str] = _CORPUS, **kwargs
) -> PreTrainedTokenizerFast:
    """Return a Llama/Vicuna-like tokenizer: <unk>, <s> (prepended), </s>, <pad>, ``extra``."""
    tokenizer = with_prefix(train_bpe(['<unk>', '<s>', '</s>', '<pad>', *extra], corpus), '<s>')
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
    tokenizer: PreTrainedTokenizerFast, text: Tower = TINY_TEXT, vocab_size: int | None = None
) -> LlamaConfig:
    """Return a Llama text config of ``text`` (LLaVA's and InstructBLIP's Vicuna, SmolLM2)."""
    return LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        **transformer_sizes(text),
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
