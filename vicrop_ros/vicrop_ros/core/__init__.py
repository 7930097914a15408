"""
ViCrop on numpy and torch only: saliency maths, box search, crop geometry, the pipeline.

Nothing here imports ROS or transformers (``test/test_layering.py`` keeps it so).
"""

from .box import Box
from .box_search import DEFAULT_SCALES, BoxChoice, choose_box, select_box
from .config import GENERIC_QUESTION, Method, VicropConfig
from .geometry import crop, tile_boxes
from .pipeline import (
    BadQuestion,
    Canceled,
    PreparedImage,
    StopCheck,
    Vicrop,
    VicropResult,
    VisionLanguageModel,
)
from .saliency import SaliencyMap, project_to_image

__all__ = [
    'BadQuestion',
    'DEFAULT_SCALES',
    'GENERIC_QUESTION',
    'Box',
    'BoxChoice',
    'Canceled',
    'Method',
    'PreparedImage',
    'SaliencyMap',
    'StopCheck',
    'Vicrop',
    'VicropConfig',
    'VicropResult',
    'VisionLanguageModel',
    'choose_box',
    'crop',
    'project_to_image',
    'select_box',
    'tile_boxes',
]
