"""``attnkit demo lm``: a small GPT-style language model with a key/value cache.

Data (``attnkit.data.synthetic_text``): word-level stories from a seeded
probabilistic grammar with long-range structure (pronouns that follow a
name given once, adjectives recalled from the first sentence, a list of
foods copied in order tens of tokens later). Training and held-out stories
come from different seeds; the token stream is cut into non-overlapping
chunks of ``--length`` tokens with next-token targets.

Model (``attnkit.models.language_model.LanguageModel``): token embedding,
pre-norm blocks of causal grouped-query self-attention (H query heads, Hkv
key/value heads, a sliding window) and a GELU MLP, a final layer norm and
the tied embedding as output. Positions are rotary embeddings applied by the
attention layers (``GroupedQueryAttention(position_embedding="rotary")``).

Output: the held-out loss (nats/token) next to the entropy of the training
unigram distribution (and an add-0.1 bigram model's held-out loss), a greedy
continuation of a held-out prompt, the tokens/s of generating ``--generate``
tokens with and without the key/value cache (compiled steps on JAX and
TensorFlow; each timed after a warm-up run), and the model as ``lm.keras``.
"""

from __future__ import annotations

import math
import time

from attnkit.cli.demos import common

NAME = "lm"
POSITIONS = "rotary"  # GroupedQueryAttention(position_embedding="rotary")
SIZES = {
    # name: (num_layers, hidden_dim, num_query_heads, num_key_value_heads, sliding_window)
    "full": (3, 96, 4, 2, 64),
    "tiny": (1, 16, 2, 1, 8),
}
PROMPT_TOKENS = 24  # the sample continuation's prompt: the start of a held-out story


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=3, out=f"attnkit-out/{NAME}")
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="full",
        help="model size: full = 3 blocks of width 96, 4 query and 2 key/value heads, "
        "window 64; tiny = 1 block of width 16, for tests (default: full)",
    )
    parser.add_argument(
        "--tokens",
        type=common.positive_int,
        default=400_000,
        metavar="N",
        help="training tokens (default: 400000)",
    )
    parser.add_argument(
        "--test-tokens",
        type=common.positive_int,
        default=40_000,
        metavar="N",
        help="held-out tokens for the loss (default: 40000)",
    )
    parser.add_argument(
        "--length",
        type=common.int_at_least(2),
        default=128,
        help="training sequence length (default: 128)",
    )
    parser.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=32,
        help="batch size (default: 32)",
    )
    parser.add_argument(
        "--generate",
        type=common.positive_int,
        default=512,
        metavar="N",
        help="tokens generated for the tokens/s comparison (default: 512)",
    )


def tokens_per_second(model, prompt, num_tokens, use_cache):
    """Tokens/s of greedy ``model.generate``, timed after an untimed warm-up
    run (which compiles every shape the timed run uses); and the tokens."""
    model.generate(prompt, num_tokens, use_cache=use_cache)
    start = time.perf_counter()
    tokens = model.generate(prompt, num_tokens, use_cache=use_cache)
    elapsed = time.perf_counter() - start
    return tokens.size / elapsed, tokens


def run(args):
    import keras
    import numpy as np

    from attnkit.data import synthetic_text as st
    from attnkit.models.language_model import LanguageModel

    out = common.start(args, NAME)
    common.step("generating stories")
    train_ids = st.stream(args.tokens, args.seed)
    test_ids = st.stream(args.test_tokens, args.seed + 1_000_003)
    x, y = st.chunks(train_ids, args.length)
    x_test, y_test = st.chunks(test_ids, args.length)
    unigram = st.unigram_entropy(train_ids)
    bigram = st.bigram_cross_entropy(train_ids, test_ids)
    print(
        f"    {len(train_ids)} training and {len(test_ids)} held-out tokens, "
        f"vocabulary {len(st.VOCAB)}; {len(x)} training sequences of {args.length}"
    )
    print(f"    e.g. {st.decode(train_ids[:40])} ...")

    common.step("training")
    num_layers, hidden, heads, kv_heads, window = SIZES[args.size]
    prompt = test_ids[:PROMPT_TOKENS][None]  # (1, P)
    model = LanguageModel(
        vocab_size=len(st.VOCAB),
        max_length=max(args.length, prompt.shape[1] + args.generate),
        num_layers=num_layers,
        hidden_dim=hidden,
        num_query_heads=heads,
        num_key_value_heads=kv_heads,
        sliding_window=window,
        position_embedding=POSITIONS,
        name=NAME,
    )
    model.build()
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps - steps // 10), warmup_target=3e-3, warmup_steps=steps // 10
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(
        f"    {model.count_params():,} parameters: {num_layers} blocks, width {hidden}, "
        f"{heads} query / {kv_heads} key-value heads, window {window}, "
        f"{POSITIONS} positions; {steps} steps"
    )
    started = time.perf_counter()
    model.fit(
        x,
        y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=common.fit_verbosity(),
    )
    print(f"    trained in {time.perf_counter() - started:.0f} s", flush=True)

    common.step("evaluating on held-out stories")
    loss = float(model.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0))
    print(
        f"held-out loss: {loss:.3f} nats/token; unigram entropy {unigram:.3f}, "
        f"bigram {bigram:.3f} nats/token",
        flush=True,
    )

    common.step("generating")
    sample = model.generate(prompt, 40)
    print(f"prompt: {st.decode(prompt)}")
    print(f"greedy continuation: {st.decode(sample)}", flush=True)
    rates = {}
    for use_cache in (True, False):
        rates[use_cache], tokens = tokens_per_second(model, prompt, args.generate, use_cache)
        if use_cache:
            cached_tokens = tokens
    same = bool(np.array_equal(cached_tokens, tokens))
    print(
        f"tokens/s generating {args.generate} tokens: {rates[True]:.0f} with the cache, "
        f"{rates[False]:.0f} without ({rates[True] / rates[False]:.1f}x); "
        f"same greedy tokens: {'yes' if same else 'no'}",
        flush=True,
    )

    common.step("saving")
    common.report("model", common.save_model(model, out / f"{NAME}.keras"))
    return 0
