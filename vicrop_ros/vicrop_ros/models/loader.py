"""``load_model``: the single entry from a model id or path to a ViCrop-ready adapter."""

from pathlib import Path

import torch
from transformers import AutoConfig
from transformers.utils import logging as transformers_logging

from .base import HfVisionLanguageModel
from .instructblip import InstructBlipModel
from .llava import LlavaModel
from .qwen2_5_vl import Qwen25VLModel

# config.model_type -> adapter
FAMILIES: dict[str, type[HfVisionLanguageModel]] = {
    'llava': LlavaModel,
    'qwen2_5_vl': Qwen25VLModel,
    'instructblip': InstructBlipModel,
}
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


def family_of(name_or_path: str, trust_remote_code: bool = False) -> type[HfVisionLanguageModel]:
    """
    Return the adapter class for the model at ``name_or_path`` (id or directory).

    Raises ValueError for a missing path, an unreadable config or an unsupported model type.
    """
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith(('/', '.', '~')) and not path.is_dir():
        raise ValueError(f'model path {name_or_path!r} is not a directory')
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ValueError(f'cannot load a model config from {name_or_path!r}: {error}') from None
    adapter = FAMILIES.get(config.model_type)
    if adapter is None:
        raise ValueError(
            f'unsupported model type {config.model_type!r} ({name_or_path}); '
            f'supported: {", ".join(FAMILIES)}'
        )
    return adapter


def load_processor(name_or_path: str, trust_remote_code: bool = False):
    """Load the processor of a supported model the way :func:`load_model` does."""
    family = family_of(name_or_path, trust_remote_code)
    return family.load_processor(name_or_path, trust_remote_code)


def load_model(
    name_or_path: str, device: str = 'auto', dtype: str = 'auto', trust_remote_code: bool = False
) -> HfVisionLanguageModel:
    """
    Load a supported multimodal LLM with its processor, ready for ViCrop.

    ``name_or_path``: a Hugging Face model id (from the local cache when offline) or a directory
    written by ``save_pretrained``. Supported ``model_type``s: the keys of :data:`FAMILIES`.
    ``trust_remote_code``: allow Python code shipped with the checkpoint to run (off: the
    supported families are built into transformers). Raises ValueError for a missing path, an
    unsupported model or an unusable device/dtype.
    """
    adapter = family_of(name_or_path, trust_remote_code)
    torch_device = resolve_device(device)
    transformers_logging.disable_progress_bar()  # no terminal progress bars in robot logs
    model = (
        adapter.transformers_class()
        .from_pretrained(
            name_or_path,
            dtype=resolve_dtype(dtype, torch_device),
            attn_implementation=adapter.attention_implementation,
            trust_remote_code=trust_remote_code,
        )
        .to(torch_device)
    )
    processor = adapter.load_processor(name_or_path, trust_remote_code)
    return adapter(name_or_path, model, processor)
