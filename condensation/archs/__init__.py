"""Architectures, one module each: the Flax module builder, the coupling spec, how widths are
read back from variables and the input shape. Importing this package registers all of them in
:data:`ARCHITECTURES`."""
from condensation.archs import cnn, mlp, mobilenetv2, residual_cnn
from condensation.archs.base import ARCHITECTURES, Architecture, architecture, register

__all__ = ["ARCHITECTURES", "Architecture", "architecture", "register",
           "cnn", "mlp", "mobilenetv2", "residual_cnn"]
