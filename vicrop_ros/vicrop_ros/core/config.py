"""The one configuration of the ViCrop engine, and the method names."""

from dataclasses import dataclass
import enum

from .box_search import DEFAULT_SCALES

GENERIC_QUESTION = 'Write a general description of the image.'


class Method(enum.StrEnum):
    """How the importance map is computed (or ``NONE``: answer from the full image, no crop)."""

    REL_ATT = 'rel_att'  # attention(question) / attention(generic question); no gradients
    GRAD_ATT = 'grad_att'  # attention x ReLU(d decision / d attention)
    PURE_GRAD = 'pure_grad'  # |d decision / d pixels|, question over generic, high-pass masked
    NONE = 'none'  # no map and no crop: one plain answer

    @classmethod
    def parse(cls, name: str) -> 'Method':
        """Return the method called ``name``; a ValueError lists the valid names otherwise."""
        try:
            return cls(name)
        except ValueError:
            valid = ', '.join(m.value for m in cls)
            raise ValueError(f'unknown method {name!r}; valid methods: {valid}') from None


@dataclass(frozen=True)
class VicropConfig:
    """Settings of one ViCrop answer. ``None`` means: the model adapter's own default."""

    # How the importance map is computed.
    method: Method = Method.REL_ATT
    # Decoder layer (0-based) whose attention makes the map; None = the paper's layer for the
    # model (LLaVA-1.5-7B 14 of 32, Qwen2.5-VL-3B 22 of 36, InstructBLIP 15 of 32), scaled to the
    # depth of models with another number of layers.
    attention_layer: int | None = None
    # InstructBLIP only: Q-Former cross-attention layer (index among the cross-attention layers);
    # None = the paper's 2 of 6, scaled likewise.
    qformer_layer: int | None = None
    # Crop window side at scale 1, in source pixels; None = the model's input resolution.
    base_size: int | None = None
    # Window scales tried by the box search (increasing); the sharpest wins.
    scales: tuple[float, ...] = DEFAULT_SCALES
    # Ratio denominators get this fraction of the mean added (keeps maps finite; see safe_ratio).
    epsilon: float = 1e-3
    # Images with a side longer than this (pixels) get a map per tile, stitched on the full image.
    tile_threshold: int = 1024
    # The generic question whose map normalises rel-att and pure-grad.
    generic_question: str = GENERIC_QUESTION
    # How a question is put to the model, '{question}' standing for it (the generic question is
    # put the same way); None = the family's default: the paper's short-answer formats.
    question_template: str | None = None
    # Upper bound on the answer length (greedy decoding).
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        """Validate the fields (and accept method names as strings)."""
        if not isinstance(self.method, Method):
            object.__setattr__(self, 'method', Method.parse(self.method))
        if self.attention_layer is not None and self.attention_layer < 0:
            raise ValueError(f'attention_layer must be >= 0, got {self.attention_layer}')
        if self.qformer_layer is not None and self.qformer_layer < 0:
            raise ValueError(f'qformer_layer must be >= 0, got {self.qformer_layer}')
        if self.base_size is not None and self.base_size < 1:
            raise ValueError(f'base_size must be >= 1, got {self.base_size}')
        if not self.scales or list(self.scales) != sorted(self.scales) or self.scales[0] <= 0:
            raise ValueError(f'scales must be positive and increasing, got {self.scales}')
        if self.epsilon <= 0:
            raise ValueError(f'epsilon must be > 0, got {self.epsilon}')
        if self.tile_threshold < 1:
            raise ValueError(f'tile_threshold must be >= 1, got {self.tile_threshold}')
        if self.question_template is not None and '{question}' not in self.question_template:
            raise ValueError("question_template must contain '{question}'")
        if self.max_new_tokens < 1:
            raise ValueError(f'max_new_tokens must be >= 1, got {self.max_new_tokens}')
