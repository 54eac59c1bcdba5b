cimport cython
from bivio.core.streambase cimport StreamBase
from bivio.core.context cimport ServerContext
from bivio.adapters.asgi_scope cimport connection_scope

cdef class HTTPCycle:
    cdef public StreamBase stream
    cdef public bint body_done
    cdef public bint started
    cdef public bint complete
    cdef public bint more_trailers
    cdef public list trailers
    cdef public bint gone
    cdef public bint nowait

    @cython.locals(fields=dict)
    cpdef send(self, object message)
    @cython.locals(fields=dict)
    cpdef tuple _start(self, object message)

cdef class ASGIHandler:
    cdef public object app
    cdef public object root_path
    cdef public object state
    cdef public object _ws_handler
    cdef public ServerContext ctx
    cdef public bint ends_its_task

    cpdef dict scope(self, StreamBase stream)
    cpdef HTTPCycle cycle(self, StreamBase stream)
