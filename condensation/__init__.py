"""condensation: reduce networks trained from small initialization by merging aligned neurons."""
from condensation.api import condense
from condensation.condense import (
    assign_groups,
    condense_variables,
    cosine_similarity,
    input_vectors,
    merge_group,
    split_unit,
)
from condensation.graph import discover
from condensation.network import (
    Network,
    check_shapes,
    count_flops,
    count_params,
    reduce_network,
    widths_of,
)
from condensation.reduce_model import ReducedModel, load_reduced, reduce_model

__all__ = [
    "condense", "assign_groups", "condense_variables", "cosine_similarity", "input_vectors",
    "merge_group", "split_unit", "Network", "check_shapes", "count_flops", "count_params",
    "reduce_network", "widths_of", "discover", "reduce_model", "load_reduced", "ReducedModel",
]
