from bivio.protocols.flow cimport WriteFlow

cdef class WebSocket(WriteFlow):
    cdef public object _on_accept
    cdef public object on_lost
    cdef public double _ping_interval
    cdef public Py_ssize_t _queue_high
    cdef public Py_ssize_t _queue_low
    cdef public double _ping_timeout
    cdef public object _proto
    cdef public Py_ssize_t _max_size
    cdef public object _request
    cdef public list subprotocols
    cdef public object handshake_error
    cdef public bint accepted
    cdef public object _messages
    cdef public object _receiver
    cdef public bint _frag_text
    cdef public list _frag_parts
    cdef public Py_ssize_t _frag_size
    cdef public object _decoder
    cdef public object _failed_code
    cdef public bint _lost
    cdef public Py_ssize_t _unsent
    cdef public bint _reading_paused
    cdef public object _ping_timer
    cdef public object _pong_timer
    cdef public object _ping_payload
    cdef public object _close_timer

    cpdef _on_frame(self, object frame)
    cpdef _append_text(self, object data, bint final)
    cpdef _deliver(self, object message)
    cpdef _wake(self)
    cpdef _flush(self)
    cpdef _write_chunks(self, list chunks)
    cpdef _flush_later(self)
    cpdef _half_close(self)
    cpdef _fail(self, int code, str reason)
    cpdef _schedule_ping(self)
    cpdef _pause_reading(self)
    cpdef object receive_nowait(self)
    cpdef bint send_nowait(self, object data) except -1
    cpdef _resume_reading(self)
