"""What every stage script shares: logging set-up, and bad input reported as one clear line."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from mrfer.data.faces import ImageError
from mrfer.data.records import DatasetError
from mrfer.params import ParamsError

# Errors that mean "your input or params are wrong": print the message, not a traceback.
USER_ERRORS = (ParamsError, DatasetError, ImageError, FileNotFoundError, ValueError, KeyError)


def run(main: Callable[[], None]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        main()
    except USER_ERRORS as e:
        logging.getLogger("mrfer").error("%s: %s", type(e).__name__, e)
        sys.exit(2)
