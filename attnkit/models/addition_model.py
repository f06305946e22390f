"""The model of ``attnkit demo addition``: Raffel & Ellis (2015)'s feed-forward attention.

Raffel & Ellis, "Feed-Forward Networks with Attention Can Solve Some Long-Term
Memory Problems", 2015 (arXiv:1512.08756). Each step of the (value, marker)
sequence of ``attnkit.data.addition`` is embedded on its own, attention
pooling sums the steps into one vector, and two dense layers regress the
target: no recurrence, yet the model finds the two marked steps anywhere in
a long sequence. Padding (all-zero steps) is masked.
"""

from __future__ import annotations


def build_addition_model(
    units=100, *, negative_slope=0.01, learning_rate=1e-2, compile=True, seed=None
):
    """The feed-forward attention model of Raffel & Ellis 2015.

    ``h_t = LReLU(W x_t + b)`` (``units`` wide), feed-forward attention pooling
    ``c = Σ_t softmax_t(tanh(w h_t + b)) h_t`` over the unpadded steps, then
    two LReLU dense layers (``units`` and 1 wide). With ``units=100`` it has
    the paper's 10,602 parameters. Input ``(B, T, 2)`` of any T; output
    ``(B, 1)``.

    Training follows the paper and the authors' code (craffel/ff-attention):
    zero biases, a leaky ReLU of slope 0.01 on every layer (the output too),
    Adam (β1 = 0.9, β2 = 0.999, ε = 1e-8) on the mean squared error, no
    gradient clipping. The paper picks the learning rate per task from
    {0.01, 0.003, 0.001, 0.0003}; 0.01 is the one that solves the addition
    problem at T0 = 1000 in one epoch (at 0.001 the model stalls near 90% of
    the test sequences). The kernels are Glorot uniform, the attention
    vector ``w`` included: the authors' He normal kernels (``N(0, 2 / fan_in)``,
    so ``N(0, 1)`` on the 2 inputs) make training at 0.01 erratic here.

    Args:
        units: D, the width of ``h_t`` and of the hidden dense layer.
            Defaults to `100`.
        negative_slope: the LReLU slope (Lasagne's default). Defaults to `0.01`.
        learning_rate: Adam's learning rate. Defaults to `1e-2`.
        compile: compile with Adam and the mean squared error.
            Defaults to `True`.
        seed: seed of the initializers. Defaults to `None`.
    """
    import keras

    from attnkit.layers.attention_pooling import AttentionPooling

    def init(offset):
        return keras.initializers.GlorotUniform(None if seed is None else seed + offset)

    inputs = keras.Input((None, 2), name="sequence")
    x = keras.layers.Masking(0.0, name="padding")(inputs)
    x = keras.layers.Dense(units, kernel_initializer=init(0), name="embed")(x)
    x = keras.layers.LeakyReLU(negative_slope, name="embed_lrelu")(x)
    x = AttentionPooling(score="feedforward", kernel_initializer=init(1), name="attention")(x)
    x = keras.layers.Dense(units, kernel_initializer=init(2), name="hidden")(x)
    x = keras.layers.LeakyReLU(negative_slope, name="hidden_lrelu")(x)
    x = keras.layers.Dense(1, kernel_initializer=init(3), name="output")(x)
    outputs = keras.layers.LeakyReLU(negative_slope, name="output_lrelu")(x)
    model = keras.Model(inputs, outputs, name="raffel_ellis_attention")
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
            loss="mse",
        )
    return model
