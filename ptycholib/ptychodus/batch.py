"""Running ptychodus with ptycholib in it: ``ModelCore`` injection, the program, and batch mode.

ptychodus 1.7.0 hard-codes its reconstructor libraries in ``ModelCore.__init__``. `injected` adds
`PtycholibReconstructorLibrary` to every ``ModelCore`` built inside it by subclassing
``ptychodus.model.core.ProcessingCore``; this is the route until ptychodus lists ptycholib
upstream. On top of it:

- `create_model_core` builds a ``ModelCore`` with the library in it;
- `run_ptychodus` runs the ``ptychodus`` program itself (GUI or ``-b``) with the library injected;
- `run_batch` runs ptychodus's own batch mode (``reconstruct`` / ``train`` on a standard input
  folder) and turns ptychodus's silent outcomes (unknown algorithm, missing model, exit status 0
  with no output) into errors. ``ptycholib ptychodus`` is its command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from ptycholib import archive
from ptycholib.ptychodus.files import check_ptychodus_pair
from ptycholib.ptychodus.reconstructor import LIBRARY_NAME, MODEL_FILE_EXTENSION, PtycholibReconstructorLibrary
from ptycholib.ptychodus.settings import read_algorithm

__all__ = [
    "BatchResult",
    "PtychodusBatchError",
    "create_model_core",
    "injected",
    "run_batch",
    "run_ptychodus",
]


# ----------------------------------------------------------------------------------------------
# ModelCore injection


def _processing_core_class(base):
    class ProcessingCoreWithPtycholib(base):
        """ptychodus's ProcessingCore with `PtycholibReconstructorLibrary` appended to its libraries."""

        def __init__(self, task_manager, settings_registry, product_api, algorithm_libraries):
            libraries = list(algorithm_libraries)
            found = [lib for lib in libraries if isinstance(lib, PtycholibReconstructorLibrary)]
            if found:
                self.ptycholib_library = found[0]
            else:
                self.ptycholib_library = PtycholibReconstructorLibrary(settings_registry)
                libraries.append(self.ptycholib_library)
            super().__init__(task_manager, settings_registry, product_api, libraries)

    ProcessingCoreWithPtycholib.ptycholib_base = base
    return ProcessingCoreWithPtycholib


@contextlib.contextmanager
def injected():
    """Add ptycholib to every ``ptychodus.model.core.ModelCore`` built inside this block.

    ptychodus 1.7.0 hard-codes its reconstructor libraries in ``ModelCore.__init__`` and passes them
    to ``ProcessingCore``; this swaps ``ptychodus.model.core.ProcessingCore`` for a subclass that
    appends `PtycholibReconstructorLibrary`, and restores it on exit. The processing core of a
    ModelCore built here has the library as ``processing_core.ptycholib_library``.

    Examples
    --------
    >>> with injected():                                  # doctest: +SKIP
    ...     model = ModelCore()
    >>> "ptycholib_torch" in model.processing_core.processing_api.available_reconstructors()  # doctest: +SKIP
    True
    """
    from ptychodus.model import core

    original = core.ProcessingCore
    if hasattr(original, "ptycholib_base"):  # already injected by an enclosing block
        yield
        return
    core.ProcessingCore = _processing_core_class(original)
    try:
        yield
    finally:
        core.ProcessingCore = original


def create_model_core(settings_file=None, *, log_level=logging.WARNING):
    """Build a ptychodus ``ModelCore`` with ptycholib's library in it (see `injected`).

    Use it as a context manager (``with create_model_core() as model: ...``) like ``ModelCore``.
    """
    from ptychodus.model import core

    with injected():
        return core.ModelCore(None if settings_file is None else Path(settings_file), log_level=log_level)


# ----------------------------------------------------------------------------------------------
# the ptychodus program and its batch mode


def run_ptychodus(argv):
    """Run the ``ptychodus`` program itself (GUI, or ``-b`` batch mode) with ptycholib injected.

    Parameters
    ----------
    argv : sequence of str
        ptychodus's command-line arguments, e.g. ``["-b", "reconstruct", "-i", IN, "-o", OUT]``; the
        GUI needs PyQt5 (``pip install ptychodus[gui]``).

    Returns
    -------
    int
        ptychodus's exit status. Unlike `run_batch` nothing is checked: an unknown algorithm still
        exits 0 without output, as in plain ptychodus.
    """
    import sys

    import ptychodus.__main__ as application

    saved = sys.argv
    sys.argv = ["ptychodus", *map(str, argv)]
    try:
        with injected():
            return int(application.main())
    finally:
        sys.argv = saved


