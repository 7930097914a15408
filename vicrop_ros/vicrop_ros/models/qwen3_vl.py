"""Qwen3-VL: Qwen2.5-VL's token layout with 16 px patches, interleaved mrope and deepstack."""

from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

from .qwen2_5_vl import Qwen2_5_VLAdapter


class Qwen3VLImageTextProcessor(Qwen3VLProcessor):
    """
    Qwen3-VL's processor for images and text only: no video sub-processor.

    As for Qwen2.5-VL, the stock processor always loads a video processor, which needs
    torchvision; images and text behave exactly as in ``Qwen3VLProcessor``.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        """Build from an image processor and a tokenizer (the video processor slot stays None)."""
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    """
    Qwen3-VL: a (H, W) resized image gives (H/32) x (W/32) tokens, row-major, as Qwen2.5-VL's.

    Everything the map, the box and the shared prefix need is Qwen2.5-VL's: the same chat
    layout, a patch grid per image (``image_grid_thw``), 3-D positions from the model's own
    ``get_rope_index``. Deepstack (vision features added to the first text layers' image
    positions) happens inside the model's forward, for the prefix image and the crop alike.

    The paper has no Qwen3-VL layer. The default is Qwen2.5-VL-3B's layer at the same relative
    depth (22 of 36: about 0.61 of the depth, layer 17 of Qwen3-VL-2B's 28), a transfer and not a
    measurement, to be chosen again on real weights with the paper's criterion (the attention
    ratio inside the ground-truth box). The box base size stays 224 px, 7 x 7 tokens of 32 px.
    """

    processor_class = Qwen3VLImageTextProcessor
    paper_layer = (22, 36)  # see the class docstring: Qwen2.5-VL-3B's relative depth

    @staticmethod
    def transformers_class() -> type:
        """Qwen3VLForConditionalGeneration."""
        return Qwen3VLForConditionalGeneration
