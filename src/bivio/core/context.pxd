# Module globals read on every request (task_ended, _run_task): typed, read as C
# variables. (From Python 3.12 Cython looks an untyped global up in the module's dict
# at every read: its cache keyed on the dict's version is gone.)
cdef dict _CURRENT_TASKS
cdef bint _EAGER, _TASK_CONTEXT
cdef object _Task
cdef str _TASK_NAME

cdef class ServerContext:
    cdef public object config
    cdef public object handler
    cdef public object loop
    cdef public set connections
    cdef public set held
    cdef public dict tasks
    cdef public bint shutting_down
    cdef public long long requests
    cdef public long long loop_stalls
    cdef public bint intake_paused
    cdef public long long received_bytes
    cdef public dict limit_counts
    cdef public double paused_seconds
    cdef public object paused_since
    cdef public object thread_pool
    cdef public list response_hooks
    cdef public object tls_server_cert
    cdef public bytes server_header
    cdef public bytes extra_headers
    cdef public object streams_per_connection
    cdef public bytes date_header
    cdef public bytes default_headers
    cdef public list default_header_pairs
    cdef public object _date_timer
    cdef public bint _reset_contextvars
    cdef public object _base_context
    cdef public object eager_stream
    cdef public object _limit_concurrency
    cdef public object _task_done_cb
    cdef public object _nowait_of
    cdef public object _start_nowait
    cdef public bint _ends_its_task

    cpdef object start_handler(self, object stream)
    cdef inline object _run_task(self, object coro, object stream, bint ends_itself)
    cpdef task_ended(self)
    cpdef bint over_capacity(self)
    cpdef limit_hit(self, str flag)
