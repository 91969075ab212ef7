"""`python -m senex_scale` is the `senex-scale` command."""

from senex_scale.cli import main

main()
