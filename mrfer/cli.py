"""What every stage script and command shares: logging set-up, and a user error reported as one
clear line (exit 2). Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from mrfer import config
from mrfer.errors import MrferError

TRACE_ENV = "MRFER_PARAMS_TRACE"  # a file: each run appends the params keys it loaded and read


def run(main: Callable[[], None]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        main()
    except MrferError as e:
        logging.getLogger("mrfer").error("%s", e)
        sys.exit(2)
    if os.environ.get(TRACE_ENV):
        config.write_trace(os.environ[TRACE_ENV], sys.argv)
