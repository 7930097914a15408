"""``load_model``: the single entry from a model id or path to a ViCrop-ready adapter."""

from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import HF_HUB_CACHE
import torch
from transformers import AutoConfig
from transformers.utils import CONFIG_NAME
from transformers.utils import logging as transformers_logging

from .base import HfVisionLanguageModel
from .registry import FAMILY_NAMES, family_named

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def resolve_device(device: str) -> torch.device:
    """Return the torch device for 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f'unknown device {device!r}: {error}') from None
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {device!r} requested but CUDA is not available here')
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Return the torch dtype for 'auto' (bfloat16 on CUDA, float32 on CPU) or a dtype name."""
    if dtype == 'auto':
        return torch.bfloat16 if device.type == 'cuda' else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f'unknown dtype {dtype!r}; valid: auto, {", ".join(DTYPES)}')
    return DTYPES[dtype]


# The demo model this package ships (trained on synthetic scenes: docs/demo-model.md), by name.
DEMO_MODEL_NAME = 'vicrop-demo'
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / 'weights' / 'demo_llava'


def locate(name_or_path: str, allow_download: bool = False) -> tuple[str, bool]:
    """
    Return (what to load, whether to stay off the network) for a model id or directory.

    DEMO_MODEL_NAME is the shipped demo model's directory. A directory loads as it is. A hub id
    loads from the local Hugging Face cache only, unless ``allow_download``; one that is not
    cached fails at once (ValueError) with how to fetch it, instead of retrying a network the
    robot may not have.
    """
    if name_or_path == DEMO_MODEL_NAME:
        return str(DEMO_MODEL_DIR), True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path), True
    if name_or_path.startswith(('/', '.', '~')):
        raise ValueError(f'model path {name_or_path!r} is not a directory')
    if allow_download:
        return name_or_path, False
    try:
        cached = try_to_load_from_cache(name_or_path, CONFIG_NAME)
    except ValueError as error:  # not a valid repo id either
        reason = f'{name_or_path!r} is neither a directory nor a model id: {error}'
        raise ValueError(reason) from None
    if not isinstance(cached, str):
        raise ValueError(
            f'model {name_or_path!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}); '
            f'fetch it once with `hf download {name_or_path}`, or set allow_download to true'
        )
    return name_or_path, True


def family_of(
    name_or_path: str, trust_remote_code: bool = False, local_files_only: bool = True
) -> type[HfVisionLanguageModel]:
    """
    Return the adapter class for the model at ``name_or_path`` (id or directory; see locate).

    Raises ValueError for an unreadable config or an unsupported model type.
    """
    try:
        config = AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
    except (OSError, ValueError) as error:
        raise ValueError(f'cannot load a model config from {name_or_path!r}: {error}') from None
    family = family_named(config.model_type)
    if family is None:
        raise ValueError(
            f'unsupported model type {config.model_type!r} ({name_or_path}); '
            f'supported: {", ".join(FAMILY_NAMES)}'
        )
    return family.adapter


def load_processor(name_or_path: str, trust_remote_code: bool = False):
    """Load the processor of a supported model the way :func:`load_model` does."""
    source, offline = locate(name_or_path)
    family = family_of(source, trust_remote_code, offline)
    return family.load_processor(source, trust_remote_code, local_files_only=offline)


def load_model(
    name_or_path: str,
    device: str = 'auto',
    dtype: str = 'auto',
    trust_remote_code: bool = False,
    allow_download: bool = False,
    pixel_budget: tuple[int, int] = (0, 0),
) -> HfVisionLanguageModel:
    """
    Load a supported multimodal LLM with its processor, ready for ViCrop.

    ``name_or_path``: a directory written by ``save_pretrained``, or a Hugging Face model id,
    read from the local cache (downloaded only with ``allow_download``). Supported
    ``model_type``s: :data:`~.registry.FAMILY_NAMES`. ``trust_remote_code``: allow Python code
    shipped with the checkpoint to run (off: the supported families are built into
    transformers). ``pixel_budget``: (min_pixels, max_pixels) of each image for families that
    resize to a pixel budget (Qwen); 0 keeps the checkpoint's value. Raises ValueError for a
    missing path, an uncached id, an unsupported model or an unusable device/dtype/budget.
    """
    source, offline = locate(name_or_path, allow_download)
    adapter = family_of(source, trust_remote_code, offline)
    torch_device = resolve_device(device)
    transformers_logging.disable_progress_bar()  # no terminal progress bars in robot logs
    processor = adapter.load_processor(source, trust_remote_code, local_files_only=offline)
    adapter.apply_pixel_budget(processor, *pixel_budget)
    model = (
        adapter.transformers_class()
        .from_pretrained(
            source,
            dtype=resolve_dtype(dtype, torch_device),
            attn_implementation=adapter.attention_implementation,
            trust_remote_code=trust_remote_code,
            local_files_only=offline,
        )
        .to(torch_device)
    )
    return adapter(name_or_path, model, processor)
