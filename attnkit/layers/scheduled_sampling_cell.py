"""Scheduled sampling (Bengio et al. 2015) for training a seq2seq decoder cell."""

from __future__ import annotations

import keras
from keras import ops

from attnkit import _checks, sampling
from attnkit.ops import counter_noise

_CHOICE_STREAM = 0x5BD1E995  # xor-ed into the seed: the coin flips' own noise


@keras.saving.register_keras_serializable(package="attnkit")
class _SamplingSeeds(keras.layers.Layer):
    """Draws per-example seeds ``(B, counter_noise.STATE_SIZE)`` outside the loop.

    A layer, so that the draw is a node of a functional model (run at every
    call, where a ``SeedGenerator`` works on every backend) and its
    generator's state is tracked. Registered: it is a node of the saved graph.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, template):
        return counter_noise.initial_state(ops.shape(template)[0], self.seed_generator)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], counter_noise.STATE_SIZE)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _seed_and_counter(noise_state):
    s = ops.cast(ops.round(ops.cast(noise_state, "float32")), "int32")  # (B, 5)
    return s[:, 0] + s[:, 1] * 256 + s[:, 2] * 65536, s[:, 3] + s[:, 4] * 256  # (B,), (B,)


def _next_state(noise_state):
    s = ops.cast(ops.round(ops.cast(noise_state, "float32")), "int32")
    low = ops.mod(s[:, 3] + 1, 256)
    high = ops.mod(s[:, 4] + ops.cast(ops.equal(low, 0), "int32"), 256)
    return ops.concatenate(
        [ops.cast(s[:, :3], "float32"), ops.cast(ops.stack([low, high], axis=-1), "float32")],
        axis=-1,
    )


def sampling_choice(seed, counter, probability, like):
    """(B,) bool: which examples feed their own sample at this step.

    True with probability `probability`, from counter-based noise of
    `(seed ^ stream, counter, row)`; never at the first step (`counter == 0`),
    which has no previous output to sample from.
    """
    stream = ops.bitwise_xor(
        ops.cast(seed, "int32"), ops.convert_to_tensor(_CHOICE_STREAM, "int32")
    )
    u = sampling.uniform(stream, counter, like[:, :1])[:, 0]  # (B,)
    return ops.logical_and(u < ops.cast(probability, "float32"), counter > 0)


@keras.saving.register_keras_serializable(package="attnkit")
class ScheduledSamplingCell(keras.layers.Layer):
    """A decoder cell trained with scheduled sampling.

    Bengio, Vinyals, Jaitly, Shazeer 2015 (https://arxiv.org/abs/1506.03099);
    tensorflow-addons' `ScheduledEmbeddingTrainingSampler`. Wraps
    `embedding -> cell -> projection` (e.g. an `AttentionRNNCell`) as one
    Keras RNN cell whose step input is the ground-truth token `y_{t-1}`.
    At each step `t`, in training:

    1. with probability `p = sampling_probability` (per example, `t > 0`),
       feed a token `ŷ ~ softmax(z_{t-1})` sampled from the previous step's
       output `z_{t-1}`; otherwise feed the ground truth `y_{t-1}`;
    2. `o_t, s_t = cell(embedding(token), s_{t-1})`;
    3. output `z_t = projection(o_t)` (logits, or probabilities when the
       projection's activation is softmax: then `ŷ ~ z_{t-1}`).

    `p = 0` is teacher forcing, exactly; `p = 1` feeds back samples at every
    step but the first. Outside training (`evaluate`, `predict`) the cell
    teacher-forces. The noise is counter-based (`attnkit.sampling`): seeds
    drawn per example at every call from a `SeedGenerator(seed)` outside the
    recurrent loop, and a step counter in the state, so it can be drawn
    inside `keras.layers.RNN`'s loop on every backend. `p` lives in the
    non-trainable variable `probability`, so a schedule (Bengio's inverse
    sigmoid decay, say) is `cell.probability.assign(p)` from a callback.

    The state is `[z_{t-1} (B, V), *cell states, noise (B, 5)]`
    (`get_initial_state(**kwargs)` passes its arguments to the cell's).
    Wrap the token ids for `keras.layers.RNN` with `token_inputs`.

    Masking: a decoder mask is `keras.layers.RNN`'s (masked steps keep the
    state); the wrapped cell masks its memory.

    Args:
        cell: the decoder cell (an `AttentionRNNCell` or any Keras RNN cell
            with `get_initial_state`).
        embedding: the token embedding (`keras.layers.Embedding`).
        projection: the output layer with `units` = V (`keras.layers.Dense`).
        sampling_probability: `p` in [0, 1]. Defaults to `0.0`.
        seed: seed of the `SeedGenerator`. Defaults to `None`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: (B, 1) the ground-truth token id `y_{t-1}` as a number.
        states: the list described above.
        training: scheduled sampling only in training.

    Returns:
        `(z_t (B, V), new_states)`.

    Example:

    >>> import numpy as np, keras, attnkit
    >>> from attnkit.layers.scheduled_sampling_cell import ScheduledSamplingCell
    >>> memory = np.random.normal(size=(2, 7, 8)).astype("float32")
    >>> tokens = np.array([[1, 4, 2], [1, 3, 3]])  # decoder inputs, GO first
    >>> cell = ScheduledSamplingCell(
    ...     attnkit.layers.AttentionRNNCell(
    ...         keras.layers.GRUCell(16), attnkit.layers.BahdanauAttention(10)),
    ...     keras.layers.Embedding(5, 4), keras.layers.Dense(5),
    ...     sampling_probability=0.25, seed=0)
    >>> state = cell.get_initial_state(memory=memory)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> logits = rnn(cell.token_inputs(tokens), initial_state=state, training=True)
    >>> tuple(logits.shape)
    (2, 3, 5)

    References:
        - Bengio, Vinyals, Jaitly, Shazeer 2015, https://arxiv.org/abs/1506.03099
    """

    def __init__(self, cell, embedding, projection, sampling_probability=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if isinstance(embedding, dict):
            embedding = keras.saving.deserialize_keras_object(embedding)
        if isinstance(projection, dict):
            projection = keras.saving.deserialize_keras_object(projection)
        if not (hasattr(type(cell), "state_size") and callable(getattr(cell, "call", None))):
            raise ValueError(
                "`cell` must be a Keras RNN cell (with `state_size` and `call`). "
                f"Received: cell={cell!r}"
            )
        if not isinstance(getattr(projection, "units", None), int):
            raise ValueError(
                "`projection` must be a layer with `units` (the vocabulary size V), "
                f"e.g. keras.layers.Dense(V). Received: projection={projection!r}"
            )
        if (
            isinstance(sampling_probability, bool)
            or not isinstance(sampling_probability, (int, float))
            or not 0 <= sampling_probability <= 1
        ):
            _checks._fail("sampling_probability", "a number in [0, 1]", sampling_probability)
        self.cell = cell
        self.embedding = embedding
        self.projection = projection
        self.sampling_probability = float(sampling_probability)
        self.seed = _checks.seed(seed)
        self._seeds = _SamplingSeeds(seed, dtype="float32", name="sampling_seeds")

    @property
    def _cell_state_sizes(self):
        size = self.cell.state_size
        return list(size) if isinstance(size, (list, tuple)) else [size]

    @property
    def state_size(self):
        return [self.output_size, *self._cell_state_sizes, counter_noise.STATE_SIZE]

    @property
    def output_size(self):
        return self.projection.units

    @staticmethod
    def token_inputs(tokens):
        """(B, Ty) token ids -> the (B, Ty, 1) float inputs of `keras.layers.RNN`."""
        return ops.expand_dims(ops.cast(tokens, "float32"), -1)

    def get_initial_state(self, batch_size=None, **kwargs):
        """`[zeros (B, V), *cell.get_initial_state(**kwargs), seeds (B, 5)]`."""
        if kwargs:
            cell_states = self.cell.get_initial_state(**kwargs)
        else:
            cell_states = self.cell.get_initial_state(batch_size)
        cell_states = list(cell_states) if isinstance(cell_states, (list, tuple)) else [cell_states]
        template = cell_states[0][:, :1]  # (B, 1)
        logits = ops.cast(template, "float32") * ops.zeros((1, self.output_size), "float32")
        return [logits, *cell_states, self._seeds(template)]

    def build(self, input_shape):
        if not self.embedding.built:
            self.embedding.build((None,))
        if not self.cell.built:
            self.cell.build((None, self.embedding.output_dim))
        if not self.projection.built:
            size = self._cell_output_size()
            self.projection.build((None, size))
        self.probability = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.sampling_probability),
            trainable=False,
            dtype="float32",
            name="probability",
        )

    def _cell_output_size(self):
        size = getattr(self.cell, "output_size", None)
        if size is None:
            size = self._cell_state_sizes[0]
        if getattr(self.cell, "alignment_history", False):
            size -= self.cell.memory_shape[0]
        return size

    def _softmax_output(self):
        activation = getattr(self.projection, "activation", None)
        return getattr(activation, "__name__", "") == "softmax"

    def call(self, inputs, states, training=None):
        previous, cell_states, noise = states[0], list(states[1:-1]), states[-1]
        tokens = ops.cast(ops.round(ops.cast(inputs[:, 0], "float32")), "int32")  # (B,)
        if training:
            seed, counter = _seed_and_counter(noise)
            previous = ops.cast(previous, "float32")  # (B, V)
            if self._softmax_output():
                previous = ops.log(ops.maximum(previous, 1e-30))
            sampled = sampling.sample_tokens(previous, seed, counter)  # (B,)
            use_sample = sampling_choice(seed, counter, self.probability, previous)
            tokens = ops.where(use_sample, sampled, tokens)
        output, new_cell_states = self.cell(self.embedding(tokens), cell_states, training=training)
        if not isinstance(new_cell_states, (list, tuple)):
            new_cell_states = [new_cell_states]
        if getattr(self.cell, "alignment_history", False):
            output = self.cell.split_output(output)[0]
        z = self.projection(output)  # (B, V)
        next_noise = _next_state(noise) if training else ops.cast(noise, "float32")
        return z, [ops.cast(z, "float32"), *new_cell_states, next_noise]

    def get_config(self):
        return {
            **super().get_config(),
            "cell": keras.saving.serialize_keras_object(self.cell),
            "embedding": keras.saving.serialize_keras_object(self.embedding),
            "projection": keras.saving.serialize_keras_object(self.projection),
            "sampling_probability": self.sampling_probability,
            "seed": self.seed,
        }
