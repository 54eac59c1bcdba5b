"""The apps every server is measured on: the same code for bivio and each peer."""
