"""Small building blocks shared by the SAM 2 heads (reference ``sam2/modeling/sam2_utils.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# activation name -> (attr, scalars, algorithm) of ``torch.ops.mkldnn._linear_pointwise``
_POINTWISE = {"none": ("none", [], ""), "relu": ("relu", [], ""), "gelu": ("gelu", [], "none")}
_fused_state = {"ok": None}  # None: not tried yet; then True / False for this process


def fused_linear_available() -> bool:
    """True when oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``) runs in this
    PyTorch build; tried once on a tiny bf16 product and remembered (False on builds without
    oneDNN or without the op, which then use ``F.linear`` plus the activation)."""
    if _fused_state["ok"] is None:
        ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        if ok:
            try:
                x = torch.ones(2, 4, dtype=torch.bfloat16)
                y = torch.ops.mkldnn._linear_pointwise(x, torch.ones(3, 4, dtype=torch.bfloat16), None, "relu", [], "")
                ok = tuple(y.shape) == (2, 3) and bool((y == 4).all())
            except (RuntimeError, NotImplementedError):
                ok = False
        _fused_state["ok"] = ok
    return bool(_fused_state["ok"])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and float32 numerics) with an optional
    activation ``"none" | "relu" | "gelu"`` (exact erf GELU) applied to its output.

    Input ``(..., in_features)`` -> ``(..., out_features)``, same dtype. On CPU in bfloat16 with
    autograd off (``torch.inference_mode`` / ``no_grad``, as the tracker runs), the bias and the
    activation are applied inside oneDNN's matrix product (``torch.ops.mkldnn._linear_pointwise``,
    the kernel PyTorch's inductor emits for its CPU linear + pointwise fusion): no bias
    broadcast copy and no separate activation pass over the output (the memory-attention MLP's
    2048-wide ReLU layer runs about 1.9x faster). The result equals ``act(F.linear(x, W, b))``
    up to bf16 rounding (one rounding instead of two). float32, CUDA and autograd use
    ``F.linear`` and the activation, unchanged.
    """

    def forward(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        if (
            x.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and self.weight.dtype == torch.bfloat16
            and not torch.is_grad_enabled()
            and fused_linear_available()
        ):
            y = torch.ops.mkldnn._linear_pointwise(
                x.reshape(-1, x.shape[-1]).contiguous(), self.weight, self.bias, *_POINTWISE[activation]
            )
            return y.view(*x.shape[:-1], y.shape[-1])
        y = F.linear(x, self.weight, self.bias)
        if activation == "relu":
            return F.relu(y)
        if activation == "gelu":
            return F.gelu(y)
        if activation != "none":
            raise ValueError(f"Unknown activation {activation!r}; use 'none', 'relu' or 'gelu'.")
        return y


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them.

    Input ``(..., input_dim)`` -> output ``(..., output_dim)``, same dtype. State-dict keys
    ``layers.{i}.weight/bias`` as in the reference ``MLP``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.activation = {nn.ReLU: "relu", nn.GELU: "gelu"}.get(activation)  # fused into Linear
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i < last and self.activation is not None:
                x = layer(x, self.activation)
            else:
                x = layer(x)
                if i < last:
                    x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a ``(B, C, H, W)`` tensor (eps 1e-6, as in SAM).

    Computed in float32 whatever the input dtype (a bf16 mean / variance over 4..256 channels
    loses too much), output in the input dtype. float32 inputs take the reference's formula
    (bit for bit); other dtypes with 16 channels or more ``F.layer_norm`` in float32 on a channels-last view
    (one kernel, same result up to float32 rounding), returned as a channels-last view.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype != torch.float32 and x.shape[1] >= 16:
            # One fused float32 kernel over channels-last memory; the output is a channels-last
            # (B, C, H, W) view, which the following convolutions read fast. (Rows of 4 channels
            # are slow in F.layer_norm: those take the formula below.)
            y = F.layer_norm(
                x.permute(0, 2, 3, 1).float(), (x.shape[1],), self.weight.float(), self.bias.float(), self.eps
            )
            return y.to(dtype).permute(0, 3, 1, 2)
        x = x.float()  # no-op for float32
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return (self.weight.float()[:, None, None] * x + self.bias.float()[:, None, None]).to(dtype)


class Attention(nn.Module):
    """Multi-head attention with optional down-projection (SAM's ``Attention``).

    ``q (B, Nq, embedding_dim)``, ``k, v (B, Nk, kv_in_dim)`` -> ``(B, Nq, embedding_dim)``.
    Projections ``q_proj, k_proj, v_proj, out_proj`` map to ``embedding_dim // downsample_rate``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None):
        super().__init__()
        kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = Linear(embedding_dim, self.internal_dim)
        self.k_proj = Linear(kv_in_dim, self.internal_dim)
        self.v_proj = Linear(kv_in_dim, self.internal_dim)
        self.out_proj = Linear(self.internal_dim, embedding_dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, heads, N, C / heads)``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N, c)`` -> ``(B, N, heads * c)`` followed by the output projection."""
        b, h, n, c = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, n, h * c))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(self.q_proj(q)), self.heads(self.k_proj(k)), self.heads(self.v_proj(v))
        return self.merge(F.scaled_dot_product_attention(q, k, v))
