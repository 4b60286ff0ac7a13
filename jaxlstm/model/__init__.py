"""The model: a TFLite model's subgraphs as Python objects, run in JAX, built layer by layer."""

from jaxlstm.model.builder import ModelBuilder as ModelBuilder
from jaxlstm.model.builder import Ref as Ref
from jaxlstm.model.graph import NO_TENSOR as NO_TENSOR
from jaxlstm.model.graph import Model as Model
from jaxlstm.model.graph import Operator as Operator
from jaxlstm.model.graph import Subgraph as Subgraph
from jaxlstm.model.graph import Tensor as Tensor
from jaxlstm.model.loop_fusion import LoopFusion as LoopFusion
from jaxlstm.model.loop_fusion import fuse_while_loops as fuse_while_loops

__all__ = (
    "NO_TENSOR",
    "LoopFusion",
    "Model",
    "ModelBuilder",
    "Operator",
    "Ref",
    "Subgraph",
    "Tensor",
    "fuse_while_loops",
)