class PtychodusBatchError(RuntimeError):
    """ptychodus's batch mode ran but failed or produced nothing; the message says why."""


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What `run_batch` did.

    Attributes
    ----------
    action : str
        ``"reconstruct"`` or ``"train"``.
    algorithm : str
        Algorithm key that ran.
    output_dir : Path
    products : list of Path
        ``product.NNNNNN.h5`` files written by this run (reconstruct); the last is the result.
    model_path : Path or None
        ``wts.h5.zip`` written by a ptycholib training run.
    seconds : float
        Wall-clock time of the ptychodus run.
    """

    action: str
    algorithm: str
    output_dir: Path
    products: list
    model_path: Path | None
    seconds: float


def run_batch(action, input_dir, output_dir, *, algorithm=None, model_path=None, settings_file=None,
              log_level=logging.WARNING):
    """Run ptychodus's batch mode (``ptychodus -b ACTION -i IN -o OUT``) with ptycholib injected.

    Parameters
    ----------
    action : {"reconstruct", "train"}
    input_dir : str or Path
        Standard ptychodus folder: ``diffraction.h5``, ``product.h5``, optional ``settings.ini`` and,
        for reconstruct, ``model.zip``.
    output_dir : str or Path
        Where ptychodus writes ``product.NNNNNN.h5`` (reconstruct) or the model (train).
    algorithm : str, optional
        Algorithm key; overrides ``[Processing] Algorithm`` of the settings. Default: the settings'
        value (``IN/settings.ini``, then ``settings_file``), else ``ptycholib_torch``.
    model_path : str or Path, optional
        Model to reconstruct with instead of ``IN/model.zip``.
    settings_file : str or Path, optional
        Settings read before ``IN/settings.ini`` (which ptychodus reads last), like ``ptychodus -s``.
    log_level : int
        Python logging level for ptychodus's console log.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Unknown action or algorithm (ptychodus would silently run nothing and exit 0), or both
        ``model_path`` and ``IN/model.zip``.
    FileNotFoundError
        Missing input files, or no model for a ptycholib reconstruction.
    PtychodusBatchError
        ptychodus returned a non-zero status, or a successful run wrote no output.
    """
    action = str(action).lower()
    if action not in ("reconstruct", "train"):
        raise ValueError(f"action={action!r}; ptychodus's batch mode knows 'reconstruct' and 'train'.")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist.")
    missing = [name for name in ("diffraction.h5", "product.h5") if not (input_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{input_dir} lacks {' and '.join(missing)}; ptychodus's batch mode needs both.")
    check_ptychodus_pair(input_dir / "diffraction.h5", input_dir / "product.h5")  # before ptychodus reads them
    if settings_file is not None and not Path(settings_file).is_file():
        raise FileNotFoundError(f"settings file {settings_file} does not exist.")
    chosen = (algorithm or read_algorithm(input_dir / "settings.ini")
              or read_algorithm(settings_file) or f"{LIBRARY_NAME}_torch").strip()
    default_model = input_dir / f"model{MODEL_FILE_EXTENSION}"
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"model {model_path} does not exist.")
        if default_model.exists() and default_model.resolve() != model_path.resolve():
            raise ValueError(
                f"both --model {model_path} and {default_model} exist, and ptychodus's batch mode always loads "
                f"{default_model.name} from the input folder; remove one of them."
            )

    model = create_model_core(settings_file, log_level=log_level)
    with model:
        processing_api = model.processing_core.processing_api
        available = list(processing_api.available_reconstructors())
        key = chosen.casefold()
        if key not in available:
            ours = [k for k in available if k.startswith(LIBRARY_NAME + "_")]
            hint = "" if ours else " (no ptycholib backend is installed: pip install -e '.[torch]' or '.[tf]')"
            raise ValueError(
                f"unknown ptychodus algorithm {chosen!r}; available here: {', '.join(available) or 'none'}{hint}."
            )
        processing_api.set_reconstructor_if_provided(key)
        is_ours = key.startswith(LIBRARY_NAME + "_")
        if action == "reconstruct" and is_ours:
            if model_path is not None:
                processing_api.load_model_from_file(model_path)
            elif not default_model.is_file():
                raise FileNotFoundError(
                    f"no model to reconstruct with: put a ptycholib model archive at {default_model} or pass "
                    f"model_path (--model). Train one with 'ptycholib ptychodus train' or 'ptycholib train'."
                )
        registry = model.settings_registry
        open_settings = registry.open_settings

        def open_settings_then_choose(path):
            open_settings(path)
            processing_api.set_reconstructor_if_provided(key)  # the explicit choice wins over IN/settings.ini

        registry.open_settings = open_settings_then_choose
        started = time.time()
        tic = time.perf_counter()
        try:
            status = model.batch_mode_execute(action, input_dir, output_dir)
        finally:
            registry.open_settings = open_settings
        seconds = time.perf_counter() - tic
        last_error = processing_api.task_monitor.get_last_error()

    if int(status) != 0:
        reason = f": {type(last_error).__name__}: {last_error}" if last_error is not None else "; see ptychodus's log above"
        raise PtychodusBatchError(f"ptychodus batch {action} with {key} failed (exit status {int(status)}){reason}")
    products, model_out = [], None
    if action == "reconstruct":
        products = sorted(p for p in output_dir.glob("product.*.h5") if p.stat().st_mtime >= started - 1)
        if not products:
            raise PtychodusBatchError(
                f"ptychodus batch reconstruct with {key} exited 0 but wrote no product.NNNNNN.h5 in {output_dir}."
            )
    elif is_ours:
        model_out = output_dir / archive.DEFAULT_NAME
        if not model_out.is_file():
            raise PtychodusBatchError(f"ptychodus batch train with {key} exited 0 but wrote no {model_out}.")
    return BatchResult(action=action, algorithm=key, output_dir=output_dir, products=products,
                       model_path=model_out, seconds=seconds)
