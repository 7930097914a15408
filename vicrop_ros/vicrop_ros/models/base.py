"""
The shared machinery of the Hugging Face model adapters: saliency passes and answers.

A family module (``llava.py``, ``qwen2_5_vl.py``, ``instructblip.py``) subclasses
:class:`HfVisionLanguageModel` and supplies the few things that differ: the prompt, the processor
call, the forward pass to the last hidden state, how image tokens map onto the image grid, and
where the model input lies on the source image. Everything the families share lives here (the
passes, prefix sharing, greedy answers, the context check) and in :mod:`.prepared_image` (the
three methods' maps and the answers about one image).

*decision* = log-probability of the greedy token at the last prompt position.

Prefix sharing (families with ``shares_prefix``): every prompt starts with the same
[system + first image] tokens, and attention is causal, so their keys and values are the same for
the question, the generic question and the final two-image prompt. :class:`Prefix` holds them,
computed once per image (at every layer for an image that will be answered; for a tile, only as
deep as its map reads); the attention passes then run only the short question suffixes against
it (rel-att: both questions as a batch of two, or the question alone once the image's generic
grid is kept; grad-att: gradients only through the suffix), and the final answer prefills only
what follows the prefix. Prefills whose hidden states nobody reads compute keys and values only
(:meth:`HfVisionLanguageModel.fill_cache`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from ..core.config import VicropConfig
from ..core.geometry import Extent, image_size, whole_image_extent
from ..core.pipeline import Canceled, StopCheck
from .attention import PROBE_ATTENTION, filling_cache


@dataclass
class Forward:
    """What a family's forward pass hands to the shared code, filled in as the pass goes."""

    hidden: torch.Tensor | None = None  # (batch, tokens, hidden); None if the probe stopped it
    # (batch, heads, image_tokens, first_patch + patches): attention from image tokens to image
    # patches, for models whose image tokens are not patches (InstructBLIP's Q-Former queries);
    # else None. Kept whole (not sliced) so that gradients with respect to it exist.
    token_to_patch: torch.Tensor | None = None
    first_patch: int = 0  # columns of token_to_patch before this one are not patches (CLS)

    def patch_attention(self, weights: torch.Tensor | None = None) -> torch.Tensor | None:
        """Return (batch, tokens, patches): head mean of ``weights`` (default token_to_patch)."""
        if self.token_to_patch is None:
            return None
        chosen = self.token_to_patch if weights is None else weights
        first = self.first_patch
        return chosen[..., first:].mean(dim=1)


# Put inside a special token's text typed by a user, so that it reads as text (U+2060 WORD JOINER,
# invisible and kept by the NFC/NFKC normalisers of the supported tokenizers).
TEXT_BREAK = '\u2060'


def plain_text(text: str, special_texts: Sequence[str]) -> str:
    """
    Return ``text`` with every occurrence of ``special_texts`` broken so it tokenizes as text.

    A question typed as ``What does <image> mean?`` must never become image tokens (the model
    would get more image slots than images) nor a turn marker: a word joiner after the first
    character keeps what a person reads and changes what the tokenizer sees.
    """
    for special in sorted(special_texts, key=len, reverse=True):
        if len(special) > 1 and special in text:
            text = text.replace(special, special[0] + TEXT_BREAK + special[1:])
    return text


# The config.json key by which a checkpoint names its own attention layer (0-based).
CHECKPOINT_LAYER_KEY = 'vicrop_attention_layer'


def choose_layer(name: str, configured: int | None, paper: tuple[int, int], depth: int) -> int:
    """
    Return ``configured``, or the paper's layer scaled to a model of ``depth`` layers.

    ``paper`` is (layer, depth) of the paper's checkpoint: on that depth the paper's layer
    itself. Raises ValueError (naming parameter ``name``) when the layer does not exist.
    """
    layer = configured
    if layer is None:
        paper_layer, paper_depth = paper
        layer = min(depth - 1, round(paper_layer * depth / paper_depth))
    if not 0 <= layer < depth:
        raise ValueError(f'{name} {layer} is out of range: the model has {depth}')
    return layer


