from bivio.core.streambase cimport StreamBase

cdef class WriteFlow:
    cdef public object loop
    cdef public object transport
    cdef public bint write_paused
    cdef public bint send_timed_out
    cdef public list _drain_waiters
    cdef public double _send_timeout
    cdef public object _send_timer
    cdef public object counts

    cpdef _release_writers(self)

cdef class StreamWaiters(StreamBase):
    cdef public list _waiters
    cpdef _wake(self)
