"""Dataset readers, one module per on-disk format. Importing this package registers every reader
(each module below registers itself with `registry.register`); adding a reader means adding a
module and its line here.
"""
from mrfer.data.datasets import (afew, affectnet, affwild2, casia_webface, ckplus, expw, fer2013,  # noqa: F401
                                 ferplus, folders, jaffe, oulu, rafdb, sfew, vggface2)
from mrfer.data.datasets.registry import READERS, Reader, available, check_options, get, read, register

__all__ = ["READERS", "Reader", "available", "check_options", "get", "read", "register"]
