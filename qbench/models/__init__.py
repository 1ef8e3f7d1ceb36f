"""Models, registered by name and built by one factory (``create_model``), timm-style."""
from qbench.models.registry import MODELS, create_model, register_model
from qbench.models import classic, mlp, resnet, simplicity, vgg  # noqa: F401  (registration)

__all__ = ["MODELS", "create_model", "register_model"]
