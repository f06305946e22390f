"""The classifier of ``attnkit demo digits``: spatial self-attention over 8x8 digits.

Two 3x3 convolutions give a feature vector at each of the 8x8 positions;
multi-head self-attention over both spatial axes (``attention_axes=(1, 2)``:
every position attends to all 64) with a residual connection and layer norm;
then the average over the 64 positions, dropout and a softmax over the 10
digits. Adam with a cosine learning-rate decay to 0.
"""

from __future__ import annotations

ATTENTION_LAYER = "spatial_attention"


def build_digits_classifier(seed: int = 0, decay_steps: int = 1000):
    """The compiled classifier ``image (B, 8, 8, 1) in [0, 16] -> probs (B, 10)``.

    Args:
        seed: seed of the attention and the dropout. Defaults to `0`.
        decay_steps: updates over which the learning rate decays from 2e-3
            to 0. Defaults to `1000`.

    Returns:
        A functional ``keras.Model`` compiled with Adam, the sparse categorical
        cross-entropy and the accuracy; ``attnkit.attention_maps`` reads its
        attention as ``ATTENTION_LAYER``, weights ``(B, H, 8, 8, 8, 8)``.
    """
    import keras

    from attnkit.layers import MultiHeadAttention

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 16.0)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)  # (B, 8, 8, 32)
    a = MultiHeadAttention(
        num_heads=2,
        key_dim=16,
        attention_axes=(1, 2),
        seed=seed,
        name=ATTENTION_LAYER,
    )(x, x)  # (B, 8, 8, 32); weights (B, H, 8, 8, 8, 8)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([x, a]))
    x = keras.layers.GlobalAveragePooling2D()(x)  # (B, 32)
    x = keras.layers.Dropout(0.3, seed=seed)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="digits_attention")
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
