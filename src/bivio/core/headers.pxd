# Declarations for the compiled hot path (see src/bivio/compiled.py).
# Compiled, check_headers() runs on every response without an interpreter frame
# (1k instructions a request); cpdef, so the protocols that cimport it call it
# in C, without the Python call's argument tuple and lookup.
cpdef check_headers(object headers)
