"""prefork: a prefork server and process supervisor for Python network handlers.

A master process binds the listening sockets, forks a supervised pool of
workers that each run a selector loop over them, and turns Unix signals into
graceful stop, zero-downtime reload and live scaling.  See README.md.
"""

__version__ = "0.1.0"

from .compiled import install_switch as _install_switch

_install_switch()    # PREFORK_PURE_PYTHON=1: the hot path's sources, not its compiled twins
