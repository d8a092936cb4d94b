"""Networks, binary quantizers and the model registry.

Importing this package registers every model family; the imports are explicit so the registry's contents are
plain to see.
"""

from bnnflow.models import cifar_resnet, cnv, fc, resnet, vgg_small  # noqa: F401  (registers the families)
from bnnflow.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
