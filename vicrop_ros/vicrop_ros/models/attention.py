"""
Read one decoder layer's attention row while every layer keeps SDPA.

Transformers' SDPA returns no attention weights, and eager attention on every layer costs
O(layers x tokens^2) memory. ViCrop needs only the attention of the last prompt position at one
layer. This module registers an attention implementation, ``vicrop_probe``, that runs SDPA for
every layer and, for the one layer an active :class:`AttentionProbe` names, also computes that row:
``softmax(q_last . K^T * scaling + mask_row)`` per head, from the very query and key tensors (RoPE
already applied) the layer uses. Models load with ``attn_implementation={'text_config':
'vicrop_probe', ...}``; without an active probe it is plain SDPA.

With ``differentiable=True`` the row becomes a leaf tensor that the layer's output at that position
is recomputed from (``weights @ V``), so d(anything downstream)/d(weights) is exactly the gradient
eager attention would give for that row, and no graph is built for the layers before it.
With ``stop=True`` the forward pass ends (:class:`ProbeDone`) right after the row is read: the
layer's own attention output and the later layers are not computed.

:func:`filling_cache` serves prefills whose hidden states nobody reads (a prefix, or an answer
prompt but for its last token): the pass ends at a chosen layer's attention (the last layer, or
the deepest one a saliency pass reads), once the layers up to it have written their keys and
values to the cache.
"""

from collections.abc import Iterator
import contextlib
import contextvars
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PROBE_ATTENTION = 'vicrop_probe'


class ProbeDone(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised inside the forward pass once the probed row is read and ``stop`` was requested."""


@dataclass
class AttentionProbe:
    """Which attention row to read, and (after the forward pass) what it was."""

    module: torch.nn.Module  # the self-attention module of the layer to read
    rows: torch.Tensor  # (batch,) long: query position of each batch row's last prompt token
    differentiable: bool = False  # make the weights a leaf the layer output depends on
    stop: bool = False  # end the forward pass right after reading
    weights: torch.Tensor | None = None  # (batch, heads, keys) float32, set by the forward pass


_active_probe: contextvars.ContextVar[AttentionProbe | None] = contextvars.ContextVar(
    'vicrop_attention_probe', default=None
)


@contextlib.contextmanager
def probing(probe: AttentionProbe) -> Iterator[AttentionProbe]:
    """Make ``probe`` active for forward passes in this context; ProbeDone ends them quietly."""
    token = _active_probe.set(probe)
    try:
        yield probe
    except ProbeDone:
        pass
    finally:
        _active_probe.reset(token)


_cache_filled_at: contextvars.ContextVar[torch.nn.Module | None] = contextvars.ContextVar(
    'vicrop_cache_filled_at', default=None
)


@contextlib.contextmanager
def filling_cache(last_attention: torch.nn.Module) -> Iterator[None]:
    """
    End forward passes in this context at ``last_attention``'s attention.

    A layer writes its keys and values to the cache before it attends, so by then the cache holds
    those of every layer up to that one; that attention and all after it (the layer's MLP, later
    layers, the final norm, the output head), which only a reader of the hidden states would
    need, are skipped.
    """
    token = _cache_filled_at.set(last_attention)
    try:
        yield
    except ProbeDone:
        pass
    finally:
        _cache_filled_at.reset(token)


def _allowed_keys(
    attention_mask: torch.Tensor | None, rows: torch.Tensor, queries: int, keys: int
) -> torch.Tensor:
    """
    Return (batch, keys) bool: which keys the query at ``rows`` may attend to.

    ``attention_mask`` as SDPA receives it: None (pure causal, no padding), bool
    (batch, 1, queries, keys) with True = attend, or float additive with -inf = masked. A cached
    prefix makes keys longer than queries; query i then sits at key position keys - queries + i.
    """
    batch = rows.shape[0]
    if attention_mask is None:
        positions = torch.arange(keys, device=rows.device)
        return positions[None, :] <= (keys - queries + rows)[:, None]
    mask_rows = attention_mask[torch.arange(batch, device=rows.device), 0, rows]  # (batch, keys)
    if mask_rows.dtype == torch.bool:
        return mask_rows
    return mask_rows > torch.finfo(mask_rows.dtype).min / 2


def _attention_row(
    probe: AttentionProbe, query, key, attention_mask, scaling: float | None
) -> torch.Tensor:
    """Return (batch, heads, keys) float32: the attention of each row's query ``probe.rows``."""
    batch, heads, queries, head_dim = query.shape
    keys = key.repeat_interleave(heads // key.shape[1], dim=1)  # (batch, heads, keys, head_dim)
    rows = torch.arange(batch, device=query.device)
    last_query = query[rows, :, probe.rows]  # (batch, heads, head_dim)
    scale = scaling if scaling is not None else head_dim**-0.5
    scores = torch.einsum('bhd,bhkd->bhk', last_query.float(), keys.float()) * scale
    allowed = _allowed_keys(attention_mask, probe.rows, queries, keys.shape[2])
    return scores.masked_fill(~allowed[:, None, :], float('-inf')).softmax(dim=-1)


def _probe_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA for every layer, plus the probed layer's last-row attention (see module docstring)."""
    if module is _cache_filled_at.get():
        raise ProbeDone
    probe = _active_probe.get()
    if probe is not None and module is probe.module and probe.stop:
        probe.weights = _attention_row(probe, query, key, attention_mask, scaling)
        raise ProbeDone
    output, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, **kwargs
    )  # output: (batch, queries, heads, head_dim)
    if probe is None or module is not probe.module:
        return output, None
    weights = _attention_row(probe, query, key, attention_mask, scaling)
    if probe.differentiable:
        weights = weights.detach().requires_grad_(True)
        values = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        row_output = torch.einsum('bhk,bhkd->bhd', weights.to(values.dtype), values)
        output = output.clone()
        output[torch.arange(query.shape[0], device=query.device), probe.rows] = row_output
    probe.weights = weights
    return output, None


AttentionInterface.register(PROBE_ATTENTION, _probe_attention)
# Without a mask function of the same name the layers would get no mask at all (wrong with padding
# or a cache): use SDPA's.
AttentionMaskInterface.register(PROBE_ATTENTION, sdpa_mask)
