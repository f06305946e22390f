"""Position layers over ``attnkit.ops.positions``: rotary and sinusoidal.

Two small weightless layers in keras-hub's call convention
(``call(inputs, start_index=0, positions=None)``), so either can replace
``keras_hub.layers.RotaryEmbedding`` or ``SinePositionEncoding``.
"""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers import _base
from attnkit.ops import positions as positions_lib


def _mask_shape(inputs, sequence_axis):
    """(B, T) of ``inputs``: the batch axis 0 and the sequence axis."""
    shape = tuple(inputs.shape)
    return (shape[0], shape[sequence_axis % len(shape)])


@keras.saving.register_keras_serializable(package="attnkit")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (Su et al. 2021), with linear, NTK and YaRN scaling.

    Rotates pairs of features of each token by angles proportional to its
    position, `(a, b) -> (a cos pθ_k - b sin pθ_k, b cos pθ_k + a sin pθ_k)`,
    `θ_k = max_wavelength^(-2k/R)`, so that `q_iᵀk_j` depends only on
    `i - j`; apply it to queries and keys after projection. The computation
    and every setting are those of `attnkit.ops.rotary` (see its docstring
    for the scalings and YaRN's magnitude factor); the defaults equal
    keras-hub's `RotaryEmbedding()` (half-split pairs, all features).

    Masking: the layer is position-wise; the Keras mask of `inputs` (or
    `mask=`, boolean `(B, T)`) passes on unchanged.

    Args:
        max_wavelength: float > 1, the base. Defaults to `10000.0`.
        rotary_dim: even int, the rotated leading features, or None for all.
            Defaults to `None`.
        interleaved: bool, pairs `(x_{2k}, x_{2k+1})` (GPT-J) instead of
            `(x_k, x_{k+R/2})` (GPT-NeoX). Defaults to `False`.
        scaling: None, `"linear"`, `"ntk"`, `"dynamic"` or `"yarn"`.
            Defaults to `None`.
        scaling_factor: float > 0. Defaults to `1.0`.
        original_max_position: int, the pretraining context (dynamic, yarn).
            Defaults to `None`.
        beta_fast: float, YaRN's fast boundary. Defaults to `32.0`.
        beta_slow: float, YaRN's slow boundary. Defaults to `1.0`.
        yarn_truncate: bool, round YaRN's correction range. Defaults to `True`.
        attention_factor: float, YaRN's magnitude factor, or None for
            `0.1 ln(s) + 1`. Defaults to `None`.
        sequence_length: int, dynamic NTK's fixed length, or None for the
            call's. Defaults to `None`.
        sequence_axis: int. Defaults to `1`.
        feature_axis: int. Defaults to `-1`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor such as (B, T, H, D) or (B, T, D).
        start_index: int or scalar integer tensor, the position of the first
            token (the cache index in cached decoding); ignored when
            `positions` is given, as in keras-hub. Defaults to `0`.
        positions: optional (T,) or (B, T) positions. Defaults to `None`.
        mask: optional boolean (B, T), passed on.

    Returns:
        The rotated `inputs`, same shape and dtype.

    Example:

    >>> import numpy as np
    >>> from attnkit.layers import RotaryEmbedding
    >>> q = np.random.randn(2, 6, 4, 8).astype("float32")
    >>> tuple(RotaryEmbedding(rotary_dim=4)(q, start_index=3).shape)
    (2, 6, 4, 8)

    References:
        Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
        Embedding", arXiv:2104.09864. Peng et al. 2023, "YaRN: Efficient
        Context Window Extension of Large Language Models", arXiv:2309.00071.
    """

    def __init__(
        self,
        max_wavelength=10000.0,
        rotary_dim=None,
        interleaved=False,
        scaling=None,
        scaling_factor=1.0,
        original_max_position=None,
        beta_fast=32.0,
        beta_slow=1.0,
        yarn_truncate=True,
        attention_factor=None,
        sequence_length=None,
        sequence_axis=1,
        feature_axis=-1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        settings = positions_lib.check_rotary_settings(
            max_wavelength=max_wavelength,
            rotary_dim=rotary_dim,
            interleaved=interleaved,
            scaling=scaling,
            scaling_factor=scaling_factor,
            original_max_position=original_max_position,
            beta_fast=beta_fast,
            beta_slow=beta_slow,
            yarn_truncate=yarn_truncate,
            attention_factor=attention_factor,
            sequence_length=sequence_length,
            sequence_axis=sequence_axis,
            feature_axis=feature_axis,
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self._settings = settings
        self.supports_masking = True
        self.built = True

    def call(self, inputs, start_index=0, positions=None, mask=None):
        _base.check_mask(mask, "mask", _mask_shape(inputs, self.sequence_axis), "(B, T)")
        offset = 0 if positions is not None else start_index
        return positions_lib.rotary(inputs, positions, offset=offset, **self._settings)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), **self._settings}


@keras.saving.register_keras_serializable(package="attnkit")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """The sinusoidal position encoding of Vaswani et al. 2017, as a layer.

    For inputs (..., T, D) returns the encoding of their positions broadcast
    to their shape (add it to the embeddings yourself, as with keras-hub's
    `SinePositionEncoding`, whose call convention this mirrors):

        PE(p, 2i) = sin(p / max_wavelength^(2i/D)),
        PE(p, 2i+1) = cos(p / max_wavelength^(2i/D)),

    `p = start_index + t` or `positions[..., t]`, computed in float32 and
    cast to the layer's compute dtype (`attnkit.ops.sinusoidal_position_encoding`).

    Masking: the encoding is position-wise; the Keras mask of `inputs` (or
    `mask=`, boolean `(B, T)`) passes on unchanged.

    Args:
        max_wavelength: float > 1. Defaults to `10000.0`.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: the embeddings, (B, T, D) (only their shape is used).
        start_index: int or scalar integer tensor, the first position;
            ignored when `positions` is given. Defaults to `0`.
        positions: optional (T,) or (B, T) positions. Defaults to `None`.
        mask: optional boolean (B, T), passed on.

    Returns:
        The encoding, of `inputs`' shape, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> from attnkit.layers import SinusoidalPositionEncoding
    >>> x = np.zeros((2, 5, 8), "float32")
    >>> tuple(SinusoidalPositionEncoding()(x, start_index=2).shape)
    (2, 5, 8)

    References:
        Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762.
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = _checks.positive_number(max_wavelength, "max_wavelength")
        if self.max_wavelength <= 1.0:
            raise ValueError(
                "`max_wavelength` must be greater than 1. "
                f"Received: max_wavelength={max_wavelength}"
            )
        self.supports_masking = True
        self.built = True

    def call(self, inputs, start_index=0, positions=None, mask=None):
        shape = tuple(inputs.shape)
        if len(shape) < 2:
            raise ValueError(
                f"`inputs` must have shape (..., T, D). Received: inputs.shape={shape}"
            )
        _base.check_mask(mask, "mask", shape[:-1], "(B, T)")
        if positions is None:
            dtype = "float32"
            pos = ops.arange(ops.shape(inputs)[-2], dtype=dtype)
            pos = pos + ops.cast(positions_lib._offset_tensor(start_index, dtype), dtype)
        else:
            pos = positions_lib._positions_tensor(positions, shape[-2], "float32")  # (B|1, T)
        encoding = positions_lib.sinusoidal_position_encoding(
            pos, shape[-1], self.max_wavelength, dtype=self.compute_dtype
        )
        return ops.broadcast_to(encoding, ops.shape(inputs))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
