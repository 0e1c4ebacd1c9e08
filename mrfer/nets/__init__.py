"""FER networks. Importing this package registers every model file with the registry (as timm
does), so `build(name, ...)` knows them all; checkpoints, weight import, covariance pooling, the
FSR generator and the clip GRU live beside them."""
from mrfer.nets import baseline_cnn, covpool, dlib_resnet, seresnet, torchvision_nets, vggface  # noqa: F401  (register)
from mrfer.nets.fernet import FERNet, to_device
from mrfer.nets.registry import available, build, default_options, register

__all__ = ["FERNet", "available", "build", "default_options", "register", "to_device"]
