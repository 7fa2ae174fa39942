"""``python -m vwm``: the command line, for when the console script is not installed."""

from vwm.cli import main

main()
