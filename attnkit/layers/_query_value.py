"""The ``[query, value(, key)]`` input contract shared by the list-input layers.

Shape legend: B batch, Tq query length, Tv key/value length, Dq/Dv/Dk
feature sizes, Di step-input size.

A list-input layer is called on ``[query, value]`` or ``[query, value, third]``
with masks ``[query_mask, value_mask(, third_mask)]``. Two mixins, to put before
``keras.layers.Layer`` in the bases:

- ``QueryValueInputsMixin``: ``_validate_inputs`` (the list, the ranks, the
  key/value lengths, the mask list), ``_unpack_inputs`` and ``compute_mask``
  (the query mask passes on to the output).
- ``QueryValueMixin``: the above plus ``compute_output_shape`` and
  ``compute_output_spec``: output ``(..., Tq, Dv)`` and, with
  ``return_attention_scores``, weights ``(..., Tq, Tv)``. For layers whose
  output shape follows from the input shapes alone; a layer that must trace
  its ``call`` symbolically (e.g. to reject an unknown Tq) uses the inputs
  mixin only.

Two class attributes describe a layer's inputs:

- ``_third_input``: the name of the optional third entry, ``"key"`` (a key of
  the value's length, the value when absent), another name (an input with no
  length constraint, ``None`` when absent), or ``None`` (exactly two entries).
- ``_any_batch_rank``: whether inputs may have any rank >= 3, all the same
  (leading batch axes, ``(..., T, D)``), rather than exactly ``(B, T, D)``.
"""

from __future__ import annotations

import inspect

import keras
from keras import ops

from attnkit.layers._base import check_mask

_LEGEND = {
    "query": "(B, Tq, Dq)",
    "value": "(B, Tv, Dv)",
    "key": "(B, Tv, Dk)",
    "inputs": "(B, Tq, Di)",
}


class QueryValueInputsMixin:
    """Validates and unpacks ``[query, value(, third)]`` inputs and masks."""

    #: The optional third list entry: "key", another name, or None for none.
    _third_input: str | None = "key"
    #: Whether inputs may be (..., T, D) with any rank >= 3 rather than (B, T, D).
    _any_batch_rank = True

    @property
    def _input_names(self):
        return ("query", "value") + ((self._third_input,) if self._third_input else ())

    def _validate_inputs(self, inputs, mask=None, *, arg_name="inputs"):
        """The input shapes, as tuples, after checking ``inputs`` and ``mask``.

        ``inputs`` is the list of tensors or of shapes (in ``build``);
        ``arg_name`` names it in the message. Raises ``ValueError``.
        """
        layer = type(self).__name__
        names = self._input_names
        if (
            not isinstance(inputs, (list, tuple))
            or not 2 <= len(inputs) <= len(names)
            or any(x is None or isinstance(x, int) for x in inputs)
        ):
            raise ValueError(
                f"{layer} must be called on a list {_forms(names)}. Received: {arg_name}={inputs!r}"
            )
        shapes = [tuple(x) if _is_shape(x) else tuple(x.shape) for x in inputs]
        if self._any_batch_rank:
            ranks = {len(s) for s in shapes}
            if len(ranks) != 1 or min(ranks) < 3:
                raise ValueError(
                    f"{layer} inputs must all have the same rank, at least 3 "
                    f"(batch, time, features). Received: input shapes={shapes}"
                )
        elif any(len(s) != 3 for s in shapes):
            expected = [f"{n} {_LEGEND.get(n, '(B, T, D)')}" for n in names[: len(shapes)]]
            raise ValueError(f"{layer} expects {_join(expected)}. Received: input shapes={shapes}")
        if self._third_input == "key" and len(shapes) > 2:
            value_length, key_length = shapes[1][-2], shapes[2][-2]
            if key_length is not None and value_length is not None and key_length != value_length:
                raise ValueError(
                    f"{layer}: key and value must have the same length. "
                    f"Received: value.shape={shapes[1]}, key.shape={shapes[2]}"
                )
        if mask is not None and (
            not isinstance(mask, (list, tuple)) or not 2 <= len(mask) <= len(names)
        ):
            mask_names = tuple(f"{n}_mask" for n in names)
            raise ValueError(
                f"{layer} mask must be a list {_forms(mask_names)}. Received: mask={mask!r}"
            )
        if mask is not None:
            # Each mask has its input's shape without the feature axis.
            for i, (m, shape) in enumerate(zip(mask, shapes, strict=False)):
                legend = _LEGEND.get(names[i], "(B, T, D)").rsplit(",", 1)[0] + ")"
                if not self._any_batch_rank or len(shape) == 3:
                    legend = f"{legend} (the {names[i]} mask)"
                else:
                    legend = f"{names[i]}.shape[:-1] (the {names[i]} mask)"
                check_mask(m, f"mask[{i}]", shape[:-1], legend)
        return shapes

    def _unpack_inputs(self, inputs, mask=None):
        """``(query, value, third), (query_mask, value_mask, third_mask)``.

        The third is the value when it is a key and absent, else None; masks
        absent from ``mask`` (or all, without it) are None.
        """
        query, value = inputs[0], inputs[1]
        if len(inputs) > 2:
            third = inputs[2]
        else:
            third = value if self._third_input == "key" else None
        masks = list(mask) if mask is not None else [None, None]
        third_mask = masks[2] if len(masks) > 2 else None
        return (query, value, third), (masks[0], masks[1], third_mask)

    def compute_mask(self, inputs, mask=None):
        self._validate_inputs(inputs, mask)
        if mask is None or mask[0] is None:
            return None
        return ops.convert_to_tensor(mask[0])  # the query mask (..., Tq)


class QueryValueMixin(QueryValueInputsMixin):
    """The input contract plus the output shape (..., Tq, Dv) and weights (..., Tq, Tv)."""

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], input_shape[1][-1])  # (..., Tq, Dv)

    def compute_output_spec(self, inputs, *args, **kwargs):
        # The call's own signature says where `mask` and `return_attention_scores` are.
        arguments = inspect.signature(self.call).bind(inputs, *args, **kwargs).arguments
        self._validate_inputs(inputs, arguments.get("mask"))
        (query, value, key), _ = self._unpack_inputs(inputs)
        output = keras.KerasTensor(
            self.compute_output_shape([query.shape, value.shape]), dtype=self.compute_dtype
        )
        if arguments.get("return_attention_scores", False):
            scores_shape = (*query.shape[:-1], (value if key is None else key).shape[-2])
            return output, keras.KerasTensor(
                scores_shape, dtype=self.compute_dtype
            )  # (..., Tq, Tv)
        return output


def _forms(names):
    # ("query", "value", "key") -> "[query, value] or [query, value, key]"
    return " or ".join(f"[{', '.join(names[:n])}]" for n in range(2, len(names) + 1))


def _join(parts):
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _is_shape(x):
    return isinstance(x, (list, tuple)) and all(d is None or isinstance(d, int) for d in x)
