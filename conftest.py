"""Doctest collection over the ptycholib package (``testpaths`` + ``--doctest-modules``, pyproject.toml).

One rule for every module, wherever it lives: a module whose import fails because an optional
package (torch, tensorflow, ptychodus, PtyLab, ...) is not installed is left out of the doctest run,
as its tests are skipped. Any other import error still fails collection. Under
``PTYCHOLIB_REQUIRE_EXTRAS=1`` (CI) nothing is left out: a missing extra fails the run.
The test suite's own hooks and fixtures are in tests/conftest.py.
"""

import importlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "ptycholib"


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _missing_optional_package(path):
    """Name of the non-ptycholib package whose absence stops ``path`` from importing, else None.

    The ModuleNotFoundError may be wrapped (``raise ImportError("... needs X ...") from error``), so
    the chain of causes is searched. Any other failure is left to pytest's own import, which reports it.
    """
    try:
        importlib.import_module(_module_name(path))
    except ImportError as error:
        while error is not None:
            top = (getattr(error, "name", None) or "").partition(".")[0]
            if isinstance(error, ModuleNotFoundError) and top and top != "ptycholib":
                return top
            error = error.__cause__ or error.__context__
    except Exception:  # noqa: BLE001 - reported by pytest when it imports the module itself
        return None
    return None


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path)
    if path.suffix != ".py" or path.name == "__main__.py" or PACKAGE not in path.resolve().parents:
        return None  # pytest's doctest collection never imports __main__.py (it would run the CLI)
    if os.environ.get("PTYCHOLIB_REQUIRE_EXTRAS", "") not in ("", "0"):
        return None
    return True if _missing_optional_package(path.resolve()) else None
