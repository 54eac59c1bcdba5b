cimport cython
from bivio.protocols.flow cimport StreamWaiters, WriteFlow
from bivio.core.context cimport ServerContext
from bivio.core.headers cimport check_headers

cdef class H1Connection

# The module's lookup tables, typed: compiled, a .get() on them is a C call, not a
# bound-method lookup (and the names are C variables, not module attributes).
cdef dict STATUS_LINES, _LENGTH_LINES, _LOWER, _LENGTHS, _METHODS
cdef frozenset _PROXY_HEADERS, _FRAMING_FIELDS, _HEAD_FIELDS
# Which of the connection's timeouts is due (H1Connection._timer_due).
cdef int _DUE_NONE, _DUE_HEADER, _DUE_BODY, _DUE_IDLE
# Read for every request (from Python 3.12 an untyped global is a dict lookup each time).
cdef object _monotonic

cpdef bytes status_line(int status)
cpdef bytes _without(bytes defaults, bytes name)

cdef class H1Stream(StreamWaiters):
    cdef public H1Connection conn
    cdef public bytes target
    cdef public bint keep_alive
    cdef public bint expect_continue
    cdef public bint head_only
    cdef public bint body_complete
    cdef public bytearray _body
    cdef public int _status
    cdef public object _resp_headers
    cdef public bint _head_written
    cdef public int _mode
    cdef public object _length
    cdef public bint _trailers
    cdef public long long sent
    cdef public double _started_at
    cdef public long long received

    cpdef _feed(self, bytes data)
    cpdef start_response_nowait(self, object status, object headers, bint trailers=*)
    cpdef int _send_body_now(self, object data, bint more) except -1
    cpdef int _write_end(self, object out, bint more) except -1
    cpdef object send_body_nowait(self, object data, bint more)
    @cython.locals(conn=H1Connection, status=cython.int, parts=list, defaults=bytes, lname=bytes,
                   name=bytes, value=bytes, line=bytes, lowered=dict)
    cpdef bytes _head(self, object known_length)
    cpdef _finish(self)
    cpdef close_after_response(self)
    cpdef abort(self)


cdef class H1Connection(WriteFlow):
    cdef public object proxied
    cdef public ServerContext ctx
    cdef public object config
    cdef public object parser
    cdef public object client
    cdef public object server
    cdef public str scheme
    cdef public object tls
    cdef public bint trusted_proxy
    cdef public bint _reading_paused
    cdef public object _timer
    cdef public double _timer_when
    cdef public double _timer_at
    cdef public int _timer_due
    cdef public H1Stream _current
    cdef public object _pending
    cdef public H1Stream _parsing
    cdef public bytes _url
    cdef public list _headers
    cdef public Py_ssize_t _head_bytes
    cdef public bint _in_head
    cdef public bint _closed
    cdef public object _deferred_error
    cdef public bint _upgrade_seen
    cdef public bytes _upgrade_tail
    cdef public object _h2c
    cdef public H1Stream _upgrading
    cdef public Py_ssize_t _raw_left
    cdef public bint _eof
    cdef public bint _served
    cdef public bint _intake_held
    cdef public bint _linger_on_close
    cdef public bytes _chunk
    cdef public object _line_parts
    cdef public Py_ssize_t _line_room
    cdef public Py_ssize_t _line_cap
    cdef public bint _read_between
    cdef public bint _line_starts_read
    cdef public Py_ssize_t _max_line
    cdef public Py_ssize_t _max_fields
    cdef public Py_ssize_t _max_field_size
    cdef public double _body_timeout
    cdef public Py_ssize_t _head_limit
    cdef public double _keep_alive

    # httptools' callbacks per request line and field: typed, the bytes methods are C calls.
    cpdef on_url(self, bytes url)
    cpdef on_header(self, bytes name, bytes value)
    cpdef _start(self, H1Stream stream)
    cpdef bint closing_after_current(self, H1Stream stream)
    cpdef _response_done(self, H1Stream stream)
    cpdef _next_request(self, H1Stream stream)
    cpdef _body_consumed(self, H1Stream stream)
    cpdef _set_timer(self, double delay, int due)
    cpdef _cancel_timer(self)
    cpdef _pause_reading(self)
    cpdef _resume_reading(self)
    cpdef close_now(self)
    cpdef bint is_idle(self)
    cpdef _arm_body_timer(self)

cdef _init_stream(H1Stream self, H1Connection conn, str method, str version, bytes target,
                  object headers, bint keep_alive, bint expect_continue, object body_length)
cdef str _version_on_line(bytes line, Py_ssize_t at)
cdef bint _origin_form(bytes target)
