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
from collections.abc import Callable, Mapping
import dataclasses
from dataclasses import dataclass
import hashlib
import time
from typing import Protocol

import numpy as np

from .box import Box
from .box_search import choose_box
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

    def saliency(self, question: str, config: VicropConfig) -> SaliencyMap:
        """Return the map of ``question`` by ``config.method``, extent in image pixels."""

    def answer(
        self,
        question: str,
        crop: np.ndarray | None,
        config: VicropConfig,
        stop: StopCheck | None = None,
    ) -> str:
        """
        Answer ``question`` about the image, shown with ``crop`` (HWC) after it when given.

        ``stop`` is checked after every decoded token; raises Canceled once it returns True.
        """

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
        its context), ValueError for a bad image or override.
        """
        config = dataclasses.replace(self.config, **overrides) if overrides else self.config
        check_image(image)
        if not isinstance(question, str) or not question.strip():
            raise BadQuestion('the question is empty')
        problem = self.model.question_problem(question, image_size(image), config)
        if problem:
            raise BadQuestion(problem)
        stop = stop or _never

        def notify(stage: str) -> None:
            if stop():
                raise Canceled(f'canceled before the {stage} stage')
            if on_stage is not None:
                on_stage(stage)

        start = time.perf_counter()
        timings = {'prepare': 0.0, 'saliency': 0.0, 'crop': 0.0}
        frame = self._frame(image)
        prepared = self._prepared(image, frame, None)
        timings['prepare'] = _ms_since(start)
        box, score, grid, maps, crop_pixels = None, 0.0, None, (), None
        if config.method is not Method.NONE:
            notify('saliency')
            saliency_start = time.perf_counter()
            maps = self._maps(image, frame, question, config, stop)
            grid = project_to_image(maps, image_size(image))
            timings['saliency'] = _ms_since(saliency_start)
            notify('cropping')
            crop_start = time.perf_counter()
            choice = choose_box(grid, image_size(image), self.base_size(config), config.scales)
            box, score = choice.box, choice.score
            crop_pixels = crop(image, box)
            timings['crop'] = _ms_since(crop_start)
        notify('answering')
        answer_start = time.perf_counter()
        answer = prepared.answer(question, crop_pixels, config, stop)
        timings['answer'] = _ms_since(answer_start)
        timings['total'] = _ms_since(start)
        return VicropResult(answer, config.method, box, score, grid, maps, timings)

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
        question: str,
        config: VicropConfig,
        stop: StopCheck,
    ) -> tuple[SaliencyMap, ...]:
        """Return the model's map of the image, or one per tile for a large image."""
        tiles = tile_boxes(image_size(image), config.tile_threshold)
        if len(tiles) == 1:
            return (self._prepared(image, frame, None).saliency(question, config),)
        maps = []
        for tile in tiles:
            if stop():
                raise Canceled('canceled between saliency tiles')
            prepared = self._prepared(image, frame, tile)
            maps.append(prepared.saliency(question, config).shifted(tile.x0, tile.y0))
        return tuple(maps)


def _never() -> bool:
    """Return False: the stop check of a question nobody cancels."""
    return False


def _ms_since(start: float) -> float:
    """Milliseconds since ``start`` (a time.perf_counter() value)."""
    return (time.perf_counter() - start) * 1000.0
