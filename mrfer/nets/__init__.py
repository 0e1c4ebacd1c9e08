"""FER networks: a registry of backbones (`build`), covariance pooling, and weight import."""
from mrfer.nets.registry import FERNet, available, build, default_options, register, to_device
from mrfer.nets.weights import (import_weights, load_torchvision, load_vggface,
                                load_vggface2_senet)

__all__ = ["FERNet", "available", "build", "default_options", "register", "import_weights",
           "load_torchvision", "load_vggface", "load_vggface2_senet", "to_device"]
