"""How the compiled core was built; read by `engine preflight` (release build check)."""

cdef extern from *:
    """
    #ifndef CORE_EXT_DEBUG
    #define CORE_EXT_DEBUG 0
    #endif
    """
    int CORE_EXT_DEBUG

#: True when built with ENGINE_DEBUG=1 (-O0, linetrace): never trade on such a build.
DEBUG_BUILD = bool(CORE_EXT_DEBUG)

try:
    import cython as _cython
    CYTHON_VERSION = _cython.__version__
except ImportError:  # the build-time Cython need not be installed at run time
    CYTHON_VERSION = "unknown"
