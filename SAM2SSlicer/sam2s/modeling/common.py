"""Small building blocks shared by the SAM 2 heads (reference ``sam2/modeling/sam2_utils.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a ``(B, C, H, W)`` tensor (eps 1e-6, as in SAM).

    Computed in float32 whatever the input dtype (a bf16 mean / variance over 4..256 channels
    loses too much), output in the input dtype; float32 inputs are unaffected (bit for bit).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
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
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

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