@dataclass
class Prefix:
    """The [system + first image] tokens of every prompt of one image, with their KV cache."""

    ids: torch.Tensor  # (1, length) token ids, ending with the image's last token
    # (keys, values) of the first layers, (1, kv_heads, length, head_dim) each: all layers, or
    # as many as the passes that use the prefix read (a saliency-only tile's rel-att)
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    text_config: object  # the language model's config (cache layout)
    # The processor's image_grid_thw of the prefix image (1, 3), for families whose image token
    # grid depends on the image (Qwen); None for fixed grids.
    image_grid_thw: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Return the number of prefix tokens."""
        return int(self.ids.shape[1])

    @property
    def depth(self) -> int:
        """Return the number of decoder layers whose keys and values the prefix holds."""
        return len(self.layers)

    def cache(self, batch: int = 1) -> DynamicCache:
        """
        Return a new cache that starts with the prefix, for ``batch`` rows.

        The prefix tensors are shared (expanded, not copied): a dynamic cache appends with
        ``torch.cat`` and never writes into them, so the prefix serves any number of passes.
        """
        data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self.layers]
        return DynamicCache(ddp_cache_data=data, config=self.text_config)


class HfVisionLanguageModel:
    """
    A transformers multimodal LLM wrapped for ViCrop (implements ``VisionLanguageModel``).

    ``model`` is loaded with the ``vicrop_probe`` attention on its language model; parameters are
    frozen. A family (``models/<family>.py``, docs/adding-a-family.md) provides:

    * required: :attr:`processor_class`, :attr:`paper_layer` and :meth:`transformers_class`
      (checked when the subclass is defined);
    * where its checkpoints differ from the defaults (LLaVA-like: a chat template, a square input
      of ``vision_config.image_size``, one token per patch): :meth:`model_view`,
      :meth:`prompt`, :meth:`encode`, :meth:`forward`, :meth:`patch_grid`, :meth:`token_grid`,
      :meth:`pixel_images`, :meth:`image_tokens`, :attr:`input_size`, :attr:`decoder_layers`,
      :attr:`output_head`, :meth:`apply_pixel_budget`, :attr:`question_template`,
      :attr:`attention_implementation`;
    * for prefix sharing (:attr:`shares_prefix`): :meth:`images_after_first`.

    Everything else (the three methods, prefix sharing, answers, the context check) is shared.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ('processor_class', 'paper_layer')

    def __init_subclass__(cls, **kwargs):
        """Refuse a family that leaves out a required class attribute."""
        super().__init_subclass__(**kwargs)
        missing = [name for name in cls.REQUIRED if not hasattr(cls, name)]
        if cls.transformers_class is HfVisionLanguageModel.transformers_class:
            missing.append('transformers_class')
        if missing:
            raise TypeError(f'model family {cls.__name__} must define {", ".join(missing)}')

    # The paper's attention layer for the depth of the paper's checkpoint: (layer, depth).
    paper_layer: ClassVar[tuple[int, int]]
    # The crop base size in pixels for families with no fixed input side (they resize every
    # image to a budget): the paper's choice; None: the vision input side (config).
    paper_base_size: ClassVar[int | None] = None
    # Whether the attention passes and the answer share the [system + image] prefix (Prefix).
    shares_prefix: ClassVar[bool] = False
    # Whether one prompt holds several images (image items of a chat template).
    multi_image_prompts: ClassVar[bool] = True
    # The question format; '{question}' is replaced. The paper's short-answer instruction.
    question_template: ClassVar[str] = (
        '{question}\nAnswer the question using a single word or phrase.'
    )

    # The processor class the family is loaded with (see load_processor).
    processor_class: ClassVar[type]
    # Attention implementation per sub-config: the probe on the language model, SDPA elsewhere.
    attention_implementation: ClassVar[dict[str, str]] = {
        'text_config': PROBE_ATTENTION,
        'vision_config': 'sdpa',
    }

    @staticmethod
    def transformers_class() -> type:
        """Return the transformers model class of the family."""
        raise NotImplementedError

    @classmethod
    def load_processor(cls, name_or_path: str, trust_remote_code: bool = False, **options):
        """
        Load the family's processor (image processor, tokenizer, chat template).

        Always :attr:`processor_class`, never ``AutoProcessor``: a hub ``processor_config.json``
        may name a video processor (InstructBLIP's does) that needs torchvision.
        ``options`` go to ``from_pretrained`` (e.g. ``local_files_only``).
        """
        return cls.processor_class.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **options
        )

    @staticmethod
    def apply_pixel_budget(processor, min_pixels: int, max_pixels: int) -> None:
        """
        Set the processor's pixels per image (0: the checkpoint's); a fixed-input family has none.

        Raises ValueError when a budget is asked of a family whose input size is fixed.
        """
        if min_pixels or max_pixels:
            raise ValueError(
                'min_pixels/max_pixels apply to families that resize to a pixel budget (Qwen); '
                'this model has a fixed input size'
            )

    def __init__(self, name: str, model: torch.nn.Module, processor):
        """Wrap a loaded ``model`` and its ``processor``; ``name``: the id or path loaded."""
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.device = next(model.parameters()).device
        self._fixed_image_tokens: int | None = None  # see image_tokens

    # ----- hooks for the families (defaults: the chat-template families, LLaVA and Qwen) --------

    @property
    def input_size(self) -> int:
        """Return the box search's base size: :attr:`paper_base_size`, or the vision input side."""
        if self.paper_base_size is not None:
            return self.paper_base_size
        return int(self.model.config.vision_config.image_size)

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """Return the language model's decoder layers (each with ``self_attn``)."""
        return self.model.model.language_model.layers

    @property
    def output_head(self) -> torch.nn.Module:
        """Return the language model head (hidden state -> vocabulary logits)."""
        return self.model.lm_head

    @property
    def image_token_id(self) -> int:
        """Return the token id that stands for image features in ``input_ids`` (config)."""
        return int(self.model.config.image_token_id)

    @property
    def patch_size(self) -> int:
        """Return the vision patch side in model-input pixels (config)."""
        return int(self.model.config.vision_config.patch_size)

    def model_view(self, image: np.ndarray) -> tuple[np.ndarray, Extent]:
        """Return the image as given to the processor and its extent on ``image``."""
        return image, whole_image_extent(image_size(image))

    def image_tokens(self, width: int, height: int) -> int:
        """
        Return how many tokens the language model sees for an image of ``width`` x ``height`` px.

        Default: a fixed-size input, counted once from the processor's own expansion of one
        image placeholder (a blank image of the input size).
        """
        if self._fixed_image_tokens is None:
            blank = np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)
            ids = self.encode([[blank]], [self.prompt('', 1)])['input_ids']
            self._fixed_image_tokens = int((ids == self.image_token_id).sum())
        return self._fixed_image_tokens

    def answer_prompt_tokens(self, question: str, size: tuple[int, int], config) -> int:
        """
        Return the length in tokens of the two-image answer prompt of ``question``.

        ``size``: (width, height) of the frame in pixels. The crop is counted as a frame-sized
        image: a crop is never larger, so this is an upper bound for every family.
        """
        text = self.prompt(self.format_question(question, config), 2)
        ids = self.processor.tokenizer(text)['input_ids']
        placeholders = ids.count(self.image_token_id)
        return len(ids) + placeholders * (self.image_tokens(*size) - 1)

    def question_problem(self, question: str, size: tuple[int, int], config) -> str:
        """Return why ``question`` about a ``size`` (w, h) frame cannot be answered, or ''."""
        tokens = self.answer_prompt_tokens(question, size, config)
        context = self.context_length
        if tokens + config.max_new_tokens > context:
            return (
                f'the question is too long for the model: its prompt would be {tokens} tokens '
                f'and the answer up to {config.max_new_tokens} more, over the context of '
                f'{context} tokens'
            )
        return ''

    def prompt(self, question: str, images: int) -> str:
        """Return the full prompt: the chat template with one user turn of images, then text."""
        content = [{'type': 'image'}] * images + [{'type': 'text', 'text': question}]
        messages = [{'role': 'user', 'content': content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def encode(self, images: Sequence[Sequence[np.ndarray]], prompts: Sequence[str]):
        """Return the processor's batch (on the model's device) for one image list per prompt."""
        flat = [image for row in images for image in row]
        inputs = self.processor(
            images=flat,
            text=list(prompts),
            return_tensors='pt',
            padding=True,
            padding_side='right',
        )
        return inputs.to(self.device, dtype=self.model.dtype)

    def forward(self, inputs, out: Forward, config: VicropConfig) -> None:
        """Run the model to the last hidden state, filling ``out`` (a probe may stop it)."""
        out.hidden = self.model.model(**inputs, use_cache=False).last_hidden_state

    def patch_grid(self, inputs, row: int) -> tuple[int, int]:
        """Return (rows, cols) of the image-patch grid of row ``row``: (input / patch) squared."""
        side = self.input_size // self.patch_size
        return (side, side)

    def token_grid(
        self, values: torch.Tensor, inputs, row: int, ids: torch.Tensor
    ) -> torch.Tensor:
        """
        Lay out one row's image-token values on its image: (image tokens,) -> (rows, cols).

        ``values`` are in token order; ``ids`` (keys,) are the row's token ids (with a shared
        prefix, prefix and suffix). Default: the tokens are one row-major grid of
        :meth:`patch_grid`; a family whose image tokens come in several views (tiles) arranges
        them here.
        """
        return values.reshape(self.patch_grid(inputs, row))

    def pixel_images(self, inputs, pixel_tensor: torch.Tensor) -> torch.Tensor:
        """Return ``pixel_tensor`` (shaped like ``pixel_values``) as (batch, C, H, W) images."""
        return pixel_tensor

    # ----- shared ---------------------------------------------------------------------------

    @property
    def stop_token_ids(self) -> list[int]:
        """
        Return the ids that end an answer: the tokenizer's EOS, and any the checkpoint names.

        The tokenizer decides: a hub ``generation_config.json`` may name another id (InstructBLIP
        Vicuna's says 1, its ``</s>`` is 2), and an answer must still stop at ``</s>``.
        """
        named = self.model.generation_config.eos_token_id
        named = [] if named is None else [named] if isinstance(named, int) else list(named)
        eos = self.processor.tokenizer.eos_token_id
        return list(dict.fromkeys(([] if eos is None else [eos]) + named))

    @property
    def context_length(self) -> int:
        """Return the language model's context in tokens (config ``max_position_embeddings``)."""
        return int(self.model.config.get_text_config().max_position_embeddings)

    def attention_layer(self, config: VicropConfig) -> int:
        """
        Return the decoder layer to read: the configured one, else the checkpoint's own.

        A checkpoint names its own layer with CHECKPOINT_LAYER_KEY in its config.json (chosen
        on its attention ratios by ``vicrop eval --attention``, as the demo model's is); without
        one, the paper's layer scaled to the model's depth.
        """
        configured = config.attention_layer
        if configured is None:
            configured = getattr(self.model.config, CHECKPOINT_LAYER_KEY, None)
        return choose_layer(
            'attention_layer', configured, self.paper_layer, len(self.decoder_layers)
        )

    def format_question(self, question: str, config: VicropConfig) -> str:
        """Put ``question``, as plain text, into the configured template or the family's."""
        text = plain_text(question, self.special_texts)
        return (config.question_template or self.question_template).format(question=text)

    @property
    def special_texts(self) -> tuple[str, ...]:
        """Return the texts the family's tokenizers read as special tokens (``<image>``, ...)."""
        return tuple(self.processor.tokenizer.added_tokens_encoder)

    def greedy(self, config: VicropConfig, stop: StopCheck | None, **inputs) -> torch.Tensor:
        """
        Return ``model.generate(**inputs)`` by greedy decoding, up to ``config.max_new_tokens``.

        ``stop`` is checked after every token: decoding ends there and Canceled is raised.
        """
        output, (stopped,) = self.greedy_rows(config, [stop], **inputs)
        if stopped:
            raise Canceled('canceled while decoding the answer')
        return output

    def greedy_rows(
        self, config: VicropConfig, stops: Sequence[StopCheck | None], **inputs
    ) -> tuple[torch.Tensor, list[bool]]:
        """
        Return (``model.generate(**inputs)``, which rows were stopped): greedy, one batch.

        ``stops[i]`` (None: never) is checked after every token: row i ends there (padded
        after) while the others go on; decoding ends when every row has.
        """
        criteria = None
        if any(stop is not None for stop in stops):
            criteria = StoppingCriteriaList([_StopWhen(stops)])
        output = self.model.generate(
            **inputs,
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            stopping_criteria=criteria,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.processor.tokenizer.pad_token_id,
        )
        return output, [stop is not None and stop() for stop in stops]

    @torch.no_grad()
    def generate_answer(
        self,
        views: Sequence[np.ndarray],
        question: str,
        config: VicropConfig,
        stop: StopCheck | None = None,
    ) -> str:
        """Answer ``question`` about ``views`` (model views, in order) by greedy decoding."""
        prompt = self.prompt(self.format_question(question, config), len(views))
        inputs = self.encode([views], [prompt])
        output = self.greedy(config, stop, **inputs)
        prompt_length = inputs['input_ids'].shape[1]
        new_tokens = output[0, prompt_length:]
        return self.processor.decode(new_tokens, skip_special_tokens=True).strip()

    @torch.no_grad()
    def fill_cache(self, cache: DynamicCache, inputs: dict, layers: int | None = None) -> None:
        """
        Append the keys and values of ``inputs`` (model inputs after what ``cache`` holds) to it.

        Only the keys and values of the first ``layers`` layers (default: all) are computed: the
        pass ends at the attention of the last of them (:func:`.attention.filling_cache`), as
        nothing reads these tokens' hidden states.
        """
        last = self.decoder_layers[(layers or len(self.decoder_layers)) - 1]
        with filling_cache(last.self_attn):
            self.model.model(**inputs, cache=cache, use_cache=True)

    def encode_prefix(self, view: np.ndarray, layers: int | None = None) -> Prefix:
        """Compute [system + ``view``]'s keys and values at the first ``layers`` (default all)."""
        inputs = self.encode([[view]], [self.prompt('?', 1)])
        ids = inputs['input_ids'][:1]
        length = int((ids[0] == self.image_token_id).nonzero()[-1]) + 1
        grid = inputs.get('image_grid_thw')
        prefix = {
            'input_ids': ids[:, :length],
            'attention_mask': inputs['attention_mask'][:1, :length],
            **self.image_inputs(inputs),
        }
        positions = self.positions(prefix['input_ids'], grid, prefix['attention_mask'])
        if positions is not None:
            prefix['position_ids'] = positions
        cache = DynamicCache(config=self.model.config.get_text_config())
        self.fill_cache(cache, prefix, layers)
        kept = [(layer.keys, layer.values) for layer in cache.layers if layer.is_initialized]
        return Prefix(ids[:, :length], kept, self.model.config.get_text_config(), grid)

    def suffix_ids(self, prefix: Prefix, prompt: str) -> list[int]:
        """
        Return the token ids of ``prompt`` after its first image block.

        The prompt's text is tokenized with its one image placeholder; what precedes the
        placeholder must be exactly what precedes the image in ``prefix``.
        """
        ids = self.processor.tokenizer(prompt)['input_ids']
        at = ids.index(self.image_token_id)
        if ids[:at] != prefix.ids[0, :at].tolist():
            raise RuntimeError('the prompt does not start with the shared prefix')
        after = at + 1
        return ids[after:]

    def images_after_first(self, inputs) -> dict:
        """Return the processor outputs for every image but the first (prefix) one."""
        raise NotImplementedError

    def image_inputs(self, inputs) -> dict:
        """Return the processor outputs that carry the images (default ``pixel_values``)."""
        return {'pixel_values': inputs['pixel_values']}

    def positions(
        self, ids: torch.Tensor, image_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """
        Return the rotary positions of whole prompts ``ids`` (batch, length), or None.

        None (the default): a token's position is its index, which a continuation after a
        cached prefix gets by itself. Families with multi-axis positions (Qwen's 3-D mrope,
        where an image block advances the text position by its grid side, not its length)
        return them, and the shared paths pass the slice after the prefix explicitly.
        """
        return None

    @torch.no_grad()
    def generate_batch_with_prefix(
        self,
        prefix: Prefix,
        rows: Sequence[Sequence[np.ndarray]],
        questions: Sequence[str],
        config: VicropConfig,
        stops: Sequence[StopCheck | None],
    ) -> list[str | Canceled]:
        """
        Answer each question about its row of views like :meth:`generate_answer`, as one batch.

        Every row's prompt starts with ``prefix`` (its first view is the prefix image), whose
        keys and values are shared. What follows differs in length (the crop's image tokens,
        the question), so each row is padded between the prefix and its own tokens: the mask
        hides the pads and the positions skip them, every row's last token sits in the last
        column, and the rows decode together. The tokens after the prefix but the last only add
        keys and values to the cache (:meth:`fill_cache`). ``stops[i]`` ends row i after any
        token (a Canceled in its place).
        """
        encoded = [self.encode([views], [self.prompt(self.format_question(q, config), len(views))])
                   for views, q in zip(rows, questions, strict=True)]  # fmt: skip
        shared = prefix.length  # tokens every row takes from the prefix's cache
        tails = []
        for inputs in encoded:
            ids = inputs['input_ids'][0]
            if not torch.equal(ids[:shared], prefix.ids[0].to(ids.device)):
                raise RuntimeError('the answer prompt does not start with the shared prefix')
            tails.append(ids[shared:])
        batch, width = len(tails), max(len(tail) for tail in tails)
        ids = torch.full((batch, shared + width), self.processor.tokenizer.pad_token_id,
                         dtype=prefix.ids.dtype, device=self.device)  # fmt: skip
        mask = torch.zeros_like(ids)
        ids[:, :shared] = prefix.ids
        mask[:, :shared] = 1
        for row, tail in enumerate(tails):
            start = ids.shape[1] - len(tail)  # each row's own tokens end at the last column
            ids[row, start:] = tail
            mask[row, start:] = 1
        grids = [inputs['image_grid_thw'] for inputs in encoded if 'image_grid_thw' in inputs]
        positions = self.positions(ids, torch.cat(grids) if grids else None, mask)
        if positions is None:  # a token's position counts the real tokens before it
            positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        cache = prefix.cache(batch)
        if width > 1:
            images = self.stack_image_inputs([self.images_after_first(e) for e in encoded])
            middle = {'input_ids': ids[:, shared:-1], 'attention_mask': mask[:, :-1],
                      'position_ids': positions[..., shared:-1]}  # fmt: skip
            self.fill_cache(cache, middle | images)
        output, stopped = self.greedy_rows(
            config, stops, input_ids=ids, attention_mask=mask, cache=cache
        )
        prompt_length = ids.shape[1]
        answers = self.processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
        return [Canceled('canceled while decoding the answer') if halted else answer.strip()
                for answer, halted in zip(answers, stopped, strict=True)]  # fmt: skip

    def stack_image_inputs(self, rows: Sequence[dict]) -> dict:
        """
        Return the image inputs of several rows as one batch's (rows without images left out).

        Default: each tensor concatenated along its first axis (LLaVA's images, Qwen's patch
        rows and grids); families whose image tensors have another layout override it.
        """
        rows = [row for row in rows if row]
        if not rows:
            return {}
        return {key: torch.cat([row[key] for row in rows]) for key in rows[0]}

    def prepare(self, image: np.ndarray, answers: bool = True):
        """Prepare ``image`` (HWC uint8 RGB) for saliency passes and, if ``answers``, answers."""
        from .prepared_image import HfPreparedImage

        return HfPreparedImage(self, image, answers)

    def last_rows(self, inputs) -> torch.Tensor:
        """Return (batch,) the position of each row's last real token (right padding)."""
        return inputs['attention_mask'].sum(dim=1) - 1

    def decisions(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Return (batch,) log-probability of the greedy next token at each row's ``rows``."""
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), rows]
        logits = self.output_head(last).float()
        return logits.log_softmax(dim=-1).max(dim=-1).values

    def token_maps(
        self,
        inputs,
        per_token: torch.Tensor,
        token_to_patch: torch.Tensor | None,
        key_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """
        Turn per-token values into per-row patch grids.

        ``per_token``: (batch, keys) values over the whole sequence; only image-token
        positions are used. ``token_to_patch``: see :class:`Forward` (head-reduced already:
        (batch, image_tokens, patches)). ``key_ids``: (batch, keys) token ids of the keys
        (default ``inputs['input_ids']``; with a cached prefix, prefix + suffix). Returns one
        (rows, cols) tensor per batch row.
        """
        key_ids = inputs['input_ids'] if key_ids is None else key_ids
        grids = []
        for row in range(per_token.shape[0]):
            positions = key_ids[row] == self.image_token_id
            values = per_token[row][positions]  # (image_tokens,)
            if token_to_patch is not None:
                values = values @ token_to_patch[row]  # (patches,)
            grids.append(self.token_grid(values, inputs, row, key_ids[row]))
        return grids


class _StopWhen(StoppingCriteria):
    """Ends each row's generation once its stop check returns True."""

    def __init__(self, stops: Sequence[StopCheck | None]):
        """Check ``stops[i]`` (None: never) for row i after each generated token."""
        self.stops = list(stops)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        """Return one flag per row: True once that row is stopped."""
        flags = [stop is not None and stop() for stop in self.stops]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
