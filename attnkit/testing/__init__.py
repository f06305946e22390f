"""Test support: the float64 reference and the shared layer contract."""

from attnkit.testing.contract import run_layer_contract as run_layer_contract
from attnkit.testing.reference import reference_attention as reference_attention
from attnkit.testing.reference import reference_mask as reference_mask
