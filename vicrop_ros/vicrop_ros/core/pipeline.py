"""
The ViCrop pipeline: (image, question, method) -> answer, crop box, saliency map, timings.

It drives a :class:`VisionLanguageModel` (implemented in :mod:`vicrop_ros.models`) through the
stages: importance map (per tile for large images), box search on the full-image grid, crop, and
the final answer from the original image plus the crop. The model opens one
:class:`PreparedImage` per image so that work on that image (encoding, and the shared
[system + image] prefix of every prompt) is done once for the map and the answer; with
``reuse_frames`` it also serves later questions about the same pixels.
"""

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
import dataclasses
from dataclasses import dataclass
import hashlib
import time
from typing import Protocol

import numpy as np

from .box import Box
from .box_search import BoxChoice, choose_box
from .config import Method, VicropConfig
from .geometry import crop, image_size, tile_boxes
from .saliency import SaliencyMap, project_to_image

StopCheck = Callable[[], bool]  # returns True once the question is canceled


class Canceled(Exception):  # noqa: N818 (a state, not an error)
    """The question was canceled: its stop check turned true at a stage or a decoding step."""


class BadQuestion(ValueError):  # noqa: N818 (a refusal, like ValueError)
    """The question cannot be answered as asked (empty, or too long for the model)."""


class PreparedImage(Protocol):
    """One image made ready for a model; passes over the same image share what it holds."""

    def saliencies(self, questions: Sequence[str], config: VicropConfig) -> list[SaliencyMap]:
        """Return the map of each question by ``config.method``, extents in image pixels."""

    def answers(
        self,
        questions: Sequence[str],
        crops: Sequence[np.ndarray | None],
        config: VicropConfig,
        stops: Sequence[StopCheck | None] | None = None,
    ) -> list[str | Canceled]:
        """
        Answer each question about the image, shown with its crop (HWC) after it when given.

        ``stops[i]`` is checked after every decoded token: once it returns True, question i
        gets a Canceled in place of its answer (the others go on).
        """

    def answer(
        self,
        question: str,
        crop: np.ndarray | None,
        config: VicropConfig,
        stop: StopCheck | None = None,
    ) -> str:
        """Answer one question (:meth:`answers`); raises Canceled once ``stop`` returns True."""

    def attention_by_layer(self, question: str, config: VicropConfig) -> list[SaliencyMap]:
        """Return the question's attention to the image at each decoder layer (for evaluation)."""


class VisionLanguageModel(Protocol):
    """A multimodal LLM adapter as the pipeline needs it."""

    name: str  # model id or path
    input_size: int  # side of the model's (square-equivalent) input in pixels: the base box size

    def prepare(self, image: np.ndarray, answers: bool = True) -> PreparedImage:
        """Prepare ``image`` (HWC uint8 RGB) for saliency passes and, if ``answers``, answers."""

    def question_problem(self, question: str, size: tuple[int, int], config: VicropConfig) -> str:
        """Return why ``question`` about a ``size`` (w, h) image cannot be answered, or ''."""


@dataclass(frozen=True)
class VicropResult:
    """The outcome of one question."""

    answer: str
    method: Method
    box: Box | None  # the crop, in source-image pixels; None for method NONE
    score: float  # sharpness of the box (0.0: no box, or the whole image was chosen)
    saliency: np.ndarray | None  # (rows, cols) map on a grid tiling the whole image; None: NONE
    maps: tuple[SaliencyMap, ...]  # the model's own maps (one per tile), extents in image pixels
    # 'prepare' (the image's shared prefix: work the answer needs anyway), 'saliency', 'crop',
    # 'answer' (what the final answer adds), 'total'
    timings_ms: Mapping[str, float]


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is HWC uint8 RGB with at least one pixel."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError('the image must be a numpy uint8 array (HWC RGB)')
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'the image must be HxWx3 with H, W >= 1, got shape {image.shape}')


def pixels_digest(image: np.ndarray) -> bytes:
    """Return a 16-byte digest of ``image``'s shape and pixels (equal only for equal images)."""
    pixels = np.ascontiguousarray(image)
    digest = hashlib.blake2b(repr((pixels.shape, pixels.dtype.str)).encode(), digest_size=16)
    digest.update(pixels.data)
    return digest.digest()


