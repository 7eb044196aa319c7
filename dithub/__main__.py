"""python -m dithub"""
import sys

from .cli import main

sys.exit(main())
