"""``python -m replay`` = ``swf-replay``."""

from replay.cli import main

main()
