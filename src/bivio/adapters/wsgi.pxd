cimport cython
from bivio.core.context cimport ServerContext
from bivio.core.streambase cimport StreamBase

# Module globals read on every request: typed, read as C variables. (From Python 3.12
# Cython looks an untyped global up in the module's dict at every read: its cache
# keyed on the dict's version is gone.)
cdef dict _KEYS, _PROTOCOLS, _PORTS, _ENCODED, _CODES
cdef Py_ssize_t _PORTS_MAX, _ENCODED_MAX, _CODES_MAX
cdef bytes _CONTENT_LENGTH

cdef class _SpoolBudget:
    cdef public object lock
    cdef public long long left


cdef class ErrorStream:
    cdef str _partial
    cdef dict __dict__
    cdef object __weakref__


cdef class WSGIInput:
    cdef object _exchange
    cdef bytearray _buf
    cdef bint _eof
    cdef dict __dict__
    cdef object __weakref__


cdef class _Wakeups:
    cdef public object loop
    cdef public object ready
    cdef public bint scheduled

    cpdef post(self, object fut)
    cpdef drain(self)


cdef class _Exchange:
    cdef public object loop
    cdef public _Wakeups wakeups
    cdef public StreamBase stream
    cdef public object lock
    cdef public object cond
    cdef public list items
    cdef public long long pending
    cdef public object waiter
    cdef public bint gone
    cdef public object result
    cdef public bint has_result
    cdef public bint thread_waiting
    cdef public object spool
    cdef public long long spool_cap
    cdef public long long spooled
    cdef public bint spooling
    cdef public bint thread_done
    cdef public bint pump_done
    cdef public object on_done
    cdef public bint released
    cdef public _SpoolBudget budget
    cdef public bint blocked
    cdef public int file_fd
    cdef public bint nowait
    cdef public ServerContext ctx

    cpdef _finish(self, tuple items, bint final, long long size)
    cpdef _drop_file(self)
    cpdef _wake_loop(self, object fut)
    cpdef release(self)
    cpdef end_pump(self)
    cpdef _give_back(self)
    cpdef _answer(self, object result)
    cpdef _abandon(self, object error=*)
    cpdef _sent(self, long long size)
    cpdef _count_sent(self, long long size, bint finished)
    cpdef object _send_first(self, object data, bint more)
    cpdef _send_failed(self, object exc)
    cpdef object _take_whole(self)
    cpdef object _send_whole(self, tuple item)
    cpdef object _reply_first(self)
    cpdef object _after_whole(self, long long size)
    cpdef _give_up(self)
    cpdef _first_posted(self, object first)


@cython.locals(exchange=_Exchange)
cdef _wake(object fut)


cdef _init_exchange(_Exchange self, object loop, StreamBase stream, long long spool_cap,
                    object on_done, _SpoolBudget budget, _Wakeups wakeups)


cdef class ThreadPool:
    cdef public Py_ssize_t size
    cdef public object jobs
    cdef public list threads
    cdef object _put

    cpdef submit(self, object job, Py_ssize_t busy)


cdef class WSGIHandler:
    cdef public object app
    cdef public object config
    cdef public object root_path
    cdef public Py_ssize_t size
    cdef public bint buffer_bodies
    cdef public long long response_buffer
    cdef public _SpoolBudget spool_budget
    cdef public ThreadPool pool
    cdef public Py_ssize_t busy
    cdef public Py_ssize_t pause_above
    cdef public Py_ssize_t resume_at
    cdef public ServerContext ctx
    cdef public dict base_environ
    cdef public object exchange_type
    cdef public list starts
    cdef public _Wakeups wakeups
    cdef object _slot_released

    cpdef _Exchange _new_exchange(self, object loop, StreamBase stream)
    cpdef object start_nowait(self, StreamBase stream)
    @cython.locals(raw_path=bytes, query=bytes, env=dict, keys=dict, protocols=dict, ports=dict,
                   name=bytes, value=bytes, key=str, text=str, first=str,
                   size=Py_ssize_t)
    cpdef dict environ(self, StreamBase stream)


cdef class _Call:
    cdef public WSGIHandler handler
    cdef public StreamBase stream
    cdef public _Exchange exchange
    cdef public object body
    cdef public long long body_size
    cdef public object status
    cdef public list headers
    cdef public bint headers_sent
    cdef public object content_length
    cdef public bint close
    cdef public object held
    cdef public bint queued

    cpdef run(self)
    @cython.locals(codes=dict, cache=dict, encoded=list, hit=tuple)
    cpdef _start(self, object status, object headers)
    cpdef _respond(self, dict env)
    cpdef _send_sequence(self, object items, bint hold=*)
    cpdef _send_items(self, object items, long long total)
    cpdef _send_file(self, long long fd, long long offset, long long size)
    cpdef _fail(self, object exc)


cdef _init_call(_Call self, WSGIHandler handler, StreamBase stream, _Exchange exchange,
                object body, long long body_size, bint queued)
cdef _init_input(WSGIInput self, object exchange)
