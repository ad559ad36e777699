"""``python -m graphrec_cli``: the `graphrec` command, e.g. under torchrun
(``torchrun --nproc-per-node 2 -m graphrec_cli train``)."""

from graphrec_cli.main import main

main(prog_name="graphrec")
