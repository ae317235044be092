"""Imported once by the multiprocessing fork server before it forks workers.

Workers forked from the server start with the step's module imported (see
:func:`longctx.data.workers.worker_context`) and the run's tokenizer already parsed
(``LONGCTX_PRELOAD_TOKENIZER``), instead of paying ~0.5 CPU-s each for a fresh interpreter.
The server never encodes, so no tokenizer thread pool exists before the fork.
"""

from __future__ import annotations

import os

from longctx.data.tokenizer import rust_tokenizer

PRELOAD_ENV = "LONGCTX_PRELOAD_TOKENIZER"

_path = os.environ.get(PRELOAD_ENV)
if _path and os.path.isfile(_path):
    rust_tokenizer(_path)
