"""
One image made ready for a Hugging Face model: the three methods' maps and the answers.

:class:`HfPreparedImage` holds the model's view of an image and, for families that share the
prefix (:class:`~.base.Prefix`), the [system + image] keys and values every pass over the image
starts from. The passes themselves are the model's (:class:`~.base.HfVisionLanguageModel`):

* rel-att: question and generic question in one batch of two, attention read at one layer
  (:mod:`.attention`), the forward stopped there, no autograd;
* grad-att: one pass with the layer's attention row as a gradient leaf, d(decision)/d(attention);
* pure-grad: question and generic question in one batch, d(decision)/d(pixel values).
"""

from collections.abc import Sequence

import numpy as np
import torch

from ..core.config import Method, VicropConfig
from ..core.pipeline import Canceled, StopCheck
from ..core.saliency import (
    SaliencyMap,
    gradient_weighted_attention,
    high_pass_mask,
    pixel_gradient_ratio,
    safe_ratio,
)
from .attention import AttentionProbe, probing
from .base import Forward, HfVisionLanguageModel, Prefix


class HfPreparedImage:
    """
    One image prepared for a model: the model's view of it and that view's source extent.

    With prefix sharing, an image that will be answered gets its prefix at once, at every layer
    (the answer reads them all). One prepared for saliency only (a tile) gets it on first need,
    as deep as that method reads: rel-att up to its layer, grad-att all, pure-grad none.
    """

    def __init__(self, model: HfVisionLanguageModel, image: np.ndarray, answers: bool = True):
        """Compute the model's view of ``image`` (HWC uint8 RGB) and, if answered, its prefix."""
        self.model = model
        self.view, self.extent = model.model_view(image)
        height, width = image.shape[:2]
        self.bounds = (0.0, 0.0, float(width), float(height))  # what the maps speak for
        self.prefix: Prefix | None = None  # the shared prefix, once computed
        if model.shares_prefix and answers:
            self.prefix = model.encode_prefix(self.view)
        # rel-att's generic-question grid per (layer, generic question, question template): it
        # depends only on the image, so later questions about this image skip that row.
        self._generic_grids: dict[tuple, torch.Tensor] = {}

    def saliency(self, question: str, config: VicropConfig) -> SaliencyMap:
        """Return the importance map of ``question`` by ``config.method`` (extent in image px)."""
        return self.saliencies([question], config)[0]

    def saliencies(self, questions: Sequence[str], config: VicropConfig) -> list[SaliencyMap]:
        """
        Return the map of each of ``questions`` by ``config.method``, from one batched pass.

        The rows of a batch never see each other, so each map is the one the question would
        get alone (up to float rounding of another batch shape).
        """
        method = {
            Method.REL_ATT: self._relative_attention,
            Method.GRAD_ATT: self._gradient_attention,
            Method.PURE_GRAD: self._pure_gradient,
        }.get(config.method)
        if method is None:
            raise ValueError(f'method {config.method.value!r} computes no saliency map')
        grids = method(list(questions), config)
        return [self._map(grid) for grid in grids]

    def _map(self, grid: torch.Tensor) -> SaliencyMap:
        """Return ``grid`` (rows, cols) as the image's SaliencyMap (extent and bounds)."""
        return SaliencyMap(grid.detach().float().cpu().numpy(), self.extent, self.bounds)

    def answer(
        self,
        question: str,
        crop: np.ndarray | None,
        config: VicropConfig,
        stop: StopCheck | None = None,
    ) -> str:
        """Answer ``question`` about the image, shown with ``crop`` after it when given."""
        (answer,) = self.answers([question], [crop], config, None if stop is None else [stop])
        if isinstance(answer, Canceled):
            raise answer
        return answer

    def answers(
        self,
        questions: Sequence[str],
        crops: Sequence[np.ndarray | None],
        config: VicropConfig,
        stops: Sequence[StopCheck] | None = None,
    ) -> list[str | Canceled]:
        """
        Answer each question about the image, shown with its crop after it when given.

        With prefix sharing, the questions are decoded as one batch continuing the image's
        prefix (:meth:`~.base.HfVisionLanguageModel.generate_batch_with_prefix`); else one by
        one. ``stops[i]`` is checked after every decoded token: question i then ends with a
        Canceled in its place, the others go on.
        """
        rows = [[self.view] + ([] if c is None else [self.model.model_view(c)[0]]) for c in crops]
        stops = list(stops) if stops is not None else [None] * len(rows)
        if self.model.shares_prefix:
            prefix = self._prefix_through(len(self.model.decoder_layers))
            return self.model.generate_batch_with_prefix(prefix, rows, questions, config, stops)
        out = []
        for views, question, stop in zip(rows, questions, stops, strict=True):
            try:
                out.append(self.model.generate_answer(views, question, config, stop))
            except Canceled as canceled:
                out.append(canceled)
        return out

    def _prefix_through(self, layers: int) -> Prefix:
        """Return the prefix with at least its first ``layers`` layers (computed if need be)."""
        if self.prefix is None or self.prefix.depth < layers:
            self.prefix = self.model.encode_prefix(self.view, layers)
        return self.prefix

    def _suffix_batch(self, questions: Sequence[str], config: VicropConfig, layers: int):
        """
        Return (inputs, key_ids, rows) to run ``questions`` after the shared prefix.

        ``inputs``: the suffixes right-padded as one batch, with the full attention mask and a
        cache per row holding the prefix's first ``layers`` layers (the pass must end by then);
        ``key_ids``: (batch, prefix + suffix) ids of all keys; ``rows``: (batch,) position of
        each suffix's last token.
        """
        prefix = self._prefix_through(layers)
        prompts = [self.model.prompt(self.model.format_question(q, config), 1) for q in questions]
        suffixes = [self.model.suffix_ids(prefix, prompt) for prompt in prompts]
        width, pad = max(map(len, suffixes)), self.model.processor.tokenizer.pad_token_id
        device, batch = self.model.device, len(suffixes)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=device)
        real = torch.tensor(
            [[1] * len(s) + [0] * (width - len(s)) for s in suffixes], device=device
        )
        prefix_ids = prefix.ids.to(device).expand(batch, -1)
        key_ids = torch.cat([prefix_ids, ids], dim=1)
        inputs = {
            'input_ids': ids,
            'attention_mask': torch.cat([torch.ones_like(prefix_ids), real], dim=1),
            'cache': prefix.cache(batch),
        }
        if prefix.image_grid_thw is not None:  # one prefix image per row (patch_grid reads it)
            inputs['image_grid_thw'] = prefix.image_grid_thw.expand(batch, -1)
        positions = self.model.positions(
            key_ids, inputs.get('image_grid_thw'), inputs['attention_mask']
        )
        if positions is not None:
            after = prefix.length
            inputs['position_ids'] = positions[..., after:]
        return inputs, key_ids, real.sum(dim=1) - 1

    def _encoded(self, questions: Sequence[str], config: VicropConfig):
        """Encode ``questions`` about the image as one right-padded batch of full prompts."""
        prompts = [self.model.prompt(self.model.format_question(q, config), 1) for q in questions]
        return self.model.encode([[self.view]] * len(prompts), prompts)

    def _question_batch(
        self, questions: Sequence[str], config: VicropConfig, layers: int | None = None
    ):
        """
        Return (inputs, key_ids, rows) to run ``questions`` about the image as one batch.

        After the shared prefix when there is one (:meth:`_suffix_batch`; ``layers``: how many
        layers the pass runs, default all), else as full prompts; ``key_ids``: (batch, keys) ids
        of all keys; ``rows``: (batch,) last real positions.
        """
        if self.model.shares_prefix:
            depth = layers or len(self.model.decoder_layers)
            return self._suffix_batch(questions, config, depth)
        inputs = self._encoded(questions, config)
        return inputs, inputs['input_ids'], self.model.last_rows(inputs)

    @torch.no_grad()
    def _relative_attention(
        self, questions: list[str], config: VicropConfig
    ) -> list[torch.Tensor]:
        """
        rel-att: attention(question) / attention(generic question) at one layer, per question.

        The questions and the generic question run as one batch; the generic row's grid is kept
        and later questions about this image run their own rows only.
        """
        layer_index = self.model.attention_layer(config)
        key = (layer_index, config.generic_question, config.question_template)
        generic = self._generic_grids.get(key)
        rows = questions if generic is not None else [*questions, config.generic_question]
        grids = self._attention_grids(rows, config, layer_index)
        if generic is None:
            generic = self._generic_grids[key] = grids[-1]
        return [safe_ratio(grid, generic, config.epsilon) for grid in grids[: len(questions)]]

    @torch.no_grad()
    def attention_by_layer(self, question: str, config: VicropConfig) -> list[SaliencyMap]:
        """
        Return the attention of ``question`` to the image at each decoder layer, first to last.

        Each map is the head mean of the last prompt position's attention to the image patches
        (extent in image pixels): what rel-att divides, before the division.
        """
        return [
            self._map(self._attention_grids((question,), config, index)[0])
            for index in range(len(self.model.decoder_layers))
        ]  # fmt: skip

    def _attention_grids(
        self, questions: Sequence[str], config: VicropConfig, layer_index: int
    ) -> list[torch.Tensor]:
        """Return each question's head-mean attention grid at ``layer_index`` (one batch)."""
        inputs, key_ids, rows = self._question_batch(questions, config, layer_index + 1)
        layer = self.model.decoder_layers[layer_index]
        probe = AttentionProbe(layer.self_attn, rows, stop=True)
        run = Forward()
        with probing(probe):
            self.model.forward(inputs, run, config)
        per_token = probe.weights.mean(dim=1)  # (questions, keys): head mean
        return self.model.token_maps(inputs, per_token, run.patch_attention(), key_ids)

    def _gradient_attention(
        self, questions: list[str], config: VicropConfig
    ) -> list[torch.Tensor]:
        """
        grad-att: attention x ReLU(d decision / d attention) at one layer, per question.

        One pass for all questions: each row's decision depends on its own row only, so the
        gradient of their sum gives every row its own.
        """
        inputs, key_ids, rows = self._question_batch(questions, config)
        layer = self.model.decoder_layers[self.model.attention_layer(config)]
        probe = AttentionProbe(layer.self_attn, rows, differentiable=True)
        run = Forward()
        with torch.enable_grad(), probing(probe):
            self.model.forward(inputs, run, config)
            decision = self.model.decisions(run.hidden, rows).sum()
            leaves = [probe.weights]
            if run.token_to_patch is not None:
                leaves.append(run.token_to_patch)
            grads = torch.autograd.grad(decision, leaves)
        weighted = zip(probe.weights, grads[0], strict=True)
        per_token = torch.stack([gradient_weighted_attention(w, g) for w, g in weighted])
        token_to_patch = None  # per_token: (batch, keys)
        if run.token_to_patch is not None:  # the same weighting on the token -> patch attention
            token_to_patch = run.patch_attention(run.token_to_patch * grads[1].clamp(min=0))
        return self.model.token_maps(inputs, per_token, token_to_patch, key_ids)

    def _pure_gradient(self, questions: list[str], config: VicropConfig) -> list[torch.Tensor]:
        """
        pure-grad: |d decision / d pixels| of each question over the generic question's, masked.

        The questions and the generic question are the rows of one batch, each with its own
        copy of the pixels, so the gradient of the summed decisions gives each row its own.
        """
        inputs = self._encoded([*questions, config.generic_question], config)
        pixels = inputs['pixel_values'].detach().requires_grad_(True)
        inputs['pixel_values'] = pixels
        rows = self.model.last_rows(inputs)
        run = Forward()
        with torch.enable_grad():
            self.model.forward(inputs, run, config)
            (gradient,) = torch.autograd.grad(self.model.decisions(run.hidden, rows).sum(), pixels)
        # Every row shows the same image, so row 0's pixels give the high-pass mask.
        images = self.model.pixel_images(inputs, pixels.detach()).float()  # (rows, C, H, W)
        gradients = self.model.pixel_images(inputs, gradient).float()
        mask = high_pass_mask(images[0])
        return [
            pixel_gradient_ratio(g, gradients[-1], mask, self.model.patch_size, config.epsilon)
            for g in gradients[:-1]
        ]
