# Declarations for the compiled hot path (see src/bivio/compiled.py).
# Functions only, nothing to declare: compiled, check_headers() runs on every
# response without an interpreter frame (1k instructions a request).
