from bltbench.cli.app import main

main()
