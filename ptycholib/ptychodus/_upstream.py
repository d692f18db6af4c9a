"""What the adapter takes from the ``ptychodus`` package (1.7), imported in one place.

A missing ptychodus raises one `ImportError` that says how to install it; an installed ptychodus
other than 1.7.x logs one warning, since the ``ModelCore`` injection relies on its internals.
`ptycholib.ptychodus.convert`, ``reconstructor`` and ``batch`` import from here; ``files`` and
``settings`` do not, so the readers and ``write_settings`` work without ptychodus.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    import ptychodus.api.io as ptychodus_io
    from ptychodus.api.object import Object
    from ptychodus.api.product import LossValue, Product
    from ptychodus.api.reconstruct import (
        ReconstructorLibrary,
        ReconstructOutput,
        TrainableReconstructor,
        TrainOutput,
        prepare_reconstruct_input,
    )
except ModuleNotFoundError as _error:  # pragma: no cover - depends on the environment
    if _error.name is None or not _error.name.startswith("ptychodus"):
        raise
    raise ImportError(
        "ptycholib.ptychodus needs ptychodus 1.7.0: pip install -e '.[ptychodus]' (or pip install ptychodus==1.7.0)"
    ) from None

__all__ = [
    "LossValue",
    "Object",
    "Product",
    "ReconstructOutput",
    "ReconstructorLibrary",
    "TESTED_PTYCHODUS",
    "TrainOutput",
    "TrainableReconstructor",
    "prepare_reconstruct_input",
    "ptychodus_io",
]

TESTED_PTYCHODUS = "1.7"
"""The ptychodus release series the adapter is tested with."""

logger = logging.getLogger(__name__)


def _check_ptychodus_version():
    try:
        found = version("ptychodus")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        return
    if not found.startswith(TESTED_PTYCHODUS + "."):
        logger.warning(
            "ptycholib's ptychodus adapter is tested with ptychodus %s.x but %s is installed; the "
            "ModelCore injection relies on ptychodus internals that may have changed.", TESTED_PTYCHODUS, found,
        )


_check_ptychodus_version()
