"""Test support: the layer registry, the shared layer contract, the float64 references."""

from attnkit.testing.contract import run_layer_contract as run_layer_contract
from attnkit.testing.reference import reference_attention as reference_attention
from attnkit.testing.reference import reference_mask as reference_mask
from attnkit.testing.registry import EXAMPLES as EXAMPLES
from attnkit.testing.registry import LayerExample as LayerExample
from attnkit.testing.registry import build_model as build_model
from attnkit.testing.registry import contract_arguments as contract_arguments
