"""Models, registered by name and built by one factory (``create_model``), timm-style."""
from qbench.models.registry import MODELS, create_model, register_model
from qbench.models import mlp, vgg, resnet  # noqa: F401  (registration)

__all__ = ["MODELS", "create_model", "register_model"]
