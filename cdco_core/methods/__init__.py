"""Training methods. A method is a folder ``cdco_core/methods/<name>/`` whose ``__init__`` registers it
(:func:`~cdco_core.methods.registry.register_method`: name, factory, settings class), plus one import below.

The import order is the registry order, which ``--methods all`` follows: CDCO, the baselines, CA-MTL, EGO-PLM,
then CDCO's ablations (after the methods they are compared with).
"""

# isort: off
from cdco_core.methods import cdco  # noqa: F401  (each import registers that folder's methods)
from cdco_core.methods import baselines  # noqa: F401
from cdco_core.methods import ca_mtl  # noqa: F401
from cdco_core.methods import ego_plm  # noqa: F401
from cdco_core.methods.cdco import ablations  # noqa: F401
# isort: on
from cdco_core.methods.registry import METHODS, expand_methods, get_method, list_methods, register_method

__all__ = ["METHODS", "expand_methods", "get_method", "list_methods", "register_method"]
