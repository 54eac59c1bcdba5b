"""A minimal real Django project served by bivio in tests/e2e/test_django.py."""
