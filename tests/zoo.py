"""Small models written here, the way users write theirs, for :func:`condensation.reduce_model`.

Each ``build_*(widths)`` returns a module whose reducible widths are ``widths``, in the order
discovery lists the groups. Imported by tests/test_discover.py and by the fresh process that
loads a saved reduced model.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx


class ResNetish(nn.Module):
    """ResNet-18-style: stem, an identity block and a downsampling block (1x1 conv + BN
    shortcut). widths: (stream 1, block 1 hidden, block 2 hidden, stream 2)."""

    widths: tuple

    @nn.compact
    def __call__(self, x):
        c1, h1, h2, c2 = self.widths

        def bn(y):
            return nn.BatchNorm(use_running_average=True)(y)

        x = nn.relu(bn(nn.Conv(c1, (3, 3), use_bias=False)(x)))
        y = nn.relu(bn(nn.Conv(h1, (3, 3), use_bias=False)(x)))
        x = nn.relu(x + bn(nn.Conv(c1, (3, 3), use_bias=False)(y)))
        y = nn.relu(bn(nn.Conv(h2, (3, 3), strides=2, use_bias=False)(x)))
        y = bn(nn.Conv(c2, (3, 3), use_bias=False)(y))
        short = bn(nn.Conv(c2, (1, 1), strides=2, use_bias=False)(x))
        x = nn.relu(short + y)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


class UNetish(nn.Module):
    """Encoder conv, pooled middle conv, upsampled and concatenated with the encoder's
    features (the skip), decoder conv, 1x1 head. widths: (encoder, middle, decoder)."""

    widths: tuple

    @nn.compact
    def __call__(self, x):
        e, m, d = self.widths
        enc = nn.relu(nn.Conv(e, (3, 3))(x))
        mid = nn.relu(nn.Conv(m, (3, 3))(nn.max_pool(enc, (2, 2), (2, 2))))
        up = jnp.repeat(jnp.repeat(mid, 2, axis=1), 2, axis=2)
        dec = nn.relu(nn.Conv(d, (3, 3))(jnp.concatenate([up, enc], axis=-1)))
        return nn.Conv(2, (1, 1))(dec)


class FlattenCNN(nn.Module):
    """Conv, pool, the channels flattened with the positions into a dense layer (a channel is
    H*W rows of its kernel), dense head. widths: (conv, dense)."""

    widths: tuple

    @nn.compact
    def __call__(self, x):
        c, h = self.widths
        x = nn.max_pool(nn.relu(nn.Conv(c, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(h)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(x)


class MixerBlock(nn.Module):
    """MLP-Mixer: patch embedding, token mixing and channel mixing MLPs with LayerNorm and
    residuals, mean over tokens, head. widths: (token hidden, channel hidden)."""

    widths: tuple
    channels: int = 6

    @nn.compact
    def __call__(self, x):                      # x [N, tokens, patch]
        tok, ch = self.widths
        x = nn.Dense(self.channels)(x)
        y = nn.LayerNorm()(x).swapaxes(1, 2)    # [N, C, T]
        y = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(tok)(y))).swapaxes(1, 2)
        x = x + y
        y = nn.Dense(self.channels)(nn.gelu(nn.Dense(ch)(nn.LayerNorm()(x))))
        x = x + y
        return nn.Dense(3)(x.mean(axis=1))


class TransformerBlock(nn.Module):
    """Pre-LN block: multi-head attention (left alone) and an MLP (reduced). widths: (mlp,)."""

    widths: tuple
    dim: int = 8

    @nn.compact
    def __call__(self, x):                      # x [N, T, features]
        x = nn.Dense(self.dim)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x))
        y = nn.Dense(self.dim)(nn.gelu(nn.Dense(self.widths[0])(nn.LayerNorm()(x))))
        x = x + y
        return nn.Dense(3)(x.mean(axis=1))


class SharedLayer(nn.Module):
    """One Dense applied to both halves of the input (tied weights), summed, then a head.
    widths: (shared hidden,)."""

    widths: tuple

    @nn.compact
    def __call__(self, x):
        shared = nn.Dense(self.widths[0])
        a, b = jnp.split(x, 2, axis=-1)
        return nn.Dense(3)(nn.tanh(shared(a)) + nn.tanh(shared(b)))


class TiedAutoencoder(nn.Module):
    """The decoder is the encoder's kernel transposed: its hidden units cannot be merged
    (reported). widths: (hidden,)."""

    widths: tuple

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.widths[0]))
        b = self.param("b", nn.initializers.zeros, (self.widths[0],))
        return nn.relu(x @ w + b) @ w.T


class NNXMLP(nnx.Module):
    """A GELU MLP in flax.nnx. widths: (hidden 1, hidden 2)."""

    def __init__(self, widths, *, rngs: nnx.Rngs, inputs: int = 4, outputs: int = 3):
        h1, h2 = widths
        self.l1 = nnx.Linear(inputs, h1, rngs=rngs)
        self.l2 = nnx.Linear(h1, h2, rngs=rngs)
        self.out = nnx.Linear(h2, outputs, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.gelu(self.l2(nnx.gelu(self.l1(x)))))
