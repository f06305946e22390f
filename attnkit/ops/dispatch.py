"""Chooses an implementation for ``implementation="auto"`` and checks explicit ones.

The policy tables of the attention core: with ``backend`` (the kernels) the only
module that knows which backend runs. The thresholds come from measurements on
a 2-core CPU (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import keras

from attnkit.ops import backend as backend_lib
from attnkit.ops import mods

# Above this many (query, key) pairs per head, "auto" takes the chunked path
# (on torch and TensorFlow: when the fused kernel does not take the call). Measured on a
# 2-core CPU, forward, B=1, H=8, D=64 (docs/BENCHMARKS.md, "Dispatch table";
# on TensorFlow at or below the threshold the fused kernel is used):
# on JAX chunked beats naive from N=512 on (13 vs 24 ms) and by 3-10x from
# N=1024; on TensorFlow naive wins at N=512, they tie at N=1024 and chunked
# wins from N=4096 on. Below the threshold the scores fit in cache.
CHUNKED_MIN_PAIRS = {"jax": 256 * 256, "tensorflow": 1024 * 1024, "torch": 1024 * 1024}
# The threshold on backends without an entry above.
NAIVE_MAX_PAIRS = 512 * 512
# On TensorFlow, keras' kernel (plain batched matmuls in the (B, H, T, D)
# layout) ran 1.5-1.7x faster than chunked at N=4096 and 8192 (287 vs 418 ms,
# 924 vs 1470 ms, B=1, H=8, D=64), at the price of materialising the
# (B, H, Tq, Tv) scores: 2.9 GiB peak at N=8192 against 1.3 GiB. "auto" takes
# it while the scores stay within this many elements (2 GiB of float32; an
# unknown batch counts as 1), and the O(N)-memory chunked path beyond.
FUSED_MAX_SCORES = {"tensorflow": 2**29}
# When a gradient is being recorded the kernel's backward keeps the
# (B, H, Tq, Tv) probabilities until the backward runs (issue 17: 7.0 GiB peak
# at N=8192 under a tf.GradientTape against 3.3 GiB for chunked at N=16384), so
# "auto" leaves it earlier: at 2**26 elements (256 MiB of float32, N=2896 at
# B·H=8). Not yet swept; chosen so that the retained scores stay below the
# chunked path's whole O(N) footprint at the sizes measured.
FUSED_MAX_SCORES_WITH_GRADIENT = {"tensorflow": 2**26}
# With an additive score_mod (mods.is_additive: ALiBi, the T5 bias) "auto" on
# torch materialises the mod's (1, H, Tq, Tv) bias for SDPA while it has at most
# this many elements (512 MiB of float32: N=4096 at H=8), and takes the O(N)
# chunked path beyond. The other backends keep the chunked path for every
# score_mod (not measured against a materialised bias there).
MATERIALISED_BIAS_MAX = {"torch": 2**27}
# With a score_mod (and no mask_mod or block mask, which chunked turns into
# skipped blocks) "auto" on TensorFlow takes the materialising naive path
# while the (B, H, Tq, Tv) scores have at most this many elements (512 MiB of
# float32; the score_mod's temporaries are as large), and
# FUSED_MAX_SCORES_WITH_GRADIENT when a gradient is recorded: one fused
# softmax over the whole matrix beat the chunked loop with a soft cap (1031 vs
# 1176 ms at N=4096, B=1, H=8, D=64, tf.function; ALiBi 1091 vs 1055, a tie).
MATERIALISED_MODS_MAX = {"tensorflow": 2**27}


# The loops of the chunked path per backend (default "blocks", the
# online-softmax loop over (query, key) blocks with keras.ops fori_loop/cond,
# and the FlashAttention-2 backward's two block sweeps). "rows"
# (chunked.rows_forward and rows_backward): static Python over query row
# blocks against all the keys they see, a few large operations per block; on
# torch, which runs each keras.ops call eagerly as its own pass over memory,
# it cut ALiBi's forward at N=4096 from 27x to ~2x of SDPA, and its forward +
# backward from 8.0 to 1.7 s (docs/BENCHMARKS.md, issue 17). On JAX and
# TensorFlow the compiled block loops stay (a Python loop would unroll).
CHUNKED_LOOP = {"torch": "rows"}


def chunked_loop():
    """``"rows"`` or ``"blocks"``: the chunked forward loop for the running backend."""
    return CHUNKED_LOOP.get(backend_lib.name(), "blocks")


def residual_needed(*tensors):
    """Whether the chunked forward must keep the log-sum-exp for a backward:
    False only where the backend can tell that no gradient is taken (torch);
    a traced JAX or TensorFlow function may always be differentiated."""
    return backend_lib.name() != "torch" or backend_lib.gradient_recorded(*tensors)


def fused_supports(problem, return_weights, dropout_active):
    """Why the fused kernel cannot serve this request, or None if it can."""
    if return_weights:
        return "it does not return the attention weights"
    if dropout_active:
        return "it does not apply dropout"
    if problem.score_name != "dot":
        return f"it only computes dot-product scores (score={problem.score_name or 'callable'})"
    if problem.mask_mod is not None or problem.sinks is not None or problem.block_mask is not None:
        return "it has no mask_mod, sinks or block_mask; use 'chunked' or 'naive'"
    if problem.score_mod is not None and not mods.is_additive(problem.score_mod):
        return (
            "its only score_mods are additive biases (attnkit.ops.mods.alibi, "
            "t5_relative_bias: mods.is_additive); use 'chunked' or 'naive'"
        )
    return None


def bias_fits(problem):
    """Whether "auto" may materialise an additive score_mod's (1, H, Tq, Tv)
    bias for the fused kernel on this backend (twice the size counted when
    the mod's parameters take a gradient: the bias's gradient is as large)."""
    limit = MATERIALISED_BIAS_MAX.get(backend_lib.name())
    if limit is None or problem.query_length is None or problem.key_length is None:
        return False
    elements = problem.num_heads * problem.query_length * problem.key_length
    if problem.score_mod_params and backend_lib.gradient_recorded(*problem.score_mod_params):
        elements *= 2
    return elements <= limit


def mods_materialise(problem, backend):
    """Whether "auto" computes a score_mod on the whole (B, H, Tq, Tv) scores
    (MATERIALISED_MODS_MAX) rather than block by block."""
    limit = MATERIALISED_MODS_MAX.get(backend)
    if (
        limit is None
        or problem.mask_mod is not None
        or problem.block_mask is not None
        or problem.query_length is None
        or problem.key_length is None
    ):
        return False
    if backend_lib.gradient_recorded(problem.query, problem.key, problem.value):
        limit = min(limit, FUSED_MAX_SCORES_WITH_GRADIENT.get(backend, limit))
    return score_elements(problem) <= limit


def score_elements(problem):
    """B·H·Tq·Tv, the size of the scores a materialising kernel holds (B unknown: 1)."""
    batch = problem.query.shape[0]
    batch = 1 if batch is None else batch
    return batch * problem.num_heads * problem.query_length * problem.key_length


def chunked_supports(problem, return_weights, dropout_active):
    """Why the chunked path cannot serve this request, or None if it can
    (``dropout_active`` is accepted: it applies the same dropout as naive)."""
    del dropout_active
    if return_weights:
        return (
            "it never materialises the weights; use attention_weights() or implementation='naive'"
        )
    if problem.query_length is None or problem.key_length is None:
        return "it needs static sequence lengths"
    return None


def choose(problem, implementation, return_weights, dropout_active):
    if implementation == "naive":
        return "naive"
    if implementation in ("chunked", "fused"):
        check = chunked_supports if implementation == "chunked" else fused_supports
        reason = check(problem, return_weights, dropout_active)
        if reason is not None:
            raise ValueError(
                f"implementation={implementation!r} cannot serve this call: {reason}. "
                f"Received: implementation={implementation!r}"
            )
        return implementation
    # "auto": on torch the native SDPA kernel (fused, O(N) memory, also
    # backward) is the fastest path at every measured size; with an additive
    # score_mod (ALiBi, T5) it takes the mod's bias materialised while that
    # fits MATERIALISED_BIAS_MAX (chunked, O(N), beyond).
    backend = backend_lib.name()
    if backend == "torch" and fused_supports(problem, return_weights, dropout_active) is None:
        if problem.score_mod is None or bias_fits(problem):
            return "fused"
    if problem.score_mod is not None:
        if mods_materialise(problem, backend):
            return "naive"
        return _chunked_or_naive(problem, return_weights, dropout_active, backend)
    tq, tv = problem.query_length, problem.key_length
    pairs = None if tq is None or tv is None else tq * tv
    limits = FUSED_MAX_SCORES
    if backend_lib.gradient_recorded(problem.query, problem.key, problem.value):
        limits = FUSED_MAX_SCORES_WITH_GRADIENT
    if (
        backend in limits
        and pairs is not None
        and score_elements(problem) <= limits[backend]
        and fused_supports(problem, return_weights, dropout_active) is None
    ):
        return "fused"
    return _chunked_or_naive(problem, return_weights, dropout_active, backend)


def _chunked_or_naive(problem, return_weights, dropout_active, backend):
    tq, tv = problem.query_length, problem.key_length
    if chunked_supports(problem, return_weights, dropout_active) is None:
        if tq * tv > _chunked_threshold(backend):
            return "chunked"
    return "naive"


def _chunked_threshold(backend):
    return CHUNKED_MIN_PAIRS.get(backend, NAIVE_MAX_PAIRS)


def layer_implementation(
    implementation, flash_attention, query_length, key_length, return_weights, dropout
):
    """What a layer with Keras' ``flash_attention`` switch asks the core for.

    ``flash_attention`` True (or None while ``keras.config.enable_flash_attention()``
    is on) requires the fused kernel; False forbids it, so ``"auto"`` then
    chooses between naive and chunked with the core's threshold; None otherwise
    leaves ``implementation`` as it is. ``dropout`` is the rate in effect for
    this call (0 outside training).
    """
    flash = flash_attention
    if flash is None:
        flash = keras.config.is_flash_attention_enabled()
    if flash:
        if return_weights:
            raise ValueError(
                "Attention scores cannot be returned with flash attention. "
                f"Received: return_attention_scores={return_weights}, "
                "flash_attention=True"
            )
        if dropout > 0:
            raise ValueError(
                "Dropout is not supported with flash attention. "
                f"Received: dropout={dropout}, flash_attention=True"
            )
        return "fused"
    if flash is False and implementation == "auto":
        large = (
            query_length is not None
            and key_length is not None
            and query_length * key_length > _chunked_threshold(backend_lib.name())
        )
        # Dropout is no reason for naive: chunked draws the same mask (issue 17).
        return "chunked" if large and not return_weights else "naive"
    return implementation