class Vicrop:
    """
    Answers questions about images with ViCrop on one model.

    ``on_stage``, when given, is called with 'saliency', 'cropping' and 'answering' as each stage
    starts (progress feedback). ``stop``, when given, is checked at each stage, between tiles and
    after each decoded token: once it returns True the call raises :class:`Canceled`.
    """

    def __init__(
        self, model: VisionLanguageModel, config: VicropConfig | None = None, reuse_frames: int = 0
    ):
        """
        Use ``model`` with ``config`` as the default settings of every question.

        ``reuse_frames``: how many of the most recently prepared images to keep. A question
        about the same pixels as a kept one (a robot asking several questions about one scene)
        reuses its preparation: the shared prefix and the generic question's maps. 0: none.
        """
        self.model = model
        self.config = config or VicropConfig()
        self.reuse_frames = reuse_frames
        # pixels digest -> {tile (None: the whole image) -> PreparedImage}, least recent first
        self._frames: OrderedDict[bytes, dict[Box | None, PreparedImage]] = OrderedDict()

    @property
    def kept_frames(self) -> int:
        """Return how many frames' preparations are kept."""
        return len(self._frames)

    def forget_frames(self) -> None:
        """Drop every kept preparation (e.g. to free GPU memory)."""
        self._frames.clear()

    def base_size(self, config: VicropConfig | None = None) -> int:
        """Return the box search's window side at scale 1, source pixels, under ``config``."""
        return (config or self.config).base_size or self.model.input_size

    def __call__(
        self,
        image: np.ndarray,
        question: str,
        on_stage: Callable[[str], None] | None = None,
        stop: StopCheck | None = None,
        **overrides,
    ) -> VicropResult:
        """
        Answer ``question`` about ``image`` (HWC uint8 RGB).

        ``overrides`` replace fields of the default config for this question (e.g. method='none').
        Raises BadQuestion for a question the model cannot take (empty, or a prompt longer than
        its context), ValueError for a bad image or override, Canceled once ``stop`` returns True.
        """
        stops = None if stop is None else [stop]
        (outcome,) = self.answer_batch(image, [question], stops, on_stage, **overrides)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def answer_batch(
        self,
        image: np.ndarray,
        questions: Sequence[str],
        stops: Sequence[StopCheck | None] | None = None,
        on_stage: Callable[[str], None] | None = None,
        **overrides,
    ) -> list[VicropResult | BadQuestion | Canceled]:
        """
        Answer several questions about one image together; return one outcome per question.

        The image is prepared once; each stage runs the questions as one batch (their maps in
        one pass per tile, their answers decoded together where the model allows), and every
        answer is the one the question gets alone. An outcome is the question's result, or the
        BadQuestion that refused it (empty, too long) or the Canceled that ended it
        (``stops[i]``, checked at each stage, between tiles and after each decoded token).
        ``on_stage`` is called once per stage reached. Raises ValueError for a bad image or
        override (every question fails alike).
        """
        config = dataclasses.replace(self.config, **overrides) if overrides else self.config
        check_image(image)
        size = image_size(image)
        stops = list(stops) if stops is not None else [None] * len(questions)
        outcomes: list = [self._refusal(q, size, config) for q in questions]
        live = [i for i, outcome in enumerate(outcomes) if outcome is None]

        def reach(stage: str) -> bool:
            """Cancel the rows stopped before ``stage``; return whether any goes on."""
            for i in live:
                if stops[i] is not None and stops[i]():
                    outcomes[i] = Canceled(f'canceled before the {stage} stage')
            live[:] = [i for i in live if outcomes[i] is None]
            if live and on_stage is not None:
                on_stage(stage)
            return bool(live)

        start = time.perf_counter()
        timings = {'prepare': 0.0, 'saliency': 0.0, 'crop': 0.0}
        if not live:
            return outcomes
        frame = self._frame(image)
        prepared = self._prepared(image, frame, None)
        timings['prepare'] = _ms_since(start)
        maps: dict[int, tuple[SaliencyMap, ...]] = {}
        grids: dict[int, np.ndarray] = {}
        choices: dict[int, BoxChoice] = {}
        if config.method is not Method.NONE and reach('saliency'):
            saliency_start = time.perf_counter()
            try:
                row_maps = self._maps(image, frame, [questions[i] for i in live], config,
                                      [stops[i] for i in live])  # fmt: skip
            except Canceled as canceled:
                for i in live:
                    outcomes[i] = canceled
                return outcomes
            for i, row in zip(live, row_maps, strict=True):
                maps[i], grids[i] = row, project_to_image(row, size)
            timings['saliency'] = _ms_since(saliency_start)
            if reach('cropping'):
                crop_start = time.perf_counter()
                base = self.base_size(config)
                choices = {i: choose_box(grids[i], size, base, config.scales) for i in live}
                timings['crop'] = _ms_since(crop_start)
        if not reach('answering'):
            return outcomes
        answer_start = time.perf_counter()
        crops = [crop(image, choices[i].box) if i in choices else None for i in live]
        answers = prepared.answers([questions[i] for i in live], crops, config,
                                   [stops[i] for i in live])  # fmt: skip
        timings['answer'] = _ms_since(answer_start)
        timings['total'] = _ms_since(start)
        for i, answer in zip(live, answers, strict=True):
            choice = choices.get(i)
            outcomes[i] = answer if isinstance(answer, Canceled) else VicropResult(
                answer, config.method, None if choice is None else choice.box,
                0.0 if choice is None else choice.score, grids.get(i), maps.get(i, ()),
                dict(timings),
            )  # fmt: skip
        return outcomes

    def _refusal(
        self, question: str, size: tuple[int, int], config: VicropConfig
    ) -> BadQuestion | None:
        """Return why ``question`` cannot be taken (BadQuestion), or None."""
        if not isinstance(question, str) or not question.strip():
            return BadQuestion('the question is empty')
        problem = self.model.question_problem(question, size, config)
        return BadQuestion(problem) if problem else None

    def _frame(self, image: np.ndarray) -> dict[Box | None, PreparedImage]:
        """Return the kept preparations of ``image`` (new and empty if none are kept)."""
        if self.reuse_frames <= 0:
            return {}
        key = pixels_digest(image)
        frame = self._frames.pop(key, {})
        self._frames[key] = frame  # now the most recent
        while len(self._frames) > self.reuse_frames:
            self._frames.popitem(last=False)
        return frame

    def _prepared(
        self, image: np.ndarray, frame: dict[Box | None, PreparedImage], tile: Box | None
    ) -> PreparedImage:
        """Return ``image`` (or its ``tile``) prepared by the model, reusing ``frame``'s."""
        prepared = frame.get(tile)
        if prepared is None:
            if tile is None:
                prepared = self.model.prepare(image)
            else:  # a tile only gets a map
                prepared = self.model.prepare(crop(image, tile), answers=False)
            frame[tile] = prepared
        return prepared

    def _maps(
        self,
        image: np.ndarray,
        frame: dict[Box | None, PreparedImage],
        questions: Sequence[str],
        config: VicropConfig,
        stops: Sequence[StopCheck | None],
    ) -> list[tuple[SaliencyMap, ...]]:
        """
        Return each question's maps of the image: one, or one per tile for a large image.

        Raises Canceled between tiles once every question is stopped.
        """
        tiles = tile_boxes(image_size(image), config.tile_threshold)
        if len(tiles) == 1:
            whole = self._prepared(image, frame, None).saliencies(questions, config)
            return [(m,) for m in whole]
        per_question: list[list[SaliencyMap]] = [[] for _ in questions]
        for tile in tiles:
            if all(stop is not None and stop() for stop in stops):
                raise Canceled('canceled between saliency tiles')
            prepared = self._prepared(image, frame, tile)
            for maps, m in zip(per_question, prepared.saliencies(questions, config), strict=True):
                maps.append(m.shifted(tile.x0, tile.y0))
        return [tuple(maps) for maps in per_question]


def _ms_since(start: float) -> float:
    """Milliseconds since ``start`` (a time.perf_counter() value)."""
    return (time.perf_counter() - start) * 1000.0
