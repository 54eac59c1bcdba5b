cdef class StreamBase:
    cdef public str method
    cdef public str http_version
    cdef public str scheme
    cdef public bytes raw_path
    cdef public bytes query_string
    cdef public object headers
    cdef public object client
    cdef public object server
    cdef public object tls
    cdef public object body_length
    cdef public object upgrade
    cdef public object interface
    cdef public bint response_started
    cdef public bint response_complete
    cdef public bint disconnected
    cdef public bint sends_nowait

    cpdef start_response_nowait(self, object status, object headers, bint trailers=*)
    cpdef object send_body_nowait(self, object data, bint more)
