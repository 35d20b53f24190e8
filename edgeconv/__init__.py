"""edgeconv: depthwise-separable conv nets to phones and ARM boards."""
from .cost import Cost, count_macs, count_params
from .spec import BlockSpec, ModelSpec, parse_block
from .zoo import create_model, list_models, load_spec

__all__ = ["BlockSpec", "Cost", "ModelSpec", "count_macs", "count_params", "create_model",
           "list_models", "load_spec", "parse_block"]
