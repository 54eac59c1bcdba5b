#!/usr/bin/env python
"""Django's command line for the bundled example (``make run`` calls migrate and collectstatic).

Run from anywhere: this directory is what makes ``example`` importable, the same
directory bivio gets as ``--app-dir examples``.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
