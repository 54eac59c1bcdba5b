from bivio.core.streambase cimport StreamBase

# Declarations for the compiled hot path (see src/bivio/compiled.py).
# connection_scope() builds each request's scope dict without an interpreter
# frame (1.6k instructions a request); _Ready is READY's extension type.
cdef class _Ready:
    pass


cpdef dict connection_scope(str kind, StreamBase stream, str scheme, object root_path,
                            object state, object extensions)
