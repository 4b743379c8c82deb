"""`python -m bltbench ...` (as torchrun's `-m bltbench` starts each rank): the command line."""

from bltbench.cli.app import main

main()
