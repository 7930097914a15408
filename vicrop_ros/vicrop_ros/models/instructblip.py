"""InstructBLIP (Vicuna): ViT -> Q-Former (32 queries, question-aware) -> Vicuna."""

from collections.abc import Sequence

import numpy as np
import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from ..core.config import VicropConfig
from ..core.pipeline import StopCheck
from .attention import PROBE_ATTENTION
from .base import Forward, HfVisionLanguageModel, choose_layer


class InstructBlipAdapter(HfVisionLanguageModel):
    """
    InstructBLIP: the language model sees 32 query tokens, not patches.

    A map is (LM attention from the last prompt position to the 32 query tokens) @ (Q-Former
    cross-attention from those queries to the vision patches, CLS dropped): (1x32) @ (32xP) over
    the (image_size / patch_size)^2 patch grid. The paper reads LM layer 15 of 32 and the
    Q-Former's cross-attention layer 2 of 6. The processor resizes the whole image to a square.
    """

    processor_class = InstructBlipProcessor  # the hub names InstructBlipVideoProcessor
    multi_image_prompts = False  # one image per prompt: further views enter as query tokens
    paper_layer = (15, 32)
    paper_qformer_layer = (2, 6)  # index among the Q-Former's cross-attention layers
    question_template = 'Question: {question} Short answer:'
    # The Q-Former's cross-attention weights are read: eager there (it is small).
    attention_implementation = {
        'text_config': PROBE_ATTENTION,
        'vision_config': 'sdpa',
        'qformer_config': 'eager',
    }

    @staticmethod
    def transformers_class() -> type:
        """InstructBlipForConditionalGeneration."""
        return InstructBlipForConditionalGeneration

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """Return the Vicuna (Llama) decoder layers."""
        return self.model.language_model.model.layers

    @property
    def output_head(self) -> torch.nn.Module:
        """Return the LM head."""
        return self.model.language_model.lm_head

    @property
    def query_tokens(self) -> int:
        """Q-Former query tokens per image (32)."""
        return int(self.model.config.num_query_tokens)

    def qformer_layer(self, config: VicropConfig) -> int:
        """Return the cross-attention layer to read: configured, or the paper's scaled to depth."""
        qformer = self.model.config.qformer_config
        count = len(range(0, qformer.num_hidden_layers, qformer.cross_attention_frequency))
        return choose_layer('qformer_layer', config.qformer_layer, self.paper_qformer_layer, count)

    @property
    def special_texts(self) -> tuple[str, ...]:
        """Return the special texts of the language model's and the Q-Former's tokenizers."""
        qformer = tuple(self.processor.qformer_tokenizer.added_tokens_encoder)
        return tuple(dict.fromkeys(super().special_texts + qformer))

    def image_tokens(self, width: int, height: int) -> int:
        """Return the query tokens of one image, whatever its size."""
        return self.query_tokens

    def answer_prompt_tokens(self, question: str, size: tuple[int, int], config) -> int:
        """Return the LM prompt's length: two images' query tokens, then the question."""
        text = self.prompt(self.format_question(question, config), 2)
        return 2 * self.query_tokens + len(self.processor.tokenizer(text)['input_ids'])

    def question_problem(self, question: str, size: tuple[int, int], config) -> str:
        """Check the language model's context, and the Q-Former's positions for the question."""
        text = self.prompt(self.format_question(question, config), 1)
        tokens = len(self.processor.qformer_tokenizer(text)['input_ids'])
        limit = int(self.model.config.qformer_config.max_position_embeddings)
        if tokens > limit:
            return (
                f'the question is too long for the model: the Q-Former reads {tokens} tokens '
                f'of it, over its {limit} positions'
            )
        return super().question_problem(question, size, config)

    def prompt(self, question: str, images: int) -> str:
        """Return the formatted question: the processor puts the query tokens before it."""
        return question

    def encode(self, images: Sequence[Sequence[np.ndarray]], prompts: Sequence[str]):
        """Run the processor (one image per row), right-padded, on the model's device."""
        if any(len(row) != 1 for row in images):
            raise ValueError('InstructBLIP encodes exactly one image per prompt')
        return super().encode(images, prompts)

    def forward(self, inputs, out: Forward, config: VicropConfig) -> None:
        """Vision model, Q-Former (cross-attention kept) and LM to the last hidden state."""
        pixels = inputs['pixel_values']
        if torch.is_grad_enabled() and not pixels.requires_grad:
            # A pixel leaf puts the Q-Former's cross-attention into the autograd graph.
            pixels = pixels.detach().requires_grad_(True)
        rows = pixels.shape[0]
        if not torch.is_grad_enabled() and all(torch.equal(pixels[0], p) for p in pixels[1:]):
            # One frame under several prompts (rel-att's question and generic rows): the vision
            # tower sees the same pixels, so it runs once. Gradient methods keep a leaf per row.
            image_embeds = self.model.vision_model(pixel_values=pixels[:1]).last_hidden_state
            image_embeds = image_embeds.expand(rows, -1, -1)
        else:
            image_embeds = self.model.vision_model(pixel_values=pixels).last_hidden_state
        queries = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:2], dtype=torch.long, device=self.device)
        qformer = self.model.qformer(
            input_ids=inputs['qformer_input_ids'],
            attention_mask=torch.cat([query_mask, inputs['qformer_attention_mask']], dim=1),
            query_embeds=queries,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], device=self.device),
            output_attentions=True,
        )
        # (batch, heads, queries, 1 + patches): column 0 is the vision CLS token.
        out.token_to_patch = qformer.cross_attentions[self.qformer_layer(config)]
        out.first_patch = 1
        features = self.model.language_projection(qformer.last_hidden_state[:, : queries.shape[1]])
        language_model = self.model.language_model
        embeds = language_model.get_input_embeddings()(inputs['input_ids'])
        slots = (inputs['input_ids'] == self.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(slots, features.to(embeds.dtype))
        out.hidden = language_model.model(
            inputs_embeds=embeds, attention_mask=inputs['attention_mask'], use_cache=False
        ).last_hidden_state

    @torch.no_grad()
    def generate_answer(
        self,
        views: Sequence[np.ndarray],
        question: str,
        config: VicropConfig,
        stop: StopCheck | None = None,
    ) -> str:
        """Answer with the query tokens of every view, in order, before the question."""
        prompt = self.prompt(self.format_question(question, config), 1)
        inputs = self.encode([[view] for view in views], [prompt] * len(views))
        extra = torch.full(
            (1, (len(views) - 1) * self.query_tokens), self.image_token_id, device=self.device
        )
        input_ids = torch.cat([extra, inputs['input_ids'][:1]], dim=1)
        attention_mask = torch.cat([torch.ones_like(extra), inputs['attention_mask'][:1]], dim=1)
        output = self.greedy(
            config,
            stop,
            pixel_values=inputs['pixel_values'],
            qformer_input_ids=inputs['qformer_input_ids'],
            qformer_attention_mask=inputs['qformer_attention_mask'],
            input_ids=input_ids,
            attention_mask=attention_mask,
        )
        prompt_length = input_ids.shape[1]
        new_tokens = output[0, prompt_length:]
        return self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
