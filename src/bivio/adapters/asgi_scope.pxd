# Declarations for the compiled hot path (see src/bivio/compiled.py).
# Functions only, nothing to declare: compiled, connection_scope() builds each
# request's scope dict without an interpreter frame (1.6k instructions a request).
