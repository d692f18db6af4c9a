"""ptycholib as a reconstructor library of ptychodus 1.7.0, and readers of ptychodus's files (SPEC sections 9, 10).

ptychodus calls this package directly (SPEC Q3: no server, no subprocess of our own). One module
per job:

- `~ptycholib.ptychodus.files`: ptychodus's files. `load_ptychodus_h5` / `iter_ptychodus_h5` read a
  ``diffraction.h5`` + ``product.h5`` pair with h5py alone, `load_ptychodus_npz` its PtychoPINN
  training-data export, `load_reconstruct_input` a folder through ptychodus's own readers;
  `ptychodus_px_to_object_px` / `ptychodus_positions_to_px` move positions to our pixel convention
  (``+0.5`` for even N, SPEC section 10).
- `~ptycholib.ptychodus.settings`: `PtycholibSettings` exposes our `ModelConfig`, `TrainingConfig`
  and `InferenceConfig` fields in ptychodus's settings registry (groups ``PtycholibModel``,
  ``PtycholibTraining``, ``PtycholibInference``, `SETTINGS_GROUPS`, with our defaults), so they
  live in ``settings.ini`` and in the GUI; `write_settings` writes such a file.
- `~ptycholib.ptychodus.convert`: `ptycho_data_from_input` (what ptychodus passes a reconstructor
  -> `ptycholib.data.PtychoData`) and `product_from_object` (our object -> a ptychodus
  ``Product``); the conversions are listed in that module's docstring.
- `~ptycholib.ptychodus.reconstructor`: `PtycholibReconstructorLibrary`, a ``ReconstructorLibrary``
  named ``ptycholib`` holding one `PtycholibReconstructor` (a ``TrainableReconstructor``) per
  installed backend and model type. Algorithm keys: ``ptycholib_torch``, ``ptycholib_tensorflow``,
  ``ptycholib_torch-supervised``, ``ptycholib_tensorflow-supervised`` (`algorithm_keys`).
- `~ptycholib.ptychodus.batch`: `injected` / `create_model_core` add the library to ptychodus's
  ``ModelCore``, whose list of libraries is hard-coded, by subclassing
  ``ptychodus.model.core.ProcessingCore`` (the route until ptychodus lists ptycholib upstream);
  `run_ptychodus` runs the ptychodus program with it, and `run_batch` ptychodus's own batch mode,
  turning its silent outcomes (unknown algorithm, missing model, exit status 0 with no output)
  into errors. ``ptycholib ptychodus`` is its command line.

Importing this package is cheap and needs no ``ptychodus``: the readers and the settings are
imported with it, while the names from ``convert``, ``reconstructor`` and ``batch`` load on first
use (`__getattr__`), which imports ptychodus 1.7 (an `ImportError` with install instructions if
it is missing) and the training workflow.
"""

from __future__ import annotations

import importlib

from ptycholib.ptychodus.files import (
    TRAINING_DATA_NAME,
    iter_ptychodus_h5,
    load_ptychodus_h5,
    load_ptychodus_npz,
    load_reconstruct_input,
    ptychodus_positions_to_px,
    ptychodus_px_to_object_px,
)
from ptycholib.ptychodus.settings import SETTINGS_GROUPS, PtycholibSettings, write_settings

__all__ = [
    "LIBRARY_NAME",
    "MODEL_FILE_EXTENSION",
    "MODEL_FILE_FILTER",
    "SETTINGS_GROUPS",
    "TRAINING_DATA_FILE_FILTER",
    "TRAINING_DATA_NAME",
    "BatchResult",
    "PtychodusBatchError",
    "PtycholibReconstructor",
    "PtycholibReconstructorLibrary",
    "PtycholibSettings",
    "algorithm_keys",
    "create_model_core",
    "injected",
    "iter_ptychodus_h5",
    "load_ptychodus_h5",
    "load_ptychodus_npz",
    "load_reconstruct_input",
    "product_from_object",
    "ptycho_data_from_input",
    "ptychodus_positions_to_px",
    "ptychodus_px_to_object_px",
    "run_batch",
    "run_ptychodus",
    "write_settings",
]

# name -> submodule, for the names that need the ptychodus package (loaded on first use)
_LAZY = {
    "product_from_object": "convert",
    "ptycho_data_from_input": "convert",
    "LIBRARY_NAME": "reconstructor",
    "MODEL_FILE_EXTENSION": "reconstructor",
    "MODEL_FILE_FILTER": "reconstructor",
    "TRAINING_DATA_FILE_FILTER": "reconstructor",
    "PtycholibReconstructor": "reconstructor",
    "PtycholibReconstructorLibrary": "reconstructor",
    "algorithm_keys": "reconstructor",
    "BatchResult": "batch",
    "PtychodusBatchError": "batch",
    "create_model_core": "batch",
    "injected": "batch",
    "run_batch": "batch",
    "run_ptychodus": "batch",
}


def __getattr__(name):
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
