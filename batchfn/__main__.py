"""`python -m batchfn`: the same as the `batchfn` command."""

from batchfn.cli import main

main()
