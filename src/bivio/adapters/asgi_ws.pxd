cimport cython

cdef class WebSocketCycle:
    cdef public object stream
    cdef public object ws
    cdef public int state
    cdef public bint connect_sent
    cdef public bint disconnected
    cdef public bint response_done
    cdef public bint nowait

    @cython.locals(fields=dict)
    cpdef send(self, object message)

cdef class ASGIWebSocketHandler:
    cdef public object app
    cdef public object root_path
    cdef public object state
