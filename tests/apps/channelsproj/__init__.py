"""A minimal Django Channels project served by bivio in tests/e2e/test_channels.py."""
